"""The server's log lines: plain text (the default) or JSON, one object per line.

`--log-format json` writes each record as one JSON object: `time` (UTC, ISO 8601 with
milliseconds), `level`, `logger`, `message`, `exception` (the traceback, when there is one)
and, for a record logged while a traced rpc runs (`server.tracing`), its `trace_id` and
`span_id` in the hex form trace UIs search by.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from ganserve.server import tracing

LOG_FORMATS = ("plain", "json")
PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record (module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        call = tracing.current()
        if call is not None:
            entry["trace_id"], entry["span_id"] = call.ids()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: str, fmt: str = "plain") -> None:
    """Log at `level` to stderr, as `fmt` ("plain" or "json") lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(PLAIN))
    logging.basicConfig(level=level, handlers=[handler], force=True)
