"""The report room: tables the CLI prints about variants, tasks and caches (the leaderboard itself
is its own package, `bench_leaderboard`).

    tables      `bench variants`, `bench cache`, `bench tasks`, `bench check-variant`, convergence records
    bundle      the file a contributor's results travel in: manifest, records, sha256s; read whole or refused
    contribute  `bench submit` packs a plugin variant's records into a bundle, `bench leaderboard --add` checks
                one against this checkout before it takes them in

Imports the run room (data sources) and every room below it.
"""
