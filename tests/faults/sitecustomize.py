"""Installs the fault hooks of `faultlib` in every Python process started with this folder on PYTHONPATH.

Only `tests/run/test_faults.py` puts it there, for the `bench run` subprocesses it interrupts; with
`BENCH_FAULT_LOG` unset it does nothing.
"""

import faultlib

faultlib.install()
