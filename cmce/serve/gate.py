"""The per-client limits of :mod:`cmce.serve.fairness`, applied before Gradio sees a request.

:class:`ClientGateMiddleware` is an ASGI middleware for Gradio's FastAPI app (give it to
``launch(app_kwargs={"middleware": [...]})``). It looks at the requests that make the server
work or store something:

* ``POST /gradio_api/queue/join`` and ``POST /gradio_api/call/[v2/]{api}``: counted against the
  client's requests per minute, and refused while the client already holds
  ``jobs_per_kind`` jobs of that event's concurrency group (counted in Gradio's queue, plus
  the client's joins on their way in). A refused job never takes a queue slot;
* ``POST /gradio_api/upload``: charged to the client's upload bytes (its ``Content-Length``,
  required, and at least ``MIN_UPLOAD_CHARGE``) before a byte is stored; the
  stored files are recorded so that they are deleted after the retention;
* ``GET /gradio_api/heartbeat/{session}``: counted against the client's requests per minute, and
  noted (that session is held open by a page or ``gradio_client``, and Gradio drops it when the
  heartbeat closes: not an idle API session); ``CLOSED_STATE_DELAY_S`` after the heartbeat closed,
  Gradio's copy of the session's state is dropped (:func:`forget_closed_session`), not kept for an hour;
* ``POST /gradio_api/component_server``: counted against the client's requests per minute.

Each of the last two, like a join, makes Gradio build a state for any session hash it names, and
Gradio's store of states drops the least recently used one past ``state_session_capacity``,
without a callback: one client naming new session hashes would push everyone else's state out.
So a join first puts back a state Gradio dropped while the session is still open (``restore``:
:func:`restore_state`), and a user's gallery survives a flood of new sessions.

A refusal is HTTP 429 (503 when the whole server's upload space is full) with a JSON body
``{"detail": "too many requests from you ...; retry in N s", "error": "too_many_requests",
"retry_after_s": N}`` and a ``Retry-After`` header; the page shows ``detail`` as an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from cmce.serve.asgi import Receive, Scope, Send, read_body, replaying
from cmce.serve.fairness import ClientGate, TooManyRequests, jobs_in_queue

logger = logging.getLogger(__name__)

__all__ = ["CLOSED_STATE_DELAY_S", "ClientGateMiddleware", "KIND_NAMES", "Restore", "forget_closed_session",
           "restore_state"]


#: Seconds after a session's heartbeat closed before Gradio's copy of its state is dropped
#: (:func:`forget_closed_session`): its unload events have run by then.
CLOSED_STATE_DELAY_S = 30.0
#: How a refusal names the app's concurrency groups (others: "other").
KIND_NAMES = {"index": "indexing", "search": "search", "bundle": "bundle load"}
_API = "/gradio_api/"
#: Bytes an upload is charged at least (a file and a folder on disk), so that uploads of empty files are
#: bounded in number as well: 400 MiB a client is 6,400 of them.
MIN_UPLOAD_CHARGE = 64 * 1024
#: A refused upload up to this size is read and dropped before the answer (a client still sending gets
#: the answer instead of a broken connection); a larger one is answered at once.
DRAIN_BYTES = 8 * 1024 * 1024


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _answer(send: Send, status: int, body: dict, extra: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": data})


async def _refuse(send: Send, e: TooManyRequests) -> None:
    await _answer(send, e.status, {"detail": str(e), "error": "too_many_requests", "retry_after_s": e.retry_after_s},
                  [(b"retry-after", str(e.retry_after_s).encode())])


def forget_closed_session(app: Any, session_hash: str) -> bool:
    """Drop Gradio's state of a session whose heartbeat has closed, now rather than in an hour.

    Gradio keeps every session's ``SessionState`` (a copy of the whole page's configuration,
    about 1 MiB here, and the ``gr.State`` values) for an hour after its page or client went
    away, bounded only by ``state_session_capacity``, and the session's message queue for as
    long as 2,000 newer sessions have not pushed it out. Run on the event loop (Gradio's own
    code runs there), after the session's unload events. A session with events still pending,
    or not marked closed by Gradio, is left alone.

    Returns:
        Whether the session's state was dropped.
    """
    holder = getattr(app, "state_holder", None)
    try:
        queue = app.get_blocks()._queue
    except AttributeError:
        return False
    state = None if holder is None else holder.session_data.get(session_hash)
    if state is None or not state.is_closed or queue.pending_event_ids_session.get(session_hash):
        return False
    holder.delete_state(session_hash)  # the gr.State delete callbacks, as Gradio would call them an hour later
    holder.session_data.pop(session_hash, None)
    holder.time_last_used.pop(session_hash, None)
    queue.pending_messages_per_session.pop(session_hash, None)
    queue.pending_event_ids_session.pop(session_hash, None)
    return True


#: ``restore(app, session_hash, client)``: put back Gradio's state of an open session it dropped.
Restore = Callable[[Any, str, str], None]


def restore_state(app: Any, session_hash: str, state_id: int, value: Any) -> bool:
    """Give ``session_hash`` a Gradio state again whose ``gr.State`` (block ``state_id``) holds ``value``.

    Only when Gradio holds no state for that session (it was pushed out of the store, or never
    built): a state Gradio holds is left alone. Run on the event loop, before the join that needs it.

    Returns:
        Whether a state was put back.
    """
    holder = getattr(app, "state_holder", None)
    if holder is None or session_hash in holder.session_data:
        return False
    holder[session_hash][state_id] = value  # builds the session's state, and sets the gr.State with its TTL
    logger.info("Gradio's state of an open session was put back (it had been pushed out of Gradio's store)")
    return True


class ClientGateMiddleware:
    """ASGI middleware: per-client job, rate and upload limits in front of a Gradio app.

    Args:
        app: the ASGI app (Gradio's).
        gate: the limits.
        restore: called with (the Gradio app, session hash, client) before a join is passed on
            (see :func:`restore_state`); None: nothing restored.
    """

    def __init__(self, app: Callable, gate: ClientGate, restore: Restore | None = None) -> None:
        self.app, self.gate, self.restore = app, gate, restore
        self._joining: dict[tuple[str, str], int] = {}  # (client, concurrency id) -> joins on their way in

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _API not in scope.get("path", ""):
            return await self.app(scope, receive, send)
        route = scope["path"].split(_API, 1)[1]
        method = scope.get("method", "GET")
        heartbeat = method == "GET" and route.startswith("heartbeat/")
        if heartbeat or (method == "POST" and route.rstrip("/") == "component_server"):
            try:  # Gradio builds a state for the session these name: bounded by the request rate
                self.gate.rate.take(self.gate.client((scope.get("client") or (None,))[0], _headers(scope)))
            except TooManyRequests as e:
                return await _refuse(send, e)
        if heartbeat:
            session_hash = route.split("/", 1)[1]
            self.gate.saw_heartbeat(session_hash)
            try:
                return await self.app(scope, receive, send)
            finally:  # the page or client went away
                asyncio.get_running_loop().call_later(CLOSED_STATE_DELAY_S, forget_closed_session,
                                                      scope.get("app"), session_hash)
        if method != "POST" or not (route in ("queue/join", "upload") or route.startswith("call/")):
            return await self.app(scope, receive, send)
        headers = _headers(scope)
        client = self.gate.client((scope.get("client") or (None,))[0], headers)
        if route == "upload":  # one request per file from gradio_client: bounded by the ledger, not the rate
            return await self._upload(scope, receive, send, client, headers)
        try:
            self.gate.rate.take(client)
        except TooManyRequests as e:
            return await _refuse(send, e)
        return await self._join(scope, receive, send, client, route)

    async def _upload(self, scope: Scope, receive: Receive, send: Send, client: str, headers: dict) -> None:
        try:
            length = int(headers.get("content-length", ""))
        except ValueError:
            return await _answer(send, 411, {"detail": "an upload must say its length (Content-Length)",
                                             "error": "length_required"})
        try:
            ticket = self.gate.uploads.reserve(client, max(length, MIN_UPLOAD_CHARGE))
        except TooManyRequests as e:
            if length <= DRAIN_BYTES:  # read (and drop) a small body, so that the client gets to read the answer
                more = True
                while more:
                    message = await receive()
                    more = message["type"] == "http.request" and message.get("more_body", False)
            return await _refuse(send, e)
        status, body = 0, bytearray()

        async def capture(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status == 200 and len(body) < 1 << 20:
                body.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            paths = []
            if status == 200:
                try:
                    paths = [p for p in json.loads(bytes(body)) if isinstance(p, str)]
                except ValueError:
                    logger.warning("upload answer not understood; its files stay to Gradio's clean-up")
            if paths:
                self.gate.uploads.record(ticket, paths)
            else:
                self.gate.uploads.release(ticket)

    async def _join(self, scope: Scope, receive: Receive, send: Send, client: str, route: str) -> None:
        raw, extra = await read_body(receive)
        replay = replaying(raw, receive, extra)

        concurrency_id = self._concurrency_id(scope, route, raw)
        if concurrency_id is None:  # not an event we know: Gradio answers it
            return await self.app(scope, replay, send)
        key = (client, concurrency_id)
        queue = scope["app"].get_blocks()._queue
        held = jobs_in_queue(queue, concurrency_id, self._event_client).get(client, 0) + self._joining.get(key, 0)
        try:
            self.gate.check_jobs(held, KIND_NAMES.get(concurrency_id, "other"))
        except TooManyRequests as e:
            return await _refuse(send, e)
        session_hash = self._session_hash(raw)
        if self.restore is not None and session_hash:
            self.restore(scope.get("app"), session_hash, client)
        self._joining[key] = self._joining.get(key, 0) + 1
        try:
            await self.app(scope, replay, send)
        finally:
            self._joining[key] -= 1
            if not self._joining[key]:
                del self._joining[key]

    def _event_client(self, event: Any) -> str:
        request = getattr(event, "request", None)
        if request is None:
            return "unknown"
        return self.gate.client(request.client.host if request.client else None,
                                {k.lower(): v for k, v in request.headers.items()})

    @staticmethod
    def _session_hash(raw: bytes) -> str | None:
        """The session hash a join names (None: none, or not a JSON object)."""
        try:
            value = json.loads(raw).get("session_hash")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, str) and 0 < len(value) <= 256 else None

    @staticmethod
    def _concurrency_id(scope: Scope, route: str, raw: bytes) -> str | None:
        """The concurrency group of the event a join or call asks for (None: unknown)."""
        try:
            fns = scope["app"].get_blocks().fns
        except (KeyError, AttributeError):
            return None
        if route.startswith("call/"):
            parts = route.rstrip("/").split("/")  # call/{api} or call/v2/{api}
            name = parts[2] if len(parts) > 2 and parts[1] == "v2" else parts[1]
            fn = next((f for f in fns.values() if f.api_name == name), None)
        else:
            try:
                index = json.loads(raw).get("fn_index")
            except (ValueError, AttributeError):
                return None
            fn = fns.get(index) if isinstance(index, int) else None
        return None if fn is None else str(fn.concurrency_id)
