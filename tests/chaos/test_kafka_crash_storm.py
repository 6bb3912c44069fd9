"""Kafka crash storm: relays and workers SIGKILLed every 1-3 s and started again, under load,
with the relays publishing to a Kafka-protocol broker (tansu) and the workers reading it in one
consumer group.

Short size in the default suite, full with ``CHAOS_SIZE=full``, as the Redis storm. Kafka keeps
no receipt of what it was sent: a relay killed after the broker acknowledged a batch and before
its mark committed sends that batch again on restart. So duplicates at the broker (the same
``(job_id, attempt)`` twice) are allowed, counted and reported, and bounded by relay kills times
the batch size. Pass: nothing lost, nothing phantom, no double completion, no handler run twice
for one attempt (a copy at the broker finds nothing to claim), no attempt over the maximum,
per-key order kept (a key lives in one partition), all drained within 60 s of the last kill.

Besides the random kills, a third relay is armed to kill itself right after the broker
acknowledged its fifth batch, before marking it (``relay.after_publish=kill:5``): the worst
moment for duplicates happens at least once in every run; it counts as one more relay kill.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.checker import Report
from tests.chaos.conftest import SIZE, Stage
from tests.chaos.load import run_transactions
from tests.waiting import wait_until

REPLICAS = {"relay": ("relay-1", "relay-2"), "worker": ("worker-1", "worker-2")}
ARMED = "relay-3"  # kills itself once, after an acknowledged publish, before the mark
DRAIN_LIMIT = 60.0
RELAY_BATCH_SIZE = 50  # small, so that the bound on duplicates means something


@pytest.mark.timeout(420)  # the full size runs for a few minutes
def test_a_kafka_crash_storm_loses_nothing_and_duplicates_at_most_the_batches_in_flight(
    stage: Stage, kafka_bootstrap: str, publish_report: Callable[[Report], Path]
) -> None:
    stage.use_kafka(kafka_bootstrap)
    stage.set(OUTBOX_RELAY_BATCH_SIZE=str(RELAY_BATCH_SIZE))
    services = stage.services
    for names in REPLICAS.values():
        for name in names:
            services.start(name)
    stage.warm_up()  # the consumer group has formed and a job went all the way through
    services.start(ARMED, OUTBOX_FAILPOINTS="relay.after_publish=kill:5")
    armed_fired = False

    def check_exits() -> None:
        nonlocal armed_fired
        exited = services.exited()
        if not armed_fired and exited.get(ARMED) == -signal.SIGKILL:
            armed_fired = True
            del exited[ARMED]
            services.kills["relay"] = services.kills.get("relay", 0) + 1
            services.start(ARMED)  # disarmed: the failpoint was in that process's env only
        assert not exited, f"died on its own: {exited}"

    load = threading.Thread(target=run_transactions,
                            args=(stage.engine, SIZE.transactions, stage.ledger),
                            kwargs={"rate": SIZE.rate})  # fmt: skip
    rng = random.Random(13)
    load.start()
    storm_ends = time.monotonic() + SIZE.storm_seconds
    kinds = ("relay", "worker")
    kill = 0
    while load.is_alive() or time.monotonic() < storm_ends:
        time.sleep(rng.uniform(1, 3))  # the fault schedule: the next kill in 1-3 s
        check_exits()
        services.kill_and_restart(rng.choice(REPLICAS[kinds[kill % 2]]))  # relay, worker, ...
        kill += 1
    last_kill = time.monotonic()
    assert wait_until(lambda: services.running[ARMED].poll() is not None or armed_fired, 30)
    check_exits()
    assert armed_fired, "the armed relay never reached its fifth batch"
    drained = wait_until(lambda: stage.unfinished() == 0, DRAIN_LIMIT, every=0.2)
    drain_seconds = time.monotonic() - last_kill
    services.stop_all()  # one may have just been started again: its exit code says nothing

    report = stage.report("kafka-crash-storm", drain_seconds=drain_seconds,
                          extra={"relay_batch_size": RELAY_BATCH_SIZE})  # fmt: skip
    publish_report(report)
    assert drained, report.summary()
    assert report.committed + report.rolled_back == SIZE.transactions
    assert (report.lost, report.phantom, report.double_completions, report.repeated_runs,
            report.attempts_over_max, report.order_violations) == (0, 0, 0, 0, 0, 0), \
        report.summary()  # fmt: skip
    relay_kills = report.kills.get("relay", 0)
    assert report.broker_duplicates <= relay_kills * RELAY_BATCH_SIZE, report.summary()
    assert report.kills["relay"] >= 3, report.summary()  # the armed one and two or more
    assert report.kills["worker"] >= 2, report.summary()
