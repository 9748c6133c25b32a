"""The service's front door: ASGI middleware that decides about a request before a byte of its body is read.

    app = Guard(fastapi_app, serve_params, keys=KeyRing(path) or None, open_paths={"/health", ...},
                body_paths={"/predict"}, on_status=lambda route, status: ...)

In order, each refusal answered at once, with JSON, a request id and an access-log line:
1. an `Origin` not in serve.allowed_origins: 403; a CORS preflight (OPTIONS) from an allowed one: 204;
2. open paths (exactly these paths, not prefixes) take GET/HEAD with no body (405 / 400 otherwise) and no key;
3. every other path needs a key when keys are on: 401 with `WWW-Authenticate: Bearer`;
4. a key over serve.rate_per_key requests/s: 429 with `Retry-After` (with keys off there is no one to count:
   behind a proxy every client has its address, so only max_concurrency bounds them);
5. a declared body over serve.max_upload_mb: 413; only `body_paths` take a body at all;
6. more than serve.max_concurrency body requests in flight: 503 with `Retry-After`.
The body then streams to the app through a reader that stops it at max_upload_mb (BodyRefused 413) and at
serve.body_timeout_s for the whole body (BodyRefused 408): nothing is buffered here, so a request holds at most the
parser's spool (serve.spool_kb in memory per file, then disk). Every answer's status reaches `on_status`
(Prometheus), every request one JSON line on the `dfd.access` logger: id, method, path, status, key name, client,
seconds, and why a refusal was made.
"""

from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
import math
import re
import time
import uuid
from collections.abc import Callable

from ..core.params import ServeParams
from .keys import KeyRing, presented_key

ACCESS = logging.getLogger("dfd.access")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
CORS_HEADERS = "authorization, x-api-key, content-type, x-request-id"


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """Hands records to a QueueListener thread, so the event loop never waits on a log's I/O (a full stderr pipe
    blocked the whole server in the soak test); when the queue is full, records are dropped and counted."""

    def __init__(self, size: int = 10_000) -> None:
        import queue

        super().__init__(queue.Queue(size))
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        import queue

        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


def log_access_to(handler: logging.Handler) -> logging.handlers.QueueListener:
    """Send the access log to `handler` (stderr, a file) through a thread; returns the started listener."""
    queued = DroppingQueueHandler()
    ACCESS.setLevel(logging.INFO)
    ACCESS.addHandler(queued)
    listener = logging.handlers.QueueListener(queued.queue, handler)
    listener.start()
    return listener


class BodyRefused(Exception):
    """The body stream was stopped: too large (413) or too slow (408)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class TokenBuckets:
    """Per-client token buckets: `rate` requests/s, bursts of `burst`; rate 0 = no limit."""

    def __init__(self, rate: float, burst: int, max_clients: int = 10_000) -> None:
        self.rate, self.burst, self.max_clients = rate, burst, max_clients
        self.state: dict[str, tuple[float, float]] = {}

    def wait(self, client: str) -> float:
        """0 when `client` may go now (a token is taken), else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens, then = self.state.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens < 1:
            self.state[client] = (tokens, now)
            return (1 - tokens) / self.rate
        if len(self.state) >= self.max_clients and client not in self.state:
            self.state.clear()  # a flood of addresses: start over rather than grow without bound
        self.state[client] = (tokens - 1, now)
        return 0.0


class Guard:
    def __init__(self, app, s: ServeParams, keys: KeyRing | None, open_paths: set[str], body_paths: set[str],
                 on_status: Callable[[str, int], None] | None = None) -> None:
        self.app, self.s, self.keys = app, s, keys
        self.open_paths, self.body_paths = frozenset(open_paths), frozenset(body_paths)
        self.origins = set(s.allowed_origins)
        self.max_bytes = int(s.max_upload_mb * 2**20)
        self.buckets = TokenBuckets(s.rate_per_key, s.rate_burst)
        self.on_status = on_status or (lambda route, status: None)
        self.inflight = 0  # body requests being handled (the /metrics gauge)

    def route(self, path: str) -> str:
        """A bounded label for metrics: the path when it is one of ours, else `other`."""
        return path if path in self.open_paths or path in self.body_paths or path == "/model" else "other"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        origin = headers.get(b"origin", b"").decode("latin-1") or None
        log = {"id": rid, "method": scope["method"], "path": scope["path"][:200], "status": 500,
               "client": (scope.get("client") or ["?"])[0], "key": None}
        extra = [(b"x-request-id", rid.encode())]
        if origin in self.origins:
            extra += [(b"access-control-allow-origin", origin.encode()), (b"vary", b"Origin"),
                      (b"access-control-expose-headers", b"x-request-id, retry-after")]

        async def send_(message):
            if message["type"] == "http.response.start":
                log["status"] = message["status"]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        t0 = time.perf_counter()
        try:
            refusal = await self._front(scope, headers, origin, log, receive, send_)
            if refusal is not None:
                log["refused"] = refusal[1]
                await _answer(send_, *refusal)
        finally:
            log["seconds"] = round(time.perf_counter() - t0, 4)
            self.on_status(self.route(scope["path"]), log["status"])
            ACCESS.info(json.dumps(log))

    async def _front(self, scope, headers, origin, log, receive, send) -> tuple | None:
        """None when the app answered; else (status, message, extra headers) to answer with."""
        path, method = scope["path"], scope["method"]
        if origin is not None and origin not in self.origins:
            return 403, "requests from this Origin are not allowed (serve.allowed_origins)", []
        if method == "OPTIONS" and origin is not None and b"access-control-request-method" in headers:
            return 204, None, [(b"access-control-allow-methods", b"GET, POST"),
                               (b"access-control-allow-headers", CORS_HEADERS.encode()),
                               (b"access-control-max-age", b"600")]
        declared = headers.get(b"content-length", b"0")
        has_body = b"transfer-encoding" in headers or not declared.isdigit() or int(declared) > 0
        if path in self.open_paths:
            if method not in ("GET", "HEAD"):
                return 405, f"{path} answers GET only", [(b"allow", b"GET, HEAD")]
            if has_body:
                return 400, f"{path} takes no request body", []
            return await self.app(scope, _no_body(receive), send)
        if self.keys is not None:
            presented = presented_key(headers)
            log["key"] = self.keys.name(presented)
            if log["key"] is None:
                why = "invalid_token" if presented else "invalid_request"
                return 401, "a valid API key is needed: `Authorization: Bearer KEY` or `X-API-Key: KEY`", [
                    (b"www-authenticate", f'Bearer realm="dfd", error="{why}"'.encode())]
            scope.setdefault("state", {})["key_name"] = log["key"]
        wait = self.buckets.wait(log["key"]) if self.keys is not None else 0.0
        if wait > 0:
            return 429, f"over serve.rate_per_key ({self.s.rate_per_key:g} requests/s)", [
                (b"retry-after", str(math.ceil(wait)).encode())]
        if path not in self.body_paths:
            if has_body:
                return (405 if method == "POST" else 400), f"{path} takes no request body", []
            return await self.app(scope, _no_body(receive), send)
        if declared.isdigit() and int(declared) > self.max_bytes:
            return 413, f"request body larger than {self.max_bytes} bytes (serve.max_upload_mb)", []
        if self.inflight >= self.s.max_concurrency:
            return 503, f"busy: {self.inflight} requests in flight (serve.max_concurrency); retry shortly", [
                (b"retry-after", b"1")]
        self.inflight += 1
        try:
            return await self.app(scope, self._reader(receive), send)
        finally:
            self.inflight -= 1

    def _reader(self, receive):
        """receive() for the app: the body up to max_bytes, all of it within body_timeout_s."""
        deadline = time.monotonic() + self.s.body_timeout_s
        seen, done = 0, False

        async def read():
            nonlocal seen, done
            if done:
                return await receive()  # after the body: the disconnect, like any app would see it
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                raise BodyRefused(408, f"the body took longer than serve.body_timeout_s "
                                       f"({self.s.body_timeout_s:g} s) to arrive") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyRefused(413, f"request body larger than {self.max_bytes} bytes (serve.max_upload_mb)")
                done = not message.get("more_body", False)
            return message

        return read


def _no_body(receive):
    sent = False

    async def read():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await receive()

    return read


async def _answer(send, status: int, message: str | None, headers: list) -> None:
    body = b"" if message is None else json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})
