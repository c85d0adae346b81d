"""The configuration's error, below every module that raises it (the configuration and the store URL parsers)."""


class ConfigError(ValueError):
    """A setting or a run parameter is invalid; the message says which and what to do."""
