"""bench_record: the cell record's schema and the statistics over it, shared by bench and the leaderboard.

    schema    the cell record as typed frozen dataclasses, its version and migrations (`CellRecord`)
    parts     how a typed part is read from JSON and written back exactly
    compare   derived values, computed once: the comparison with the baseline, the adaptive seeds' decision
    stats     intervals, paired tests, corrections, aggregates, group-sequential designs (numbers in, numbers out)
    uris      URIs without credentials
    files     files written whole or not at all (results, kept states, the board's pages)

Depends on numpy and scipy only, never on `bench` or `bench_leaderboard` (tests/test_layout.py checks it):
bench writes records through it, the board reads them through it.
"""

from bench_record.parts import SchemaError
from bench_record.schema import SCHEMA_VERSION, CellRecord

__all__ = ["SCHEMA_VERSION", "CellRecord", "SchemaError"]
