"""bench: a benchmark harness and leaderboard for attention variants.

The package is arranged by the steps of a run, each folder a room that imports only the rooms below it
(checked by tests/test_layout.py):

    ground floor  console, registry (installed tasks and variants), options
    record        results store, provenance, MLflow tracking
    fit           the fit loop, training, DDP, tuning, states kept for reuse
    plan          suites, the cell matrix, staleness, input validation
    measure       costs, the cache contract, baselines, convergence records, perf
    run           the pipeline, one cell, adaptive seeds, executors, progress
    report        the CLI's tables
    cli           the `bench` command

Beneath them all lies `bench_record` (leaderboard/bench_record/, a package of its own): the cell record's
schema, its statistics and the values derived from it, which bench and the leaderboard both read and which
imports neither of them.
"""

__version__ = "0.1.0"
