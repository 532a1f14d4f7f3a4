"""Peak memory during one block of code, not over the life of the process.

`resource.getrusage(...).ru_maxrss` is the process's lifetime maximum: after one large fit every
later fit reports at least as much. `PeakMemory` measures a block alone:

    with PeakMemory() as mem:
        fit(...)
    mem.peak_bytes, mem.baseline_bytes, mem.growth_bytes

On CUDA it resets the allocator's peak statistics at entry and reads `max_memory_allocated` at
exit (bytes held by tensors). On CPU a daemon thread samples the resident set size from
`/proc/self/statm` every `interval_s` (a read of a few bytes, about 10 us), plus once at entry and
once at exit; where there is no `/proc` (macOS), the lifetime `ru_maxrss` is all there is, and
`method` says so.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from types import TracebackType

STATM = "/proc/self/statm"


def _page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class _RssReader:
    """The current resident set size in bytes, from a kept-open /proc/self/statm."""

    def __init__(self) -> None:
        self._fd = os.open(STATM, os.O_RDONLY)
        self._page = _page_size()

    def __call__(self) -> int:
        fields = os.pread(self._fd, 128, 0).split()  # size resident shared text lib data dt, in pages
        return int(fields[1]) * self._page

    def close(self) -> None:
        os.close(self._fd)


def _lifetime_max_rss() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB, macOS bytes


def _resolve(device: str | None) -> str:
    if device is not None:
        return "cuda" if device.startswith("cuda") else "cpu"
    torch = sys.modules.get("torch")  # no torch loaded: nothing can be on a GPU
    return "cuda" if torch is not None and torch.cuda.is_available() else "cpu"


class PeakMemory:
    """Context manager measuring the peak memory of the process while its block runs.

    Attributes (set at exit; `baseline_bytes` already at entry):
        device: "cuda" or "cpu".
        method: "cuda" (allocator statistics), "statm" (sampled RSS) or "ru_maxrss" (lifetime max).
        baseline_bytes: Memory in use at entry (RSS on CPU, bytes allocated on CUDA).
        peak_bytes: The highest value seen during the block.
        samples: How many RSS samples the CPU sampler took.
    """

    def __init__(self, device: str | None = None, interval_s: float = 0.002) -> None:
        """Nothing is measured until the block is entered.

        Args:
            device: "cpu", "cuda" (or "cuda:N"); None: CUDA when torch is loaded and sees a GPU.
            interval_s: Time between RSS samples on CPU; a peak shorter than this can be missed.
        """
        self.device = _resolve(device)
        self.interval_s = interval_s
        self.method = "cuda" if self.device == "cuda" else ("statm" if os.path.exists(STATM) else "ru_maxrss")
        self.baseline_bytes = 0
        self.peak_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: _RssReader | None = None

    @property
    def growth_bytes(self) -> int:
        """How far the peak rose above the baseline: what the block itself needed at most."""
        return max(0, self.peak_bytes - self.baseline_bytes)

    def __enter__(self) -> PeakMemory:
        if self.method == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline_bytes = self.peak_bytes = int(torch.cuda.memory_allocated())
        elif self.method == "ru_maxrss":
            self.baseline_bytes = self.peak_bytes = _lifetime_max_rss()
        else:
            self._reader = _RssReader()
            self.baseline_bytes = self.peak_bytes = self._reader()
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample_until_stopped, name="PeakMemory", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        if self._reader is not None:
            self.peak_bytes = max(self.peak_bytes, self._reader())
            self.samples += 1

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.method == "cuda":
            import torch

            torch.cuda.synchronize()
            self.peak_bytes = max(self.peak_bytes, int(torch.cuda.max_memory_allocated()))
        elif self.method == "ru_maxrss":
            self.peak_bytes = _lifetime_max_rss()
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self._sample()  # the block's last moment, which the thread may have slept through
            if self._reader is not None:
                self._reader.close()
            self._thread, self._reader = None, None

    def as_dict(self) -> dict[str, int | str]:
        return {
            "method": self.method,
            "baseline_bytes": self.baseline_bytes,
            "peak_bytes": self.peak_bytes,
            "growth_bytes": self.growth_bytes,
        }
