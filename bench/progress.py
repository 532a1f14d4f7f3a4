"""Rich progress for a run: cells, the fits of the current cell (trials then seeds), and epochs."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RunProgress:
    """Three bars in one live display; `callback()` feeds the epoch bar from inside Lightning."""

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

    def callback(self) -> Any:
        """A Lightning callback advancing the batch bar, one reset per epoch."""
        import lightning as L

        bar, progress = self.batches, self.progress

        class EpochBar(L.Callback):
            def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
                total = trainer.num_training_batches
                label = f"  epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
                progress.reset(bar, total=total if total != float("inf") else None, visible=True, description=label)

            def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
                progress.advance(bar)

        return EpochBar()
