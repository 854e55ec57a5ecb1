"""Durable jobs: a queue in the metadata store with leases and heartbeats, retries with
backoff, cancellation, captured logs, step memos and cron schedules (docs/decisions/0014)."""
