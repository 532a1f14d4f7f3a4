"""Static leaderboard for the bench results store: one self-contained HTML page plus JSON and CSV.

Depends on Jinja2 and `bench_record` (the cell record's schema and statistics) only; it reads
`results/cells/*.json` itself rather than importing `bench`, so it can be built anywhere the results folder
is copied.
"""

from __future__ import annotations

from .build import Built, build, build_report

__all__ = ["Built", "build", "build_report"]
