"""The seed x item interval of each row's gap to QKV, shown beside its seed-level interval.

Where a row's fits and QKV's recorded what they got right per test item (`bench_record.schema.ItemScores`:
the accuracy tasks), `bench_record.compare.item_comparison` bootstraps the difference over seeds and test
items together (`bench_record.stats.items`). Its interval is added to the row's `vs_baseline` as
`item_interval` [low, high], `item_interval_method` and `n_items` (the test items); stars, ranks and claims
stay on the seed-level test. Rows without item scores (older records, perplexity and AUROC tasks, speed
tasks) are left as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench_record import CellRecord
from bench_record.compare import BASELINE, item_comparison, item_fields
from bench_record.stats.aggregate import BOOT_REPS, BOOT_SEED

NOTE = (
    "Where a row's fits and QKV's recorded what they got right per test item (the accuracy tasks), Δ vs QKV also "
    "shows a seed×item interval (s×i): a paired bootstrap that redraws the seeds and the test items with "
    f"replacement, the same draws for both variants ({BOOT_REPS:,} resamples, generator seed {BOOT_SEED}; 95% "
    "percentile interval), so it covers the test set's sampling as well as the spread over seeds; stars and ranks "
    "stay on the seed-level test."
)


def attach(rows: Sequence[dict[str, Any]], records: Sequence[CellRecord]) -> None:
    """Add the seed x item interval to the `vs_baseline` of each row of one task table that has one.

    Against the QKV row `model._compare_rows` computed the comparisons with (the first fresh ok one, when it has
    per-seed values); where that row is absent, a row keeps its file's comparison, and with it the file's interval.

    Args:
        rows: The table's rows, after `model._compare_rows`.
        records: The records the rows were made from.
    """
    by_id = {record.cell_id: record for record in records}
    base_row = next((r for r in rows if r["variant"] == BASELINE and r["state"] == "ok"), None)
    base = by_id.get(base_row["cell_id"]) if base_row and base_row.get("seed_values") else None
    for row in rows:
        comp, record = row.get("vs_baseline"), by_id.get(row["cell_id"])
        if not comp or record is None or row is base_row:
            continue
        if base is not None and row.get("seed_values"):
            comp.update(item_fields(item_comparison(record, base)))
        else:
            comp.update(_stored(record))


def _stored(record: CellRecord) -> dict[str, Any]:
    """The seed x item interval the record's own comparison holds, or {}."""
    stored = record.baseline_comparison
    if stored is None or stored.item_interval is None:
        return {}
    return {"item_interval": list(stored.item_interval), "item_interval_method": stored.item_interval_method,
            "n_items": stored.n_items}  # fmt: skip
