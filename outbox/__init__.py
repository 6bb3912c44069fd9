"""The shared core of the outbox: table, job states, every SQL statement on job rows, settings.

The services (``gateway``, ``relay``, ``worker``) build on this package; it imports none of them,
except the ``outbox`` command line, which is the composition root.
"""
