"""Exceptions that carry a message meant for the user, not a traceback."""


class SaeprobeError(Exception):
    """Base class: the message says what was wrong and where (file, column, row or key)."""


class ConfigError(SaeprobeError):
    """The configuration is invalid (unknown key, wrong type, inconsistent settings)."""


class DataError(SaeprobeError):
    """An input dataset is unusable (missing column, bad labels, empty, ...)."""
