"""The measure room: what a design costs, and what the harness itself costs.

    costs        parameters, KV-cache bytes derived and measured by decoding
    decoder      the reference decoder's contract (a plugin implements it: the tasks package's GPT)
    analytic     the study's cache arithmetic at its own scale
    conformance  the cache contract every variant is checked against
    baselines    each task's trivial baselines (the bar a task must clear to count as learnt)
    converge     `bench converge`: the study's variants run to convergence, recorded per task
    perf         `bench perf`: the harness's speed, the hardware's peaks, the compute a run spent

Imports the plan, fit and record rooms and the ground floor.
"""
