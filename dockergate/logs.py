"""Logging for operators: plain lines by default, one JSON object per line on request."""

from __future__ import annotations

import json
import logging
import sys
import time


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


def setup_logging(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Alembic narrates every schema check at INFO; operators need only its problems.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))


def printable(text: str) -> str:
    """``text`` with control and format characters shown escaped (``\\n``, ``\\x1b``,
    ``\\u202e``): cells hold what users sent (paths, names, refusals quoting them), and
    a newline or a terminal escape in one would forge rows or rewrite the screen."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def cut(text: str, limit: int) -> str:
    """``text`` at most ``limit`` characters, an ellipsis marking a cut (a log line
    holds what a client sent, which may be a whole message head long)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
