"""Distributed mode: step queues on Redis, `rivers-worker` processes, leases (ARCHITECTURE.md §4)."""
