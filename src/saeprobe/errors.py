"""Exceptions that carry a message meant for the user, not a traceback.

Every error a user can cause (a config value, a data file, a model or SAE named in the config,
a damaged cached file) is a :class:`SaeprobeError` with a one-line message naming what was
wrong and where; :func:`saeprobe.io.setup_logging` makes a job print such an error as that line
alone. Where a message quotes a library's exception, :func:`one_line` keeps it to one line.
"""


class SaeprobeError(Exception):
    """Base class: the message says what was wrong and where (file, column, row or key)."""


class ConfigError(SaeprobeError):
    """The configuration is invalid (unknown key, wrong type, inconsistent settings)."""


class ModelLoadError(ConfigError):
    """A model, tokenizer or processor named in the config cannot be loaded: no such folder,
    package or hub repository (or not in the offline cache), missing or unreadable files, or a
    checkpoint of the wrong kind (e.g. an encoder given as a causal-LM scorer). The message
    names the ``models.<name>`` key and the source."""


class DataError(SaeprobeError):
    """An input dataset is unusable (missing column, bad labels, empty, ...)."""


class CacheError(SaeprobeError):
    """A file the workflow wrote (or a user-supplied SAE file) cannot be decoded: truncated,
    a checksum mismatch, or not the format it should be. The message names the file (and the
    Zarr chunk) and the command that rebuilds it."""


class StoreRangeError(ConfigError, OverflowError):
    """Activations exceed the range of the configured ``store_dtype`` (float16: 65504); the
    message names the layer and documents. Also an :class:`OverflowError`."""


class NonFiniteError(SaeprobeError, FloatingPointError):
    """A model produced NaN or infinite activations (broken weights, or a compute ``dtype`` too
    narrow for it); the message names the layer and documents. Also raised for an SAE whose weights
    hold NaN or infinite entries (naming its folder and tensors). Also a :class:`FloatingPointError`."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``"<type>: <first line of the message>"`` of a library exception, at most ``limit`` characters
    of message: what a one-line :class:`SaeprobeError` quotes of its cause."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__
