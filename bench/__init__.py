"""bench: a benchmark harness and leaderboard for attention variants."""

__version__ = "0.1.0"
