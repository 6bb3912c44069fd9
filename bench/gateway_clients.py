"""The calls each row makes: the same jobs over HTTP to the gateway and through its Python API.

The HTTP rows send through a :class:`Transport` (``http.client`` by default, ``httpx`` on
request); the in-process rows (the baselines of the ratios) call ``gateway.enqueue`` and
``gateway.enqueue_many`` on one connection per client thread. Both build their jobs with the
same ``_job``, so only the path into the table differs between a row and its baseline.
"""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import httpx
from sqlalchemy.engine import Engine

import gateway
from bench.closed_loop import BenchError, Call, Client
from bench.gateway_process import RunningGateway

JOB_TYPE = "bench.noop"


def _job(job_id: str, n: int) -> dict[str, Any]:
    return {"type": JOB_TYPE, "payload": {"to": f"user{n}@example.com", "n": n},
            "job_id": job_id, "key": f"k{n % 64}"}  # fmt: skip


def _batch_ids(prefix: str, n: int, size: int) -> list[str]:
    return [f"{prefix}-{n}-{i}" for i in range(size)]


class Transport(Protocol):
    """One keep-alive HTTP/1.1 connection to the gateway, with the bench's bearer token."""

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]: ...

    def close(self) -> None: ...


class StdlibTransport:
    """``http.client``: about a quarter of httpx's CPU per request here, so on a 2-core machine
    the load generator leaves more of the cores to the gateway it measures."""

    def __init__(self, url: str, token: str) -> None:
        address = httpx.URL(url)
        self._conn = http.client.HTTPConnection(address.host, address.port, timeout=60)
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        self._conn.request(method, path, body, self._headers)
        response = self._conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self._conn.close()


class HttpxTransport:
    """``httpx.Client``: the client most callers of the gateway would use."""

    def __init__(self, url: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._client = httpx.Client(base_url=url, headers=headers, timeout=60)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        response = self._client.request(method, path, content=body)
        return response.status_code, response.content

    def close(self) -> None:
        self._client.close()


TRANSPORTS: dict[str, Callable[[str, str], Transport]] = {
    "stdlib": StdlibTransport,
    "httpx": HttpxTransport,
}
Send = Callable[[Transport, int], list[str]]


def http_client(gw: RunningGateway, transport_name: str, send: Send) -> Client:
    @contextlib.contextmanager
    def connected() -> Iterator[Call]:
        transport = TRANSPORTS[transport_name](gw.url, gw.token)
        try:
            yield lambda n: send(transport, n)
        finally:
            transport.close()

    return connected


def _answer(transport: Transport, method: str, path: str, body: Any = None,
            expected: int = 201) -> Any:  # fmt: skip
    status, content = transport.request(
        method, path, None if body is None else json.dumps(body).encode()
    )
    if status != expected:
        raise BenchError(f"{method} {path}: {status} {content[:300]!r}")
    return json.loads(content)


def get_healthz(transport: Transport, n: int) -> list[str]:
    _answer(transport, "GET", "/healthz", expected=200)
    return []


def post_job(prefix: str) -> Send:
    def send(transport: Transport, n: int) -> list[str]:
        job_id = f"{prefix}-{n}"
        answered = _answer(transport, "POST", "/v1/jobs", _job(job_id, n))["job_id"]
        if answered != job_id:
            raise BenchError(f"sent {job_id!r}, the gateway answered {answered!r}")
        return [job_id]

    return send


def post_batch(prefix: str, size: int) -> Send:
    def send(transport: Transport, n: int) -> list[str]:
        job_ids = _batch_ids(prefix, n, size)
        body = {"jobs": [_job(job_id, n * size + i) for i, job_id in enumerate(job_ids)]}
        items = _answer(transport, "POST", "/v1/jobs:batch", body)["jobs"]
        if [(i["job_id"], i["created"]) for i in items] != [(j, True) for j in job_ids]:
            raise BenchError(f"batch {n}: the gateway answered other jobs than were sent")
        return job_ids

    return send


# The baseline: the same jobs through the Python API, one connection per client thread.


def enqueue_one(engine: Engine, prefix: str) -> Client:
    def call(n: int) -> list[str]:
        job = _job(f"{prefix}-{n}", n)
        with engine.begin() as conn:
            return [gateway.enqueue(conn, job["type"], job["payload"], job_id=job["job_id"],
                                    key=job["key"])]  # fmt: skip

    return lambda: contextlib.nullcontext(call)


def enqueue_batch(engine: Engine, prefix: str, size: int) -> Client:
    def call(n: int) -> list[str]:
        job_ids = _batch_ids(prefix, n, size)
        specs = [gateway.JobSpec(JOB_TYPE, job["payload"], job_id=job["job_id"], key=job["key"])
                 for job in (_job(j, n * size + i) for i, j in enumerate(job_ids))]  # fmt: skip
        with engine.begin() as conn:
            return gateway.enqueue_many(conn, specs)

    return lambda: contextlib.nullcontext(call)
