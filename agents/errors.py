"""Errors of the model side, part of the one `latentwire.errors` hierarchy.

Users catch `latentwire.errors.LatentwireError` (or the classes below); each carries the data
its message was built from as attributes.

::

    LatentwireError                     (latentwire.errors)
    ├── ConfigError                     (latentwire.errors)
    │   └── CodecConfigError            a bad CodecConfig field (also a CodecError)
    └── CodecError                      anything the Universal Visual Codec refuses
        ├── CodecConfigError
        ├── SpaceMismatch               a latent from another codec space
        ├── ShapeMismatch               a tensor whose width or rank does not fit
        └── CheckpointError             a codec folder that is missing, corrupt or does not fit
"""

from __future__ import annotations

from latentwire.errors import ConfigError, LatentwireError

__all__ = ["CheckpointError", "CodecConfigError", "CodecError", "ShapeMismatch", "SpaceMismatch"]


class CodecError(LatentwireError):
    """Base class of the errors raised by the Universal Visual Codec."""


class CodecConfigError(CodecError, ConfigError):
    """Raised for a `CodecConfig` field with a bad value; names the field and what is allowed."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        super().__init__(f"CodecConfig.{field}={value!r} is invalid: {allowed}")
        self.field = field
        self.value = value
        self.allowed = allowed


class SpaceMismatch(CodecError, ValueError):
    """Raised when a latent lives in a codec space this codec cannot decode; names both spaces."""

    def __init__(self, got: str | None, expected: tuple[str, ...], family: str | None = None,
                 *, encoding: bool = False) -> None:
        allowed = " or ".join(repr(s) for s in expected)
        if encoding:
            message = f"cannot encode into codec space {got!r}: this codec writes only {allowed}"
        else:
            sender = f" (sent by family {family!r})" if family else ""
            message = (f"latent is in codec space {got!r}{sender}, but this codec decodes only {allowed}; "
                       "map it into the hub space first (the sender's codec.encode does this) "
                       "instead of decoding it as-is")
        super().__init__(message)
        self.got = got
        self.expected = expected
        self.family = family


class ShapeMismatch(CodecError, ValueError):
    """Raised when a tensor's shape does not fit the codec; names both shapes."""

    def __init__(self, what: str, got: tuple[int, ...], expected: str) -> None:
        super().__init__(f"{what} has shape {tuple(got)}, but the codec expects {expected}")
        self.what = what
        self.got = tuple(got)
        self.expected = expected


class CheckpointError(CodecError):
    """Raised when a codec checkpoint is missing, corrupt, or does not match its config.

    Nothing is loaded when this is raised: the checkpoint is checked in full first.
    """

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"cannot load codec from {source}: {reason}")
        self.source = source
        self.reason = reason
