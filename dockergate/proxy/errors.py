"""Docker-style error responses: ``{"message": "dockergate: ..."}`` so the CLI prints them."""

from __future__ import annotations

import json
from http import HTTPStatus

PREFIX = "dockergate: "


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_response(
    status: int, message: str, *, close: bool, head_only: bool = False, raw: bool = False
) -> bytes:
    """A complete HTTP/1.1 response carrying the refusal or error message."""
    if not raw and not message.startswith(PREFIX):
        message = PREFIX + message
    body = json.dumps({"message": message}).encode() + b"\n"
    lines = [
        f"HTTP/1.1 {status} {reason(status)}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return head if head_only else head + body
