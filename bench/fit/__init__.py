"""The fit room: one model trained and scored, and the settings it is trained with.

    loop        the fit loop: steps, schedule, validation looks, stop at a speed task's target
    train       builds a task's model for a variant and fits it (one process, or DDP through `ddp`)
    ddp         data-parallel fits over several processes or GPUs
    tuning      Optuna: the search space, the seeded sampler, successive halving at the fit's rungs
    memory      peak memory of a fit
    reuse       a fit's model states kept, for cells that evaluate another cell's models (int8 caches)

Imports the record room and the ground floor.
"""
