"""Where a job's messages go, which the relay publishes to and a broker-fed worker reads from.

One place for both sides, so they can never disagree: a job's own ``topic``, else
``OUTBOX_TOPICS_BY_TYPE[type]``, else ``OUTBOX_DEFAULT_TOPIC``; on Redis, one stream per topic,
named ``OUTBOX_REDIS_STREAM_PREFIX + topic``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TopicRoutes:
    """Topic routing by job type, with a default for every type without a route of its own."""

    default_topic: str
    topics_by_type: Mapping[str, str] = field(default_factory=dict)

    def topic_for(self, job_type: str, topic: str | None = None) -> str:
        """The topic of a job of ``job_type``; ``topic``, the job's own override, wins."""
        return topic or self.topics_by_type.get(job_type, self.default_topic)

    def topics_of(self, job_types: Iterable[str]) -> list[str]:
        """The topics jobs of these types go to (unless a job names its own), sorted."""
        return sorted({self.topic_for(job_type) for job_type in job_types})


def redis_stream(prefix: str, topic: str) -> str:
    """The Redis stream that carries ``topic``."""
    return prefix + topic
