"""Structured logging: one event per line with fields, JSON for journald and pipes, text on a TTY.

``log(logger, "sync.done", tenant="acme", pages=12)`` renders as
``sync.done tenant=acme pages=12`` (text) or ``{"event": "sync.done", "tenant": "acme", "pages": 12}``.
A last-line defence masks anything shaped like a Clerk secret key, in case one slips into a message.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import orjson

SECRET_RE = re.compile(r"(sk_(?:live|test)_)[A-Za-z0-9_\-]+")
"""Clerk secret keys: masked wherever they appear in a log line. No ``\b`` before the prefix: in a
JSON line a key after a newline follows the escape ``\n``, and ``%20`` or ``_`` may precede one too."""


def redact(text: str) -> str:
    """Mask Clerk secret keys in free text."""
    return SECRET_RE.sub(lambda m: m.group(1) + "…", text)


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {}) or {}
        message = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR and logging.getLogger().level <= logging.DEBUG:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        if self.as_json:
            doc: dict[str, Any] = {
                "ts": round(record.created, 3),
                "level": record.levelname.lower(),
                "event": message,
            }
            doc.update(fields)
            return redact(orjson.dumps(doc, default=str).decode())
        parts = [
            time.strftime("%H:%M:%S", time.localtime(record.created)),
            f"{record.levelname.lower():7}",
            message,
        ]
        parts += [f"{k}={_text_value(v)}" for k, v in fields.items()]
        return redact(" ".join(parts))


def _text_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    s = str(v)
    return f'"{s}"' if (" " in s or not s) else s


def setup_logging(fmt: str = "auto", level: str = "info") -> None:
    """Configure the root logger once: ``auto`` = text on a TTY, JSON lines otherwise."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(as_json))
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_clerk_sync", False):
            root.removeHandler(h)
    handler._clerk_sync = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # Their INFO lines repeat ours or reveal request URLs; keep them at WARNING.
    for noisy in ("httpx", "httpcore", "apscheduler", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with fields."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"fields": fields})
