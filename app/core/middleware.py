"""ASGI middleware of the API's edge: a request body limit, security headers, and one answer
for any unexpected error.

Pure ASGI (not ``BaseHTTPMiddleware``): no extra task or copy per request, and a body can be
refused while it streams in, before the application reads it.
"""

from __future__ import annotations

import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

#: Headers added to every response: no MIME sniffing of JSON into HTML, no framing, no referrer.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _content_length(scope: Scope) -> int | None:
    """The request's declared body length; None without one (the server rejects a bad one)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` once, then defers to the real one (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _json_error(
    status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[Message, Message]:
    body = json.dumps({"detail": detail}).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *(headers or []),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class EdgeMiddleware:
    """The outermost layer of the app, for every HTTP request.

    * Bodies over ``max_body_bytes`` get 413 (from ``Content-Length`` before anything is
      read, or as soon as a chunked body passes it); the application never sees them.
    * Every response carries :data:`SECURITY_HEADERS`.
    * An exception no handler mapped becomes a plain 500 JSON answer naming no internals;
      the traceback goes to the log once, and the connection stays usable.

    Args:
        app: the application.
        default_max_body_bytes: the body limit, bytes, until the lifespan has put the settings
            (``APP_MAX_BODY_BYTES``) in ``app.state``.
    """

    def __init__(self, app: ASGIApp, *, default_max_body_bytes: int) -> None:
        self.app = app
        self.default_max_body_bytes = default_max_body_bytes

    def _limit(self, scope: Scope) -> int:
        settings = getattr(scope["app"].state, "settings", None) if "app" in scope else None
        limit: int = getattr(settings, "max_body_bytes", self.default_max_body_bytes)
        return limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        too_large = f"the request body exceeds {limit} bytes"
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._send_error(send, 413, too_large)
            return
        if declared is None and scope.get("method") in _BODY_METHODS:
            # a chunked body: read it here, up to the limit, and hand the app a copy (the
            # framework turns errors raised while it reads a body into a 400)
            chunks: list[bytes] = []
            size = 0
            more = True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    await self._send_error(send, 413, too_large)
                    return
                chunks.append(chunk)
                more = message.get("more_body", False)
            receive = _replay(b"".join(chunks), receive)
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await self._send_error(send, 500, "internal server error")

    @staticmethod
    async def _send_error(send: Send, status: int, detail: str) -> None:
        start, body = _json_error(status, detail, list(SECURITY_HEADERS))
        await send(start)
        await send(body)
