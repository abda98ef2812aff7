"""Structured JSON logs. They carry request ids and methods, never personal data, tokens or PINs.

Log calls pass facts as `extra={...}`; keys that could carry personal data are dropped here as a
last line of defence, and messages are fixed strings chosen by the code, never request content.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone

import orjson

from server import context

# Attribute names that must never reach a log line, whatever a caller passes in `extra`.
FORBIDDEN_KEYS = frozenset(
    {
        "name", "name_kana", "address", "birth_date", "sex", "token", "access_token", "refresh_token",
        "authorization", "pin", "password", "my_number", "individual_number", "signature", "phone", "email",
    }
)
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage() if not record.args else record.msg,
            "request_id": context.request_id(),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key in FORBIDDEN_KEYS or key.startswith("_"):
                continue
            entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info and record.exc_info[0] is not None:
            # The type and where it happened; the exception's message may echo request content.
            entry["error"] = record.exc_info[0].__name__
            tb = record.exc_info[2]
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            if tb is not None:
                entry["at"] = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        return orjson.dumps(entry).decode()


def setup(level: str = "INFO", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
