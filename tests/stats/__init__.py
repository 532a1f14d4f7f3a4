"""The statistics (bench_record.stats): intervals, tests, aggregates, the sequential design."""
