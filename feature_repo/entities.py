"""Feast entities: the shopper (a pseudonym, never a raw id) and the catalogue item."""

from feast import Entity, ValueType

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="A shopper, keyed by the HMAC pseudonym ingestion gives them",
)
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING, description="A catalogue item")
