"""Broker-source bookkeeping: which deliveries a round admits and finishes, which offsets commit."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Engine

from outbox.job_record import Lease
from outbox.states import JobStatus
from tests.worker.conftest import enqueue, job
from worker.claim_plan import plan_claims
from worker.delivery_claims import Delivery, DeliveryClaims, admit
from worker.partition_offsets import PartitionOffsets
from worker.source import ClaimRequest, ClaimTerms

TERMS = ClaimTerms("w", timedelta(seconds=30), 5)


HANDLED = frozenset({"capped", "free", "other"})


def request(limit: int, *, running: dict[str, int] | None = None) -> ClaimRequest:
    groups = plan_claims(
        handled=HANDLED, concurrency_limits={"capped": 2}, running=running or {}, tokens={}
    )
    return ClaimRequest(limit, groups, HANDLED, TERMS)


def deliveries(*types: str) -> list[Delivery]:
    return [Delivery(f"j{n}", t, ("s", f"{n}-0")) for n, t in enumerate(types)]


def test_a_round_admits_in_order_up_to_its_limit_and_each_type_up_to_its_room() -> None:
    waiting = deliveries("capped", "free", "capped", "capped", "other", "free")

    admitted, rest = admit(waiting, request(4, running={"capped": 1}))

    assert [d.job_id for d in admitted] == ["j0", "j1", "j4", "j5"]  # one capped slot was free
    assert [d.job_id for d in rest] == ["j2", "j3"]  # still waiting, in arrival order


def test_a_type_with_no_room_or_no_handler_is_never_admitted() -> None:
    waiting = deliveries("capped", "unknown", "free")

    admitted, rest = admit(waiting, request(10, running={"capped": 2}))

    assert [d.type for d in admitted] == ["free"]
    assert [d.type for d in rest] == ["capped", "unknown"]


def test_nothing_is_admitted_without_room() -> None:
    assert admit(deliveries("free"), request(0)) == ([], deliveries("free"))


def test_a_copy_of_a_message_in_hand_is_ignored_and_another_of_the_same_job_is_done(
    engine: Engine,
) -> None:
    claims = DeliveryClaims(engine)
    job_id = enqueue(engine, "free")
    first = Delivery(job_id, "free", ("t", 0, 7))

    assert claims.receive([first, Delivery(job_id, "unknown", ("t", 0, 9))], HANDLED) == [
        Delivery(job_id, "unknown", ("t", 0, 9))  # no handler here: done at once, unclaimed
    ]
    jobs, done = claims.claim(request(10))
    assert ([j.job_id for j in jobs], done) == ([job_id], [])
    # Read again at the same position (a re-fetch): not a delivery of its own, so not done.
    assert claims.receive([Delivery(job_id, "free", ("t", 0, 7))], HANDLED) == []
    assert claims.claim(request(10)) == ([], [])
    # A second message naming the job (a duplicate publish): nothing to claim, done at once.
    duplicate = Delivery(job_id, "free", ("t", 0, 8))
    assert claims.receive([duplicate], HANDLED) == []
    assert claims.claim(request(10)) == ([], [duplicate])
    assert job(engine, job_id).status is JobStatus.PROCESSING
    lease = Lease(jobs[0].id, jobs[0].lease_token)
    assert claims.settle([lease]) == [first]  # done once its outcome is written
    assert claims.in_hand() == []


def test_a_partition_commits_up_to_its_oldest_message_in_flight() -> None:
    offsets = PartitionOffsets()
    for offset in (5, 6, 7):
        offsets.read("t", 0, offset)
    offsets.done("t", 0, 6)
    offsets.done("t", 0, 7)

    assert offsets.committable() == {("t", 0): 5}  # 5 still runs: resume there after a crash
    offsets.committed({("t", 0): 5})
    assert offsets.committable() == {}

    offsets.done("t", 0, 5)
    assert offsets.committable() == {("t", 0): 8}


def test_partitions_commit_independently_and_a_revoked_one_is_forgotten() -> None:
    offsets = PartitionOffsets()
    offsets.read("t", 0, 0)
    offsets.read("t", 1, 10)
    offsets.done("t", 1, 10)

    assert offsets.committable() == {("t", 0): 0, ("t", 1): 11}
    assert offsets.committable(only={("t", 1)}) == {("t", 1): 11}

    offsets.forget({("t", 0)})
    offsets.done("t", 0, 0)  # the job finished after the partition moved: not ours to commit
    assert offsets.committable() == {("t", 1): 11}
    assert offsets.in_flight() == 0
