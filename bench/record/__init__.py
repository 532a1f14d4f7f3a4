"""The record room: where results live and what they say about how they were made.

    store       the results folder, one JSON file per cell written atomically; claims, attempts, saved seeds
    provenance  the git commit, packages and device a result came from
    tracking    MLflow: a parent run per cell, a child run per fit, metric curves in batches; `bench ui`'s server

Imports only the ground floor (`bench.registry`, `bench.console`, `bench.options`) and `bench_record`, whose
`CellRecord` is the schema every cell file is written and read through.
"""
