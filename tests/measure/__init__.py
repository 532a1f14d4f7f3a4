"""The measure room: bench perf, the cache conformance checks, the study's numbers."""
