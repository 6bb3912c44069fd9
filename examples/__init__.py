"""Examples of applications that use the outbox; each is importable and tested (tests/gateway)."""
