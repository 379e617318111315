"""Running pipelines over datasets: batching, progress, per-query persistence, resume, locks, artifacts."""
