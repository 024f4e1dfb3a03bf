"""Benchmarks (scripts that print numbers, never timed tests): ``python -m tests.bench``."""
