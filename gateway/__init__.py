"""The gateway: write jobs into the outbox inside the caller's own transaction, or over HTTP.

``enqueue`` and ``enqueue_many`` join the caller's open transaction (a SQLAlchemy ``Session`` or
``Connection``) and never commit: the business row and the job row commit together or not at all.
The HTTP gateway (``gateway.http_app.create_app``, served by ``outbox gateway``) is for callers
outside this database; importing this package does not import it (nor FastAPI).
"""

from gateway.enqueue import JobSpec, enqueue, enqueue_many
from outbox.errors import InvalidJobError, JobConflictError
from outbox.new_job import EnqueueLimits

__all__ = [
    "EnqueueLimits",
    "InvalidJobError",
    "JobConflictError",
    "JobSpec",
    "enqueue",
    "enqueue_many",
]
