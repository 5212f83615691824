"""Benchmarks of adaptive-scheduler and of peer job systems, run against a live redis-server."""
