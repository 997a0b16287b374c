"""Server folders never shown to a client: an opaque alias in every answer, the folder again on the way in.

Gradio sends a file it serves (the annotated query photo, a gallery download, an upload's
answer, the examples' photos in the page's configuration) as ``FileData``:
``{"path": "/tmp/gradio/.../photo.png", "url": ".../gradio_api/file=/tmp/..."}``, the server's
absolute path twice. :class:`PathAliasMiddleware`, an ASGI middleware outside Gradio's app
(``launch(app_kwargs={"middleware": [...]})``, listed first), replaces each folder it is given
(the process's Gradio cache, ``GRADIO_TEMP_DIR``: :func:`cmce.serve.workdirs.own_gradio_cache`;
the app's own folder, which holds the examples) with its alias, such as ``cmce-files-1a2b3c4d``,
in what goes out, and the alias with the folder in what comes in, before Gradio sees it:

* out: the bodies of JSON, event-stream, HTML and plain-text answers (a whole body is rewritten and
  its ``Content-Length`` fixed; a stream without a length is rewritten chunk by chunk, a chunk's
  tail that could begin a folder's path held back until the next chunk). Files themselves (the
  ``file=`` route, unless it refuses), ``HEAD`` answers and compressed bodies pass untouched;
* in: the request's path and query (``/gradio_api/file=cmce-files-1a2b3c4d/...`` is served as the
  real file, after Gradio's own checks), and request bodies other than uploads (a ``FileData``
  sent back as an input by the page or a raw client), with ``Content-Length`` fixed.

So a FileData reads ``{"path": "cmce-files-1a2b3c4d/<hash>/photo.png", "url":
".../gradio_api/file=cmce-files-1a2b3c4d/<hash>/photo.png"}``: the page shows and downloads it by its
URL, ``gradio_client`` downloads it by its path (``download_files``), and a raw client may send it
back as an input. Aliases are random per process, so a user's own text holds one only if copied
from an answer.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import quote

from cmce.serve.asgi import Receive, Scope, Send, read_body, replaying

__all__ = ["PathAliasMiddleware", "new_alias"]


#: Answers whose bodies are rewritten (by the start of their content type).
TEXT_TYPES = (b"application/json", b"text/event-stream", b"text/html", b"text/plain")
#: Requests whose bodies are rewritten: anything but file uploads.
_UPLOAD_TYPES = (b"multipart/", b"application/octet-stream")
#: Routes that serve a file's bytes: never rewritten.
_FILE_ROUTES = ("/file=", "/file/")


def new_alias(kind: str = "files") -> str:
    """A fresh alias, e.g. ``cmce-files-1a2b3c4d`` (letters, digits and dashes: the same in JSON and URLs)."""
    return f"cmce-{kind}-{secrets.token_hex(4)}"


class _Rewriter:
    """Replaces ``old`` with ``new`` in a stream of byte chunks; a chunk's tail that could begin ``old`` waits."""

    def __init__(self, old: bytes, new: bytes) -> None:
        self.old, self.new, self.held = old, new, b""

    def feed(self, chunk: bytes, last: bool) -> bytes:
        data = (self.held + chunk).replace(self.old, self.new)
        self.held = b""
        if not last:
            for n in range(min(len(self.old) - 1, len(data)), 0, -1):
                if self.old.startswith(data[-n:]):
                    data, self.held = data[:-n], data[-n:]
                    break
        return data


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    return next((v for k, v in headers if k.lower() == name), None)


def _with_length(headers: list[tuple[bytes, bytes]], length: int | None) -> list[tuple[bytes, bytes]]:
    kept = [(k, v) for k, v in headers if k.lower() != b"content-length"]
    return kept if length is None else [*kept, (b"content-length", str(length).encode())]


class PathAliasMiddleware:
    """ASGI middleware: ``root`` (Gradio's cache folder) never leaves the server; ``alias`` stands for it."""

    def __init__(self, app: Callable, aliases: Mapping[str, str]) -> None:
        """``aliases``: folder -> its alias (letters, digits, ``-`` and ``_``), e.g. ``{GRADIO_TEMP_DIR: new_alias()}``."""
        self.app = app
        self.incoming: list[tuple[str, str]] = []  # (alias, folder as Gradio spells it)
        outgoing: dict[str, str] = {}  # every spelling of a folder (absolute, symlinks resolved) -> alias
        for root, alias in aliases.items():
            if not alias or alias != quote(alias, safe="") or not alias.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"an alias must be letters, digits, '-' or '_' only, got {alias!r}")
            absolute = os.path.abspath(root).rstrip("/")
            if absolute in ("", "/"):
                raise ValueError(f"cannot alias the folder {root!r}")
            self.incoming.append((alias, absolute))
            outgoing.update({absolute: alias, os.path.realpath(root).rstrip("/"): alias})
        self.outgoing = sorted(outgoing.items(), key=lambda item: -len(item[0]))  # a folder inside another first

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope = self._incoming_path(scope)
        if scope.get("method") in ("POST", "PUT", "PATCH"):
            content_type = (_header(scope.get("headers", []), b"content-type") or b"").lower()
            if not content_type.startswith(_UPLOAD_TYPES):
                scope, receive = await self._incoming_body(scope, receive)
        if scope.get("method") == "HEAD":
            return await self.app(scope, receive, send)
        file_route = any(r in scope.get("path", "") for r in _FILE_ROUTES)
        await self.app(scope, receive, self._outgoing(send, errors_only=file_route))

    def _incoming_path(self, scope: Scope) -> Scope:
        found = [(a, r) for a, r in self.incoming if a in scope.get("path", "") or a.encode() in scope.get("query_string", b"")]
        if not found:
            return scope
        scope = dict(scope)
        for alias, root in found:
            scope["path"] = scope["path"].replace(alias, root)
            if scope.get("raw_path"):
                scope["raw_path"] = scope["raw_path"].replace(alias.encode(), quote(root).encode())
            scope["query_string"] = scope.get("query_string", b"").replace(alias.encode(), quote(root, safe="").encode())
        return scope

    async def _incoming_body(self, scope: Scope, receive: Receive) -> tuple[Scope, Receive]:
        raw, extra = await read_body(receive)
        found = [(a.encode(), r.encode()) for a, r in self.incoming if a.encode() in raw]
        for alias, root in found:
            raw = raw.replace(alias, root)
        if found:
            scope = dict(scope)
            scope["headers"] = _with_length(list(scope.get("headers", [])), len(raw))
        return scope, replaying(raw, receive, extra)

    def _outgoing(self, send: Send, errors_only: bool = False) -> Send:
        """``send``, rewriting text bodies (``errors_only``: only those of an error, not a served file's bytes)."""
        start: MutableMapping[str, Any] | None = None
        mode = "pass"  # "pass", "whole" (buffered, length fixed) or "stream" (chunk by chunk)
        buffered = bytearray()
        rewriters = [_Rewriter(r.encode(), a.encode()) for r, a in self.outgoing]

        def rewrite(chunk: bytes, last: bool) -> bytes:
            for rewriter in rewriters:
                chunk = rewriter.feed(chunk, last)
            return chunk

        async def wrapped(message: MutableMapping[str, Any]) -> None:
            nonlocal start, mode
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                content_type = (_header(headers, b"content-type") or b"").lower()
                rewritable = content_type.startswith(TEXT_TYPES) and _header(headers, b"content-encoding") is None
                if rewritable and (message["status"] >= 400 or not errors_only):
                    if _header(headers, b"content-length") is not None:
                        mode, start = "whole", message
                        return
                    mode = "stream"
                return await send(message)
            if message["type"] != "http.response.body" or mode == "pass":
                return await send(message)
            more = message.get("more_body", False)
            if mode == "stream":
                return await send({**message, "body": rewrite(message.get("body", b""), not more)})
            buffered.extend(message.get("body", b""))
            if more:
                return None
            body = bytes(buffered)
            for root, alias in self.outgoing:
                body = body.replace(root.encode(), alias.encode())
            await send({**start, "headers": _with_length(list(start.get("headers", [])), len(body))})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        return wrapped
