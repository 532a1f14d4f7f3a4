"""The run room: the cells of a plan run and recorded.

    pipeline    `bench run`: plan, stage the cells, run them, assemble the leaderboard
    cells       one cell: tune, fit its seeds, measure its costs, write its record
    adaptive    the seeds a cell gets: a group-sequential design over its comparisons with the baseline
    executors   where cells run: this machine (`local`) or a Ray cluster (`ray`)
    progress    rich progress bars for cells and fits
    summary     the run's console tables: the matrix before, the comparison with the baseline after, the cards
    history     the page's committed history, which the leaderboard lists changed verdicts against
    verify      `bench verify`: stored seeds fitted again and compared with their records
    data        `bench data prepare`: each task's data materialised in the cache

Imports every room below it (measure, plan, fit, record), the ground floor and `bench_record`.
"""
