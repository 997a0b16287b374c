"""What the app's ASGI middlewares share: the ASGI callables' types and a request body read whole."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["Receive", "Scope", "Send", "read_body", "replaying"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def read_body(receive: Receive) -> tuple[bytes, MutableMapping[str, Any] | None]:
    """A request's whole body, and the message that ended the read early (the client went away) or None."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), message
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks), None


def replaying(body: bytes, receive: Receive, extra: MutableMapping[str, Any] | None = None) -> Receive:
    """A ``receive`` for the app behind: ``body`` in one message, then ``extra`` if any, then ``receive``'s own."""
    pending: list[MutableMapping[str, Any]] = [{"type": "http.request", "body": body, "more_body": False}]
    if extra is not None:
        pending.append(extra)

    async def replay() -> MutableMapping[str, Any]:
        return pending.pop(0) if pending else await receive()

    return replay
