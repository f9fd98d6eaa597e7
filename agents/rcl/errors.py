"""Errors of RCL, part of the one `latentwire.errors` hierarchy.

::

    LatentwireError
    └── RCLError                 anything RCL refuses
        ├── PlaybookError        a playbook edit or file that is not valid (names the reason)
        ├── RCLConfigError       a bad training config (also a ConfigError; names the field)
        ├── EnvironmentDataError a task file that does not parse (names file, line and field)
        └── BackendError         an LLM backend that failed after its retries (names backend and cause)
"""

from __future__ import annotations

from latentwire.errors import ConfigError, LatentwireError


class RCLError(LatentwireError):
    """Base class of RCL's errors."""


class PlaybookError(RCLError, ValueError):
    """Raised for a playbook edit or file that is not valid; the message is the reason."""


class RCLConfigError(RCLError, ConfigError):
    """Raised for a training config that does not validate; names the field."""


class EnvironmentDataError(RCLError, ValueError):
    """Raised for a task file that does not parse; names the file and what is wrong."""


class BackendError(RCLError):
    """Raised when an LLM backend fails for good (after its retries)."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"{backend}: {reason}")
        self.backend = backend
        self.reason = reason
