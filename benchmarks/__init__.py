"""Scripts that measure clerk-sync and print JSON (``python -m benchmarks.walk``); never timed tests."""
