"""Run one cell: tune on validation, refit the best settings with every seed, measure costs, store.

Each finished trial lives in the Optuna storage and each finished seed in the results store, so an
interrupted cell resumes where it stopped and loses at most the fit in flight.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.fit import reuse
from bench.fit.train import Diverged, FitResult, build, fit
from bench.fit.tuning import (
    TUNING_HORIZON,
    TUNING_SEED,
    best_value,
    default_params,
    finished_trials,
    open_study,
    optim_config,
    pruning,
    search_space,
    trials_record,
    tune,
    tuning_config,
)
from bench.measure import baselines
from bench.measure.costs import measure_decoding, non_embedding_parameters, training_flops_per_token
from bench.plan import matrix
from bench.plan.matrix import Cell
from bench.record.provenance import now, provenance
from bench.record.store import ResultStore, Superseded
from bench.record.tracking import Tracker, public_uri
from bench.registry import variants as variant_registry
from bench.run.progress import RunProgress
from bench_record.compare import ALPHA, SPENDING
from bench_record.stats import summarize

if TYPE_CHECKING:
    from bench_tasks.base import Task, TaskConfig
    from bench_variants.base import AttentionConfig, VariantSpec

MEASURE_LIMIT = 1 << 24  # context x width x layers beyond which decoding on the CPU is too slow to measure
LONG_CONTEXTS = (8_192, 32_768)  # declared cache bytes at these contexts: where bounded and shared caches pay


def cache_shape(variant: VariantSpec, attn: AttentionConfig) -> dict[str, Any]:
    """The per-head K/V layout of a variant's cache, or the formula of any other cache."""
    try:
        layout = variant.cache_layout(attn)
    except NotImplementedError:
        declared = variant.cache_spec(attn)
        return {"cache": declared.formula, "window": declared.window, "share_layers": declared.share_layers}
    return {"kv_heads": layout.kv_heads, "head_dim": layout.head_dim, "tensors_per_head": layout.tensors_per_head}


@dataclass
class RunContext:
    store: ResultStore
    storage: str
    tracker: Tracker  # `NoTracker` where tracking is off
    data_dir: Path
    progress: RunProgress


def _tags(cell: Cell) -> dict[str, str]:
    return {
        "task": cell.task.id,
        "variant": cell.variant.id,
        "variant_name": cell.variant.display_name,
        "cell_id": cell.id,
        "suite": cell.suite.name,
    }


def base_record(cell: Cell) -> dict[str, Any]:
    """The fields every cell result has, whatever its status."""
    task, variant = cell.task, cell.variant
    return {
        "cell_id": cell.id,
        "suite": cell.suite.name,
        "scale": cell.suite.scale,
        "task": {
            **task.describe(),
            "higher_is_better": task.higher_is_better,
            "causal": task.causal,
            "equivalence_margin": task.equivalence_margin,
            **_speed(task, cell.config),
        },
        "variant": {**variant.describe(), "summary": variant.summary},
        "config": {"type": type(cell.config).__name__, **cell.config.as_dict()},
        "created_at": now(),
        "provenance": provenance(),
    }


def _speed(task: Task, config: TaskConfig) -> dict[str, Any]:
    """The record's note of a speed task's target and cap (nothing for a task that measures its metric)."""
    target = task.speed_target(config)
    if target is None:
        return {}
    cap = config.max_steps if config.max_steps > 0 else None  # None: bounded by epochs (smoke and paper scales)
    return {"speed_target": {**asdict(target), "cap": cap}}


def _fit(cell: Cell, ctx: RunContext, params: dict[str, float], seed: int, run_id: str | None, **kw: Any) -> FitResult:
    logger = ctx.tracker.logger(run_id) if run_id else False
    hooks = [ctx.progress.callback(), *kw.pop("hooks", [])]
    config = kw.pop("config", cell.config)
    return fit(cell.task, cell.variant, config, optim_config(params), seed=seed, data_dir=ctx.data_dir,
               logger=logger, hooks=hooks, init_reference=_reference(cell), **kw)  # fmt: skip


def refit(cell: Cell, ctx: RunContext, params: dict[str, float], seed: int) -> FitResult:
    """One final fit of `cell` again, as its record's seed was fitted (`bench verify`), logged nowhere."""
    return _fit(cell, ctx, params, seed, None, test=True)


def _reference(cell: Cell) -> VariantSpec:
    """The variant whose initial values a cell's fits share (the suite's baseline: paired seeds)."""
    return variant_registry().get(cell.suite.baseline)


def _child(ctx: RunContext, parent: str | None, cell: Cell, name: str, params: dict[str, Any]) -> str | None:
    if not parent:
        return None
    return ctx.tracker.child_run(parent, name, _tags(cell), params)


def _tune(cell: Cell, ctx: RunContext, parent: str | None) -> tuple[dict[str, float], dict[str, Any]]:
    import optuna

    task = cell.task
    space = search_space(task)
    defaults = default_params(task)
    searched = {k: list(v) for k, v in space.items()}
    if cell.suite.trials == 0:  # no tuning: the task's defaults, and no study to open
        return defaults, {"trials_budget": 0, "trials_finished": 0, "best_params": defaults, "defaults": defaults,
                          "search_space": searched, "split": "none (not tuned)"}  # fmt: skip
    study = open_study(
        cell.id, ctx.storage, task.higher_is_better, sampler_key=f"{task.id}:{cell.suite.scale}", defaults=defaults
    )
    metric, speed = task.metric, task.speed_target(cell.config) is not None
    horizon = 1.0 if speed else TUNING_HORIZON  # a speed task's trial stops at its target or the best's steps
    config = tuning_config(cell.config, horizon)

    def objective(trial: Any, params: dict[str, float]) -> float:
        ctx.progress.start_fit(f"  trial {trial.number + 1}")
        run_id = _child(ctx, parent, cell, f"trial-{trial.number}", {**params, "trial": trial.number})
        status = "FAILED"
        try:
            result = _fit(cell, ctx, {**defaults, **params}, TUNING_SEED, run_id, test=False, config=config,
                          hooks=[pruning(trial, metric, speed)])  # fmt: skip
            status = "FINISHED"
        except Diverged as exc:  # these settings blow up: a bad candidate, not a broken cell
            trial.set_user_attr("steps", exc.step)
            raise optuna.TrialPruned(str(exc)) from exc
        finally:
            if run_id:
                ctx.tracker.finish(run_id, status if status == "FINISHED" else "KILLED")
        if metric not in result.val:
            raise RuntimeError(f"task {task.id!r} logged no val/{metric}; it logged {sorted(result.val)}")
        trial.set_user_attr("steps", result.steps)
        return result.val[metric]

    # the settings not searched stay at their defaults (`best` holds them: a final fit uses them)
    best = {**defaults, **tune(study, cell.suite.trials, space, objective, on_trial_end=ctx.progress.end_fit,
                               defaults=defaults)}  # fmt: skip
    info = {
        "sampler": "TPE, seeded per task (same candidates for every variant); trial 0 = defaults",
        "seed": TUNING_SEED,
        "pruner": "at the best trial's steps to the target" if speed else "successive halving at T/8, T/4, T/2",
        "horizon": horizon,  # a trial's steps, as a share of the cell's
        "trials_budget": cell.suite.trials,
        "trials_finished": finished_trials(study),
        "search_space": searched,
        "best_params": best,
        "best_value": best_value(study),
        "defaults": defaults,
        "study": study.study_name,
        "split": "validation",
        **trials_record(study, horizon),  # each trial, and the cost in full fits of the cell
    }
    return best, info


def _settings(cell: Cell, ctx: RunContext, parent: str | None) -> tuple[dict[str, float], dict[str, Any]]:
    """The cell's optimiser settings and how they were chosen: for a cell that trains as another with an
    ok result, that cell's (one model, one study); else its own stored tuning where it finished its
    trials (a clone of finished results has no Optuna storage); else its own study's (`_tune`)."""
    own = ctx.store.record(cell.id)
    if cell.suite.trials and matrix.recorded_trials(own) >= cell.suite.trials:
        return own["tuning"]["best_params"], own["tuning"]
    base = cell.trains_as
    record = ctx.store.record(base.id) if base else {}
    if base is None or record.get("status") != "ok":
        return _tune(cell, ctx, parent)
    return record["tuning"]["best_params"], {**record["tuning"], "settings_of": base.id}


#: a saved seed missing one (hand-edited) is fitted again; item scores are optional (seeds saved before them have none)
_FIT_FIELDS = {f.name for f in fields(FitResult)} - {"item_scores"}


def _seed_record(seed: int, params: dict[str, float], result: FitResult) -> dict[str, Any]:
    record = {"seed": seed, "params": params, **asdict(result)}
    if record["item_scores"] is None:  # a task without per-item accuracy writes no key, as older records have none
        del record["item_scores"]
    return record


def _done_seeds(cell: Cell, store: ResultStore) -> dict[int, dict[str, Any]]:
    """Final fits already done: the seeds of the cell's stored result (a cell extended with more seeds
    keeps them), and those saved since (`partial/`)."""
    stored = store.record(cell.id)
    kept = stored.get("per_seed", []) if stored.get("status") == "ok" else []
    return {**{s["seed"]: s for s in kept if isinstance(s, dict) and "seed" in s}, **store.seed_results(cell.id)}


def _final_fit(
    cell: Cell, ctx: RunContext, params: dict[str, float], seed: int, run_id: str | None, trained: dict[str, Any] | None
) -> dict[str, Any]:
    """One seed's final fit: evaluated on the fit of the cell it trains as (`trained`, that fit's record)
    where that fit's states are kept, else trained (keeping its states when a cell trains as this one)."""
    base = cell.trains_as
    if base and trained and (states := reuse.load_states(ctx.store, base.id, seed, params)):
        built = build(cell.task, cell.variant, cell.config, optim_config(params), seed, ctx.data_dir, _reference(cell))
        result = reuse.evaluate(built, ctx.data_dir, states, trained, cell.task.metric, precision=cell.config.precision)
        return {**_seed_record(seed, params, result), "fit": f"evaluated on {base.id}"}
    kept: reuse.States | None = {} if cell.keep_states else None
    result = _fit(cell, ctx, params, seed, run_id, test=True, keep_states=kept)
    if kept:
        reuse.save_states(ctx.store, cell.id, seed, params, kept)
    return {**_seed_record(seed, params, result), **({"fit": "trained (base state absent)"} if base else {})}


def _base_fits(cell: Cell, store: ResultStore, params: dict[str, float]) -> dict[int, dict[str, Any]]:
    """The final fits with `params` of the cell that `cell` trains as, by seed; {} when it trains as none."""
    if cell.trains_as is None:
        return {}
    return {seed: record for seed, record in _done_seeds(cell.trains_as, store).items() if record["params"] == params}


def _ended(exc: BaseException) -> str:
    """The MLflow status of a fit's run that `exc` cut short: FAILED where the fit broke, KILLED where its attempt
    was stopped (Ctrl-C) or superseded (a retry of the cell elsewhere holds it)."""
    return "KILLED" if isinstance(exc, Superseded) or not isinstance(exc, Exception) else "FAILED"


def _final_fits(cell: Cell, ctx: RunContext, parent: str | None, best: dict[str, float]) -> list[dict[str, Any]]:
    done = _done_seeds(cell, ctx.store)
    base_fits = _base_fits(cell, ctx.store, best)
    records = []
    for seed in cell.suite.seeds:
        if seed in done and done[seed]["params"] == best and set(done[seed]) >= _FIT_FIELDS:
            records.append(done[seed])
            ctx.progress.end_fit()
            continue
        ctx.progress.start_fit(f"  seed {seed}")
        run_id = _child(ctx, parent, cell, f"seed-{seed}", {**best, "seed": seed})
        try:
            record = _final_fit(cell, ctx, best, seed, run_id, base_fits.get(seed))
            ctx.store.write_seed(cell.id, record)  # saved before MLflow hears of it: MLflow cannot lose it
        except BaseException as exc:  # the fit failed, or this attempt was stopped or superseded: its run ends too
            if run_id:
                ctx.tracker.finish(run_id, _ended(exc))
            raise
        if run_id:
            ctx.tracker.log_metrics(run_id, {f"test/{k}": v for k, v in record["test"].items()})
            ctx.tracker.finish(run_id)
        records.append(record)
        ctx.progress.end_fit()
    return records


def _evaluated_on(cell: Cell, per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """For a cell that trains as another: that cell, and the fits it was scored on instead of training."""
    if cell.trains_as is None:
        return {}
    evaluated = sum(s.get("fit") == f"evaluated on {cell.trains_as.id}" for s in per_seed)
    return {"evaluated_on": cell.trains_as.id, "fits_saved": evaluated}


def _seed_design(cell: Cell) -> dict[str, Any] | None:
    """How the cell's seed count was chosen: the suite's adaptive looks over its seeds, or None (fixed)."""
    full = cell.suite.full
    if not full.looks:
        return None
    return {"looks": list(full.looks), "seeds": list(full.seeds), "baseline": full.baseline, "spending": SPENDING,
            "alpha": ALPHA}  # fmt: skip


def cost_figures(cell: Cell, per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Parameters, KV-cache bytes (derived, and measured by decoding where possible), speed, memory."""
    import torch

    from bench.measure.decoder import reference_decoder

    cfg, variant = cell.config, cell.variant
    context = cell.task.context_length(cfg)
    attn = cfg.attention
    declared = variant.cache_spec(attn)
    costs: dict[str, Any] = {
        "parameters": per_seed[0]["parameters"],
        "context_length": context,
        "n_layers": cfg.n_layers,
        "kv_dtype": "float16",
        "attention": {"n_heads": attn.n_heads, **cache_shape(variant, attn)},
        "kv_bytes_per_token_per_layer": declared.bytes_per_token_per_layer(torch.float16),
        "kv_bytes_per_token": declared.bytes(1, cfg.n_layers, torch.float16),
        "kv_bytes_at_context": declared.bytes(context, cfg.n_layers, torch.float16),
        "kv_bytes_long_context": {
            str(tokens): declared.bytes(tokens, cfg.n_layers, torch.float16) for tokens in LONG_CONTEXTS
        },
        "kv_measured": None,
        "examples_per_second": sum(s["examples_per_second"] for s in per_seed) / len(per_seed),
        "peak_memory_bytes": max(s["peak_memory_bytes"] for s in per_seed),  # measured per fit
        "peak_memory_growth_bytes": max(s.get("peak_memory_growth_bytes", 0) for s in per_seed),
        "train_seconds_per_fit": sum(s["train_seconds"] for s in per_seed) / len(per_seed),
        **flops(cell, per_seed, context),
    }
    if variant.supports.decoding and context * cfg.d_model * cfg.n_layers <= MEASURE_LIMIT:
        gpt = reference_decoder().config(
            vocab_size=256, context=context, n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads
        )
        check = measure_decoding(variant, gpt, context)
        costs["kv_measured"] = {
            "dtype": "float32",
            "tokens": context,
            "bytes_held": check.bytes_held,
            "bytes_derived": check.bytes_derived,
            "max_abs_logit_diff_vs_full_pass": check.max_abs_diff,
            "decode_tokens_per_second": check.tokens_per_second,  # batch 1, token by token from an empty cache
        }
    return costs


def flops(cell: Cell, per_seed: list[dict[str, Any]], context: int) -> dict[str, Any]:
    """Training FLOPs per token of the model as built (`training_flops_per_token`), and per fit: per token times
    the tokens a fit trained (its steps x batch x context, mean over the seeds)."""
    import torch

    cfg = cell.config
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        net = cell.task.build_model(cell.variant, cfg, optim_config(default_params(cell.task))).net
    n = non_embedding_parameters(net)
    per_token = training_flops_per_token(n, cfg.n_layers, cfg.n_heads, cfg.d_model // cfg.n_heads, context)
    steps = [s["steps"] for s in per_seed if s.get("steps")]
    tokens = sum(steps) / len(steps) * cfg.batch_size * context if steps else None
    return {"non_embedding_parameters": n, "train_flops_per_token": per_token,
            "train_flops_per_fit": per_token * tokens if tokens is not None else None}  # fmt: skip


def saved_fits(cell: Cell, store: ResultStore, storage: str) -> int:
    """The cell's fits that a run would not redo: its finished trials and its saved seeds."""
    from bench.run.summary import trials_done

    return trials_done(storage, [cell]).get(cell.id, 0) + len(store.seed_results(cell.id))


def run_cell(cell: Cell, ctx: RunContext) -> dict[str, Any]:
    """Tune, refit, measure and store one cell; a failure is stored as a failed cell, not raised.

    The cell is claimed first (`ResultStore.claim`): when another live run holds it, this one leaves it
    alone (status "busy", nothing written), so two runs on one results folder never run a cell twice.
    """
    with ctx.store.claim(cell.id) as mine:
        if not mine:
            ctx.progress.log(f"[yellow]{cell.label}: another run is working on this cell; left to it[/]")
            return {**base_record(cell), "status": "busy"}
        # before the work: an attempt that never returns counts too, unless the next one finds it saved fits
        ctx.store.start_attempt(cell.id, saved_fits(cell, ctx.store, ctx.storage))
        record = run_claimed(cell, ctx)
        ctx.store.end_attempt(cell.id, record["status"], record.get("reason", ""))
        close_left_runs(cell, ctx.tracker)
        return record


def close_left_runs(cell: Cell, tracker: Tracker) -> None:
    """End the MLflow runs of a cell still RUNNING once its attempt has ended, for a caller that still holds the
    cell, so no attempt at it is live: an attempt whose worker or node died left them."""
    why = f"its attempt at this cell ended without closing it (a worker or node lost); closed on {_here()}"
    tracker.end_left_running(cell.id, why)


def _same_na(store: ResultStore, record: dict[str, Any]) -> bool:
    """Whether the store already holds this n/a record, all but its date and provenance."""
    held = store.record(record["cell_id"])
    volatile = ("created_at", "provenance", "schema_version")
    return {k: v for k, v in held.items() if k not in volatile} == {
        k: v for k, v in record.items() if k not in volatile
    }


def _here() -> str:
    """This process, as a note in a run's tags names it."""
    return f"{socket.gethostname()} (pid {os.getpid()})"


def run_claimed(cell: Cell, ctx: RunContext) -> dict[str, Any]:
    """`run_cell`'s work, for a caller that holds the cell's claim and counts its attempts itself
    (the Ray driver: it claims, a node runs)."""
    record = base_record(cell)
    trivial = baselines.stored(cell.task, cell.config, ctx.store)
    if trivial is not None:
        record["baseline"] = trivial
    if cell.na_reason:
        record.update(status="n/a", reason=cell.na_reason)
        if not _same_na(ctx.store, record):  # a run that changes nothing writes nothing (no new date, no new sha)
            ctx.store.write_cell(record)
        return record
    noted = len(ctx.tracker.problems)
    parent = ctx.tracker.cell_run(cell.id, cell.label, _tags(cell))
    # the caller holds the cell (its claim, or its lease on a cluster): a fit's run an earlier attempt left
    # RUNNING died with that attempt (a killed worker, a lost node); it is closed before this one logs any
    ctx.tracker.end_left_running(cell.id, f"superseded by a retry of this cell on {_here()}", keep=parent)
    started = time.perf_counter()
    try:
        best, tuning = _settings(cell, ctx, parent)
        tuned = time.perf_counter()
        per_seed = _final_fits(cell, ctx, parent, best)
        metric = cell.task.metric
        record.update(
            status="ok",
            tuning=tuning,
            seeds=list(cell.suite.seeds),
            seed_design=_seed_design(cell),
            per_seed=per_seed,
            **_evaluated_on(cell, per_seed),
            summary={"metric": metric, **summarize([s["test"][metric] for s in per_seed]).as_dict()},
            costs=cost_figures(cell, per_seed),
            data_source=per_seed[0]["data_source"],
            timing={"tuning_seconds": tuned - started, "final_seconds": time.perf_counter() - tuned},
        )
    except Superseded:  # a newer run of the cell holds it: this one writes nothing more, not even a failure
        raise
    except Diverged as exc:  # reported as such, never ranked; the finished seeds stay in partial/
        record.update(status="diverged", reason=f"a final fit diverged: {exc}")
    except Exception as exc:  # one broken cell must not lose the others
        record.update(status="failed", reason=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=8))
    if parent:
        record["mlflow"] = {
            "tracking_uri": public_uri(ctx.tracker.uri, ctx.store.root),
            "experiment_id": ctx.tracker.experiment_id,
            "run_id": parent,
        }
    if ctx.tracker.problems[noted:]:  # what MLflow missed of this cell; the result stands
        record["mlflow_problems"] = ctx.tracker.problems[noted:]
    path = ctx.store.write_cell(record)
    if path.parent.name == "attempts":  # the cell already held a good result: it stays in force
        record["kept_ok_result"] = True
        ctx.progress.log(f"[yellow]{cell.label}: this attempt ended {record['status']}; the earlier ok result "
                         f"is kept, the attempt is in {path.relative_to(ctx.store.root)}[/]")  # fmt: skip
    if parent:
        ctx.tracker.log_artifact(parent, path)
        if record["status"] == "ok":
            ctx.tracker.log_metrics(parent, {f"test/{record['summary']['metric']}": record["summary"]["mean"]})
            source = record["data_source"]
            ctx.tracker.set_tags(parent, {"data_source": source["name"], "data_kind": source["kind"]})
        ctx.tracker.finish(parent, "FINISHED" if record["status"] == "ok" else "FAILED")
    return record
