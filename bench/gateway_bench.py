"""HTTP gateway submissions beside the in-process enqueue API, in one run on the same server.

    .venv/bin/python bench/gateway_bench.py [--seconds 5 | --requests N] [--clients 8]
                                            [--batch-size 100] [--runs 3] [--http-client stdlib]

Starts an embedded PostgreSQL (stock, durable settings), migrates it, and serves ``outbox gateway``
as operators run it (a subprocess, one uvicorn worker, a bearer token, rate limit off) on a free
loopback port. Then, per run and in this order, with ``--clients`` concurrent clients each:

- ``GET /healthz``: no database; the most requests/s this gateway process answers at all;
- in-process ``gateway.enqueue``: one job per transaction from ``--clients`` threads, each on its
  own connection (the baseline of the single rows);
- ``POST /v1/jobs``: one job per request (the route also reads the job back in its transaction);
- in-process ``gateway.enqueue_many``: ``--batch-size`` jobs per transaction (batch baseline);
- ``POST /v1/jobs:batch``: ``--batch-size`` jobs per request.

The load generator is ``--clients`` threads, each on its own keep-alive connection, sending its
next request as soon as the previous one is answered (closed loop). It shares the cores with the
gateway and PostgreSQL, so it uses the stdlib's ``http.client``: measured here, httpx's sync
client spent about 4x its CPU per request, and httpx's async client about 10x, enough to saturate
a core before the gateway did (``--http-client httpx`` measures with ``httpx.Client``). The
``CPU bench/gw`` column shows the cores the bench process (load generator, or the in-process rows
themselves) and the gateway process used during the row; PostgreSQL's share is not counted.

Each row runs ``--seconds`` or ``--requests`` requests; rows are interleaved across ``--runs``
after one unrecorded warm-up run, and the table shows medians, with each job row's jobs/s as a
ratio to its in-process baseline of the same run. The table is truncated at the start of each
run. Every job carries a ``job_id`` of its row and run; after each row the database must hold
exactly the jobs the responses acknowledged, once each, or the bench stops (exit 1).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import httpx
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import Engine

import gateway
from gateway.auth import hash_token, new_token
from outbox import migrations_runner
from outbox.database import create_engine
from outbox.embedded_servers import embedded_postgres, free_port, wait_for_port
from outbox.schema import jobs

JOB_TYPE = "bench.noop"


class BenchError(Exception):
    """A response or the database disagreed with what the bench sent: the figures mean nothing."""


@dataclass(frozen=True)
class Load:
    """How hard each row pushes: ``requests`` per row if set, else for ``seconds``."""

    clients: int = 8
    seconds: float = 5.0
    requests: int | None = None
    batch_size: int = 100


@dataclass(frozen=True)
class Sample:
    """One row's figures in one run, and the ``job_id`` of every job acknowledged."""

    requests: int
    jobs: int
    seconds: float
    p50_ms: float
    p99_ms: float
    job_ids: list[str] = field(repr=False)
    bench_cores: float = 0.0
    """CPU this process used meanwhile, in cores: the load generator, or the in-process rows."""
    gateway_cores: float = 0.0

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def jobs_per_second(self) -> float:
        return self.jobs / self.seconds


class Budget:
    """Hands out request numbers until ``requests`` are given or the deadline passes."""

    def __init__(self, load: Load) -> None:
        self._limit = load.requests
        self._deadline = time.monotonic() + load.seconds if load.requests is None else None
        self._next = 0
        self._lock = threading.Lock()

    def take(self) -> int | None:
        with self._lock:
            if self._limit is not None and self._next >= self._limit:
                return None
            if self._deadline is not None and time.monotonic() >= self._deadline:
                return None
            self._next += 1
            return self._next - 1

    def stop(self) -> None:
        with self._lock:
            self._limit = 0


def _percentile_ms(latencies: Sequence[float], q: int) -> float:
    if len(latencies) < 2:
        return latencies[0] * 1000
    return statistics.quantiles(latencies, n=100, method="inclusive")[q - 1] * 1000


Lists = tuple[list[float], list[str]]
"""One client's latencies (seconds) and the ``job_id`` of each job acknowledged to it."""


def _sample(elapsed: float, per_client: Sequence[Lists], jobs_per: int) -> Sample:
    latencies = [t for lats, _ in per_client for t in lats]
    job_ids = [j for _, ids in per_client for j in ids]
    if not latencies:
        raise BenchError("no request was made; raise --seconds or --requests")
    p50, p99 = _percentile_ms(latencies, 50), _percentile_ms(latencies, 99)
    return Sample(len(latencies), len(latencies) * jobs_per, elapsed, p50, p99, job_ids)


def _job(job_id: str, n: int) -> dict[str, Any]:
    return {"type": JOB_TYPE, "payload": {"to": f"user{n}@example.com", "n": n},
            "job_id": job_id, "key": f"k{n % 64}"}  # fmt: skip


def _batch_ids(prefix: str, n: int, size: int) -> list[str]:
    return [f"{prefix}-{n}-{i}" for i in range(size)]


# The load generator: closed-loop client threads, each on its own keep-alive connection.

Call = Callable[[int], list[str]]
"""One request (or in-process transaction) number ``n``; returns the ``job_id`` acknowledged."""
Client = Callable[[], contextlib.AbstractContextManager[Call]]
"""Opens one client's connection for the length of a row."""


def drive(load: Load, client: Client, *, jobs_per: int) -> Sample:
    """``load.clients`` threads, each calling its own client's ``call(n)`` until the budget ends."""
    budget = Budget(load)
    per_client: list[Lists] = [([], []) for _ in range(load.clients)]
    started = time.perf_counter()
    with ThreadPoolExecutor(load.clients) as pool:
        futures = [pool.submit(_client_loop, budget, client, *lists) for lists in per_client]
        for future in futures:
            future.result()
    return _sample(time.perf_counter() - started, per_client, jobs_per)


def _client_loop(
    budget: Budget, client: Client, latencies: list[float], job_ids: list[str]
) -> None:
    try:
        with client() as call:
            while (n := budget.take()) is not None:
                started = time.perf_counter()
                job_ids.extend(call(n))
                latencies.append(time.perf_counter() - started)
    except BaseException:
        budget.stop()  # the other clients end too; the error reaches the caller
        raise


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


# The gateway process, the checks, and the interleaved runs.


@dataclass(frozen=True)
class RunningGateway:
    url: str
    token: str
    pid: int


def outbox_command() -> str:
    beside = Path(sys.executable).parent / "outbox"
    return str(beside) if beside.exists() else shutil.which("outbox") or "outbox"


@contextlib.contextmanager
def running_gateway(database_url: str, *, max_batch: int) -> Iterator[RunningGateway]:
    """``outbox gateway`` on a free loopback port with one write token and no rate limit."""
    token, port = new_token(), free_port()
    env = os.environ | {
        "OUTBOX_DATABASE_URL": database_url,
        "OUTBOX_GATEWAY_HOST": "127.0.0.1",
        "OUTBOX_GATEWAY_PORT": str(port),
        "OUTBOX_GATEWAY_TOKENS": f'{{"bench": {{"sha256": "{hash_token(token)}", '
                                 f'"scopes": ["jobs:write"]}}}}',
        "OUTBOX_GATEWAY_RATE_LIMIT_PER_SECOND": "0",  # the bench measures the gateway, not a cap
        "OUTBOX_GATEWAY_MAX_BATCH": str(max(max_batch, 500)),
        "OUTBOX_LOG_LEVEL": "WARNING",
    }  # fmt: skip
    log_path = Path(tempfile.mkdtemp(prefix="outbox-gateway-bench-")) / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([outbox_command(), "gateway"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for_port(port, timeout=30, process=process)
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url)
        yield RunningGateway(url, token, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise BenchError(f"the gateway exited with {process.returncode}; see {log_path}")
    shutil.rmtree(log_path.parent)  # kept only when something went wrong


def _wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.05)  # /readyz is the only readiness signal the gateway gives
    raise BenchError(f"{url}/readyz did not answer 200 within {timeout} s")


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of another process so far (Linux ``/proc``; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def check_stored(engine: Engine, prefix: str, sample: Sample) -> None:
    """The database holds exactly the jobs ``sample`` acknowledged under ``prefix``, once each."""
    with engine.connect() as conn:
        stored = conn.scalars(
            sa.select(jobs.c.job_id).where(jobs.c.job_id.startswith(f"{prefix}-"))
        )
        found = Counter(stored)
    acknowledged = Counter(sample.job_ids)
    if found != acknowledged or len(acknowledged) != sample.jobs:
        missing, unexpected = acknowledged - found, found - acknowledged
        raise BenchError(f"{prefix}: {sample.jobs} jobs acknowledged, {len(acknowledged)} "
                         f"distinct, {missing.total()} missing, {unexpected.total()} unexpected "
                         "rows in the database")  # fmt: skip


Measure = Callable[[Load, str], Sample]


@dataclass(frozen=True)
class Row:
    """One line of the table: how to measure it under a ``job_id`` prefix, and its baseline."""

    name: str
    measure: Measure
    baseline: str | None = None


HEALTHZ = "GET /healthz (no database)"


def build_rows(engine: Engine, gw: RunningGateway, batch_size: int, transport: str) -> list[Row]:
    """The rows in the order they run; each baseline runs just before the HTTP row it anchors."""
    single_baseline = "in-process enqueue, 1 job/txn"
    batch_baseline = f"in-process enqueue_many, {batch_size}/txn"

    def over_http(send: Send) -> Client:
        return http_client(gw, transport, send)

    return [
        Row(HEALTHZ, lambda load, p: drive(load, over_http(get_healthz), jobs_per=0)),
        Row(single_baseline, lambda load, p: drive(load, enqueue_one(engine, p), jobs_per=1)),
        Row("POST /v1/jobs, 1 job/request",
            lambda load, p: drive(load, over_http(post_job(p)), jobs_per=1), single_baseline),
        Row(batch_baseline, lambda load, p: drive(
            load, enqueue_batch(engine, p, batch_size), jobs_per=batch_size)),
        Row(f"POST /v1/jobs:batch, {batch_size}/request", lambda load, p: drive(
            load, over_http(post_batch(p, batch_size)), jobs_per=batch_size), batch_baseline),
    ]  # fmt: skip


@dataclass(frozen=True)
class Results:
    """Every row's samples, one per run, in the order the rows ran."""

    rows: list[Row]
    samples: dict[str, list[Sample]]


def run_bench(database_url: str, load: Load, runs: int, *, transport: str = "stdlib") -> Results:
    """Serve the gateway on ``database_url`` (migrated) and measure every row ``runs`` times."""
    engine = create_engine(database_url, pool_size=load.clients)
    try:
        with running_gateway(database_url, max_batch=load.batch_size) as gw:
            rows = build_rows(engine, gw, load.batch_size, transport)
            warm_up = Load(load.clients, requests=2 * load.clients, batch_size=load.batch_size)
            results = Results(rows, {row.name: [] for row in rows})
            for run in range(runs + 1):  # run 0 warms connections and caches; not recorded
                with engine.begin() as conn:
                    conn.execute(sa.text("TRUNCATE outbox_jobs"))
                for i, row in enumerate(rows):
                    prefix = f"bench-r{run}-{i}"
                    row_load = load if run else warm_up
                    sample = measure_cpu(gw.pid, partial(row.measure, row_load, prefix))
                    check_stored(engine, prefix, sample)
                    if run:
                        results.samples[row.name].append(sample)
            return results
    finally:
        engine.dispose()


def measure_cpu(gateway_pid: int, measure: Callable[[], Sample]) -> Sample:
    """``measure()``'s sample with the cores this process and the gateway used meanwhile."""
    ours, theirs, started = time.process_time(), cpu_seconds(gateway_pid), time.perf_counter()
    sample = measure()
    elapsed = time.perf_counter() - started
    return replace(sample, bench_cores=(time.process_time() - ours) / elapsed,
                   gateway_cores=(cpu_seconds(gateway_pid) - theirs) / elapsed)  # fmt: skip


def show(results: Results, load: Load, console: Console) -> None:
    runs = len(results.samples[results.rows[0].name])
    length = f"{load.requests:,} requests" if load.requests else f"{load.seconds:g} s"
    table = Table(title=f"gateway submissions: {load.clients} clients, {length} per row, "
                        f"median of {runs}")  # fmt: skip
    for column in ("row", "req/s", "jobs/s", "jobs/s min..max", "p50 ms", "p99 ms",
                   "vs in-process", "CPU bench/gw"):  # fmt: skip
        table.add_column(column, justify="left" if column == "row" else "right")
    for row in results.rows:
        table.add_row(*_cells(row, results))
    console.print(table)


def _cells(row: Row, results: Results) -> list[str]:
    samples = results.samples[row.name]
    jobs_rates = [s.jobs_per_second for s in samples]
    jobs_cells = ["-", "-"]
    if row.name != HEALTHZ:
        jobs_cells = [f"{statistics.median(jobs_rates):,.0f}",
                      f"{min(jobs_rates):,.0f}..{max(jobs_rates):,.0f}"]  # fmt: skip
    ratio = "-"
    if row.baseline is not None:
        base = statistics.median(s.jobs_per_second for s in results.samples[row.baseline])
        ratio = f"{statistics.median(jobs_rates) / base:.2f}x"
    cores = (f"{statistics.median(s.bench_cores for s in samples):.2f}/"
             f"{statistics.median(s.gateway_cores for s in samples):.2f}")  # fmt: skip
    return [row.name, f"{statistics.median(s.requests_per_second for s in samples):,.0f}",
            *jobs_cells, f"{statistics.median(s.p50_ms for s in samples):.2f}",
            f"{statistics.median(s.p99_ms for s in samples):.2f}", ratio, cores]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each row's run")
    parser.add_argument(
        "--requests", type=int, help="requests per row's run (instead of --seconds)"
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (and threads)")
    parser.add_argument("--batch-size", type=int, default=100, help="jobs per batch request")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--http-client",
        choices=sorted(TRANSPORTS),
        default="stdlib",
        help="the load generator's HTTP client (default: the cheaper one)",
    )
    args = parser.parse_args()
    if args.clients < 1 or not 1 <= args.batch_size <= 10_000 or args.runs < 1:
        parser.error("--clients and --runs must be at least 1, --batch-size 1..10000")
    load = Load(args.clients, args.seconds, args.requests, args.batch_size)
    try:
        with embedded_postgres() as pg:
            migrations_runner.upgrade(pg.url)
            results = run_bench(pg.url, load, args.runs, transport=args.http_client)
    except BenchError as exc:
        raise SystemExit(f"error: {exc}") from None
    # Piped output gets rich's 80 columns, too narrow for the table; a terminal keeps its own.
    show(results, load, Console() if sys.stdout.isatty() else Console(width=132))


if __name__ == "__main__":
    main()
