"""Which Kafka offsets may be committed: per partition, up to the oldest message still in flight.

Messages of one partition finish out of order (handlers run concurrently). Committing a later
offset while an earlier message's job is unwritten would lose that message if the worker died:
the group resumes from the committed offset. So each partition commits the lowest offset still
in flight, or one past the highest read when none is. Thread-safe: the loop reads and commits,
the outcome writer's thread marks messages done.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

TopicPartition = tuple[str, int]


@dataclass
class _Partition:
    in_flight: set[int] = field(default_factory=set)
    next_offset: int = -1  # one past the highest offset read; -1: nothing read yet
    committed: int = -1


class PartitionOffsets:
    """Offsets read and done, per (topic, partition), since the partition was assigned."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._partitions: dict[TopicPartition, _Partition] = {}

    def read(self, topic: str, partition: int, offset: int) -> None:
        """A message was handed to the worker: in flight until :meth:`done`."""
        with self._lock:
            part = self._partitions.setdefault((topic, partition), _Partition())
            part.in_flight.add(offset)
            part.next_offset = max(part.next_offset, offset + 1)

    def done(self, topic: str, partition: int, offset: int) -> None:
        """The message needs nothing more: its job's outcome is written, or it had none to run."""
        with self._lock:
            part = self._partitions.get((topic, partition))
            if part is not None:  # else the partition was revoked meanwhile: not ours to commit
                part.in_flight.discard(offset)

    def committable(self, only: set[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """The offset each partition may commit now, where it moved past the last commit."""
        with self._lock:
            positions = {}
            for tp, part in self._partitions.items():
                if only is not None and tp not in only:
                    continue
                position = min(part.in_flight) if part.in_flight else part.next_offset
                if position > part.committed:
                    positions[tp] = position
            return positions

    def committed(self, positions: dict[TopicPartition, int]) -> None:
        """The broker accepted these commits."""
        with self._lock:
            for tp, position in positions.items():
                part = self._partitions.get(tp)
                if part is not None:
                    part.committed = max(part.committed, position)

    def forget(self, partitions: set[TopicPartition]) -> None:
        """The partitions were revoked or lost: another consumer resumes from their commits."""
        with self._lock:
            for tp in partitions:
                self._partitions.pop(tp, None)

    def in_flight(self) -> int:
        with self._lock:
            return sum(len(p.in_flight) for p in self._partitions.values())
