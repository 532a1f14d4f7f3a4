"""The plan room: what a run will do, before it does it.

    suites      named suites: tasks, variants, seeds, trials, adaptive looks
    matrix      the cells (task x variant x config), their ids, their status against the store
    staleness   stored results that no longer match the code
    validate    bad input found before any work starts, with the fix named

Imports the fit room (tuning defaults, thread settings), the record room, the ground floor and `bench_record`.
"""
