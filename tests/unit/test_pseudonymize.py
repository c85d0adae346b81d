from __future__ import annotations

import copy
import hashlib
import hmac
import pickle

import numpy as np
import pandas as pd
import pytest

from ml.privacy.pseudonymize import Pseudonymizer

KEY = b"0123456789abcdef"


def test_pseudonym_is_stable_hmac_sha256():
    p = Pseudonymizer(KEY)
    # a fixed vector: pseudonyms must not change between releases, or serving loses every shopper's history
    assert p.pseudonym("alice") == "u_fdbf8b1cacd3d578e062d0e41104357d"
    assert p.pseudonym("alice") == "u_" + hmac.new(KEY, b"alice", hashlib.sha256).hexdigest()[:32]
    assert p.pseudonym("bob") != p.pseudonym("alice")
    assert Pseudonymizer(b"another-key-1234").pseudonym("alice") != p.pseudonym("alice")


def test_apply_replaces_the_column_in_a_new_frame():
    df = pd.DataFrame({"user_id": ["alice", None, "bob", np.nan, "alice"], "x": [1, 2, 3, 4, 5]})
    out = Pseudonymizer(KEY).apply(df)
    assert list(df["user_id"][:3]) == ["alice", None, "bob"]  # input untouched
    assert out["user_id"][0] == out["user_id"][4] == "u_fdbf8b1cacd3d578e062d0e41104357d"
    assert out["user_id"][1] is None and out["user_id"][3] is None
    assert out["user_id"][2].startswith("u_") and len(out["user_id"][2]) == 34
    assert list(out["x"]) == [1, 2, 3, 4, 5]


def test_apply_other_column_and_missing_column():
    df = pd.DataFrame({"shopper": ["alice"]})
    assert Pseudonymizer(KEY).apply(df, column="shopper")["shopper"][0].startswith("u_")
    with pytest.raises(KeyError, match="user_id"):
        Pseudonymizer(KEY).apply(df)


def test_key_does_not_leak_through_repr_or_pickle():
    p = Pseudonymizer(KEY)
    assert KEY.decode() not in repr(p) and KEY.decode() not in str(p)
    with pytest.raises(TypeError, match="secret"):
        pickle.dumps(p)
    with pytest.raises(TypeError):
        copy.deepcopy(p)


def test_empty_key_rejected():
    with pytest.raises(ValueError):
        Pseudonymizer(b"")
