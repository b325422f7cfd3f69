"""Exceptions that carry a message meant for the user, not a traceback."""


class SaeprobeError(Exception):
    """Base class: the message says what was wrong and where (file, column, row or key)."""


class ConfigError(SaeprobeError):
    """The configuration is invalid (unknown key, wrong type, inconsistent settings)."""


class DataError(SaeprobeError):
    """An input dataset is unusable (missing column, bad labels, empty, ...)."""


class CacheError(SaeprobeError):
    """A file the workflow wrote (or a user-supplied SAE file) cannot be decoded: truncated,
    a checksum mismatch, or not the format it should be. The message names the file (and the
    Zarr chunk) and the command that rebuilds it."""
