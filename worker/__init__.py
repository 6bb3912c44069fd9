"""The worker: claims jobs, runs registered handlers, completes or backs off (worker issue)."""
