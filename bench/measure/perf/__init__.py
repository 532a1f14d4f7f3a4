"""`bench perf`: how fast the harness itself is, measured on this machine.

One module per kind of measurement, each with `settings(quick, repeats)`, `measure(settings, ctx)`
(a JSON-ready dict) and `render(result)` (rich tables); `run.py` runs the chosen kinds and writes
`<out>/<kind>.json`. Contenders are always interleaved round by round in one process, so a change
in the machine's load falls on all of them alike, and results are ratios with their spread.

    harness     the default suite's fits through `bench.fit.train.fit` vs a bare PyTorch loop
    hardware    matmul and copy peaks; achieved training FLOP/s per task; an operator profile
    attention   forward+backward of every variant vs plain multi-head SDPA
    decoding    tokens/s through the real KV cache at long contexts, with the bytes it holds
    budget      a results folder's cell time per task and the share of work each saving mechanism spared
    precision   each task's training step at fp32 and at bf16 autocast, beside the precision its config uses

Importing this package imports no torch (`bench --help` stays instant).
"""

from __future__ import annotations

KINDS: tuple[str, ...] = ("harness", "hardware", "attention", "decoding", "budget", "precision")
