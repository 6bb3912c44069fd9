"""Request bodies are read here, bounded, before anything parses them.

Too many bytes -> 413 (as soon as the Content-Length says so, or the stream passes the limit);
a JSON document nested deeper than the limit -> 422, found by a scan of the raw bytes, so the
JSON parser never recurses deeply (Python's would raise RecursionError near 1,000 levels).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import accumulate

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from gateway.problems import ApiProblem, invalid, problem_response

# A JSON string, escapes included; what is left between strings is structure and scalars.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")
_DEPTH_STEP = {b"[": 1, b"{": 1, b"]": -1, b"}": -1}


def json_depth(document: bytes) -> int:
    """How deeply arrays and objects nest in ``document`` (0 for a scalar); brackets in strings
    do not count. Linear in the size, and never recursive."""
    brackets = _BRACKETS.findall(_JSON_STRING.sub(b"", document))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


class BodyLimitMiddleware:
    """Reads each request body whole, up to ``max_bytes``, then hands it on unchanged."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        max_depth: int,
        count_rejected: Callable[[str], None],
    ) -> None:
        self.app = app
        self._max_bytes = max_bytes
        self._max_depth = max_depth
        self._count_rejected = count_rejected

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        body = await self._read(headers, receive)
        refusal = self._refusal(headers, body)
        if refusal is not None:
            if refusal.reason is not None:
                self._count_rejected(refusal.reason)
            await problem_response(refusal)(scope, receive, send)
            return
        assert body is not None
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, headers: Headers, receive: Receive) -> bytes | None:
        """The whole body, or None when it is (or says it will be) over the limit."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away; the app will notice on its next receive
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _refusal(self, headers: Headers, body: bytes | None) -> ApiProblem | None:
        if body is None:
            return ApiProblem(
                413, "too-large", "Request body too large",
                f"the body is larger than the limit of {self._max_bytes} bytes",
                reason="too_large",
            )  # fmt: skip
        is_json = "json" in headers.get("content-type", "").lower()
        if body and is_json and json_depth(body) > self._max_depth:
            return invalid([("body", f"JSON nests deeper than {self._max_depth} levels")])
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
