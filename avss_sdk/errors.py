"""The one base class under every error the SDK raises on purpose.

``except avss_sdk.AvssError`` catches them all; each subclass also keeps the builtin base
it always had (``ValueError`` for bad input, ``RuntimeError`` for a missing facility), so
existing ``except ValueError`` code keeps working.
"""


class AvssError(Exception):
    """Something the SDK detected and explains: bad input, a bad file, a missing backend."""


class InputError(AvssError, ValueError):
    """An argument the SDK cannot use: a frame or audio of the wrong type, shape or range, an unknown option."""


class MissingFileError(AvssError, FileNotFoundError):
    """A file the caller named (a clip, an audio track) does not exist."""


class ClosedError(AvssError, RuntimeError):
    """An object used after its ``close()``."""
