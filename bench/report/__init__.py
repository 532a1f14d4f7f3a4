"""The report room: tables the CLI prints about variants, tasks and caches (the leaderboard itself
is its own package, `bench_leaderboard`).

    tables      `bench variants`, `bench cache`, `bench tasks`, `bench check-variant`, convergence records

Imports the run room (data sources) and every room below it.
"""
