"""The daemon's log output: human-readable lines, or one JSON object per line (``--log-format json``).

A JSON line has ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, any ``extra=``
fields the call passed, ``exc`` for a traceback, and ``trace_id``/``span_id`` when an
OpenTelemetry span is active, so log lines join their trace in a log store.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from latentwire.errors import ConfigError

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else came from ``extra=`` and is logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _trace_ids() -> dict[str, str]:
    try:
        from opentelemetry import trace
    except ImportError:
        return {}
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (see the module docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        entry.update(_trace_ids())
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(fmt: str = "text", level: str | None = None) -> None:
    """Send the process's logs to stderr in ``fmt`` at ``level`` (None: keep the root logger's
    level); replaces earlier handlers."""
    if fmt not in FORMATS:
        raise ConfigError(f"--log-format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if level is None:
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    if level.lower() not in LEVELS:
        raise ConfigError(f"--log-level must be one of {', '.join(LEVELS)}, got {level!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
