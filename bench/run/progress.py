"""Rich progress for a run: cells, the fits of the current cell (trials then seeds), and epochs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

if TYPE_CHECKING:
    from bench.fit.loop import FitHooks


class RunProgress:
    """Three bars in one live display; `callback()` feeds the epoch bar from inside a fit."""

    def __init__(self, console: Console, total_cells: int) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<44}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.cells = self.progress.add_task("cells", total=total_cells)
        self.fits = self.progress.add_task("fits", total=1, visible=False)
        self.batches = self.progress.add_task("batches", total=1, visible=False)

    def __enter__(self) -> RunProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start_cell(self, label: str, fits: int) -> None:
        self.progress.update(self.cells, description=f"cells (now {label})")
        self.progress.reset(self.fits, total=max(fits, 1), visible=True, description="fits")

    def start_fit(self, description: str) -> None:
        self.progress.update(self.fits, description=description)

    def end_fit(self) -> None:
        self.progress.advance(self.fits)

    def end_cell(self) -> None:
        self.progress.advance(self.cells)
        self.progress.update(self.fits, visible=False)
        self.progress.update(self.batches, visible=False)

    def log(self, message: str) -> None:
        self.progress.console.print(message, highlight=False)

    def callback(self) -> FitHooks:
        """Fit hooks advancing the batch bar, one reset per epoch."""
        from bench.fit.loop import FitHooks

        bar, progress = self.batches, self.progress

        class EpochBar(FitHooks):
            def epoch_started(self, epoch: int, epochs: int, batches: int) -> None:
                progress.reset(bar, total=batches, visible=True, description=f"  epoch {epoch + 1}/{epochs}")

            def batch_ended(self, step: int) -> None:
                progress.advance(bar)

        return EpochBar()
