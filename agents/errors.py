"""Errors of the model side, part of the one `latentwire.errors` hierarchy.

Users catch `latentwire.errors.LatentwireError` (or the classes below); each carries the data
its message was built from as attributes.

::

    LatentwireError                     (latentwire.errors)
    ├── ConfigError                     (latentwire.errors)
    │   ├── CodecConfigError            a bad CodecConfig field (also a CodecError)
    │   ├── AgentConfigError            a bad VLMAgent or pipeline setting (names field and allowed values)
    │   ├── UnsupportedFamily           a model_type with no family adapter (lists the supported ones)
    │   ├── ImageSlotMismatch           image-placeholder slots != vectors meant for them
    │   └── MissingVisionTower          a rendered message's features asked of a model that cannot give them
    ├── CheckpointError                 a checkpoint folder that is missing, corrupt or does not fit
    │   └── CodecCheckpointError        ... of a codec (also a CodecError)
    └── CodecError                      anything the Universal Visual Codec refuses
        ├── CodecConfigError
        ├── CodecCheckpointError
        ├── SpaceMismatch               a latent from another codec space
        ├── ShapeMismatch               a tensor whose width or rank does not fit
        └── MessageTooLong              reasoning longer than the codec was trained on
"""

from __future__ import annotations

from collections.abc import Sequence

from latentwire.errors import ConfigError, LatentwireError

__all__ = [
    "AgentConfigError",
    "CheckpointError",
    "CodecCheckpointError",
    "CodecConfigError",
    "CodecError",
    "ImageSlotMismatch",
    "MessageTooLong",
    "MissingVisionTower",
    "ShapeMismatch",
    "SpaceMismatch",
    "UnsupportedFamily",
]


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
                       "map it into the shared space first (the sender's codec.encode does this) "
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


class MessageTooLong(CodecError, ValueError):
    """Raised when a sender's reasoning (its prompt's tokens and latent steps) is longer than its
    codec was trained on: refused, never truncated; names both lengths."""

    def __init__(self, family: str, got: int, maximum: int) -> None:
        super().__init__(f"the message to encode is {got} vectors long (the {family} sender's prompt tokens and "
                         f"latent steps), more than the {maximum} this {family} codec was trained on; send a "
                         f"shorter message, or train the codec on anchors as long as it (latentwire train codec "
                         f"--anchors FILE)")
        self.family = family
        self.got = got
        self.maximum = maximum


class CheckpointError(LatentwireError, ValueError):
    """Raised when a checkpoint (a codec, a tinyworld model) is missing, corrupt, or does not
    match its config. Nothing is loaded when this is raised: the checkpoint is checked in full
    first. ``what`` names the kind of checkpoint in the message.
    """

    def __init__(self, source: str, reason: str, what: str = "checkpoint") -> None:
        super().__init__(f"cannot load {what} from {source}: {reason}")
        self.source = str(source)
        self.reason = reason


class CodecCheckpointError(CheckpointError, CodecError):
    """Raised when a codec folder is missing, corrupt, or does not fit its config."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(source, reason, what="codec")


class AgentConfigError(ConfigError):
    """Raised for a bad agent or pipeline setting; names the field and the allowed values."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        super().__init__(f"{field}={value!r} is invalid; allowed: {allowed}")
        self.field = field
        self.value = value
        self.allowed = allowed


class UnsupportedFamily(ConfigError):
    """Raised by `adapter_for` when the config's ``model_type`` has no family adapter."""

    def __init__(self, model_type: str | None, supported: Sequence[str]) -> None:
        super().__init__(f"no latentwire family adapter for model_type {model_type!r}; "
                         f"supported: {', '.join(supported)}")
        self.model_type = model_type
        self.supported = tuple(supported)


class ImageSlotMismatch(ConfigError):
    """Raised when a prompt's image-placeholder slots do not match the vectors meant for them."""

    def __init__(self, slots: int, features: int, detail: str = "", *, message: str | None = None) -> None:
        super().__init__(message or f"image features and image tokens do not match: tokens: {slots}, "
                         f"features: {features}" + (f" ({detail})" if detail else ""))
        self.slots = slots
        self.features = features


class MissingVisionTower(ConfigError):
    """Raised when a rendered message's image features are asked of a model without a working
    vision tower and projector (the weakly supervised codec target needs them)."""

    def __init__(self, family: str, reason: str) -> None:
        super().__init__(f"{family}: the picture target 'rendered' needs the model's own vision tower and "
                         f"projector, but {reason}; train label-free instead (picture_weight=0)")
        self.family = family
        self.reason = reason
