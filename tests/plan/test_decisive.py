"""What makes results decide: no duplicate cells, paired initial values, disjoint tuning seeds, task defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from bench.fit.train import share_initial_values
from bench.fit.tuning import TUNING_SEED, default_params
from bench.plan import matrix
from bench.plan.suites import default, smoke
from bench.plan.validate import check_run_inputs
from bench.registry import tasks, variants
from bench.run.pipeline import RunOptions, plan
from bench_tasks.base import OptimConfig
from tests.nan_attention import BlowsUp


def _options(tmp_path: Path) -> RunOptions:
    return RunOptions(results=tmp_path / "results", data_dir=tmp_path / "data")


def test_variants_that_coincide_at_a_config_are_na_not_run(tmp_path: Path) -> None:
    suite = smoke().override(tasks=("reverse",), variants=("qkv", "gqa4", "tied-kv", "tied-kv-gqa4", "mqa", "gqa8"))
    task = tasks().get("reverse")
    at_h4 = dataclasses.replace(task.config("smoke"), n_heads=4, d_model=64)
    cells = matrix.expand(suite, [task], matrix.resolve_variants(suite, variants()))
    assert {c.variant.id for c in cells if not c.na_reason} >= {"qkv", "tied-kv"}
    specs = matrix.resolve_variants(suite, variants())
    seen: dict[tuple[object, ...], object] = {}
    reasons = {s.id: matrix._duplicate_of(s, at_h4, seen) for s in specs}  # type: ignore[arg-type]
    assert reasons["qkv"] is None and reasons["tied-kv"] is None and reasons["mqa"] is None
    assert reasons["gqa4"] == "coincides with QKV (qkv) at H=4 (4 KV heads = 4 query heads); not run"
    assert reasons["tied-kv-gqa4"] is not None and "Q-K=V (tied-kv)" in reasons["tied-kv-gqa4"]


def test_default_suite_runs_every_family_without_duplicates(tmp_path: Path) -> None:
    suite = default()
    assert len(suite.seeds) >= 5 and TUNING_SEED not in suite.seeds and suite.looks[-1] == len(suite.seeds)
    cells = plan(suite, _options(tmp_path))
    # every family; Fashion-MNIST is left out with its reason (`DEFAULT_TASKS`), MNIST stands for the digits
    assert {c.task.id for c in cells} == {t.id for t in tasks().all().values()} - {"fashion-mnist"}
    assert {c.task.family for c in cells} == {t.family for t in tasks().all().values()}
    for task_id in {c.task.id for c in cells}:
        runnable = [c for c in cells if c.task.id == task_id and not c.na_reason]
        mechanisms = [c.variant.mechanism(c.config.attention) for c in runnable]
        assert len(mechanisms) == len(set(mechanisms)), f"{task_id} runs one computation twice"


@pytest.mark.parametrize("task_id", ["reverse", "mnist", "lm", "mvtec", "set-anomaly"])
def test_every_variant_starts_from_the_baselines_values(task_id: str) -> None:
    task = tasks().get(task_id)
    config = task.config("smoke")

    def built(variant_id: str, seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        net = task.build_model(variants().get(variant_id), config, OptimConfig()).net
        if variant_id != "qkv":
            torch.manual_seed(seed)
            reference = task.build_model(variants().get("qkv"), config, OptimConfig()).net
            assert share_initial_values(net, reference) > 4
        return dict(net.named_parameters())

    qkv, tied, mqa = built("qkv", 3), built("tied-kv", 3), built("mqa", 3)
    shared = [n for n in qkv if n in tied and qkv[n].shape == tied[n].shape]
    assert len(shared) > 4 and all(torch.equal(qkv[n], tied[n]) for n in shared)
    assert all(torch.equal(qkv[n], mqa[n]) for n in qkv if n in mqa and qkv[n].shape == mqa[n].shape)
    assert any(qkv[n].shape != tied[n].shape for n in qkv if n in tied)  # the tied projection is its own
    other_seed = built("qkv", 4)
    assert any(not torch.equal(other_seed[n], qkv[n]) for n in shared)


def test_fit_shares_initial_values_and_keeps_the_models_own_init(tmp_path: Path) -> None:
    task = tasks().get("lm")  # GPT-2's own init (N(0, 0.02), tied head) must survive the sharing
    torch.manual_seed(0)
    net = task.build_model(variants().get("tied-kv"), task.config("smoke"), OptimConfig()).net
    torch.manual_seed(0)
    reference = task.build_model(variants().get("qkv"), task.config("smoke"), OptimConfig()).net
    share_initial_values(net, reference)
    assert float(net.tok_emb.weight.detach().std()) == pytest.approx(0.02, rel=0.2)


def test_test_seeds_must_not_reach_the_tuning_seed(tmp_path: Path) -> None:
    suite = smoke().override(seeds=(0, TUNING_SEED))
    with pytest.raises(ValueError, match="test seeds must lie in"):
        check_run_inputs(suite, _options(tmp_path), "sqlite://")


def test_task_defaults_override_the_shared_ones() -> None:
    sub, reverse = tasks().get("sub"), tasks().get("reverse")
    assert default_params(sub)["lr"] == 1e-3
    assert default_params(reverse)["lr"] == 3e-3
    cell_sub = matrix.cell_id(sub, variants().get("qkv"), sub.config("default"))
    changed = type(sub)("sub", sub.config("default"), lr=2e-3)
    assert matrix.cell_id(changed, variants().get("qkv"), sub.config("default")) != cell_sub


def test_a_fit_whose_loss_turns_nan_ends_as_diverged(tmp_path: Path) -> None:
    from bench.fit.train import Diverged, fit
    from bench_variants.base import replace

    qkv = variants().get("qkv")

    class NaNVariant(type(qkv)):  # type: ignore[misc]
        def build(self, config: object) -> torch.nn.Module:  # type: ignore[override]
            return BlowsUp(super().build(config))  # type: ignore[arg-type]

    spec = NaNVariant(**{f.name: getattr(qkv, f.name) for f in dataclasses.fields(qkv)})
    spec = replace(spec, id="nan-after-2-steps")
    task = tasks().get("reverse")
    with pytest.raises(Diverged, match="training loss became nan at step"):
        fit(task, spec, task.config("smoke"), OptimConfig(), seed=0, data_dir=tmp_path)


def test_result_files_never_hold_nan(tmp_path: Path) -> None:
    import json

    from bench.record.store import write_json_atomic

    write_json_atomic(tmp_path / "x.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": 2.5}})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None, "b": [1.0, None], "c": {"d": 2.5}}


def test_no_tuning_runs_the_task_defaults_without_a_study(tmp_path: Path) -> None:
    import json

    from bench.run.pipeline import run

    suite = smoke().override(tasks=("sub",), variants=("qkv", "gqa4"), trials=0, seeds=(0, 1))
    options = RunOptions(results=tmp_path / "results", data_dir=tmp_path / "data", tracking_uri="none")
    assert run(suite, options) == 0
    records = {
        r["variant"]["id"]: r for r in (json.loads(p.read_text()) for p in (tmp_path / "results/cells").glob("*.json"))
    }
    tuning = records["qkv"]["tuning"]
    assert tuning["trials_budget"] == 0 and tuning["best_params"] == default_params(tasks().get("sub"))
    assert [s["params"] for s in records["qkv"]["per_seed"]] == [tuning["best_params"]] * 2
    assert records["qkv"]["baseline"]["name"] and records["qkv"]["baseline"]["learn_margin"] == 0.10
    assert records["gqa4"]["status"] == "n/a"  # smoke has 2 heads: 4 KV heads cannot be shared


def test_ablations_run_in_their_own_suite_only() -> None:
    from bench.plan.matrix import resolve_variants
    from bench.plan.suites import get_suite
    from bench.registry import variants as variant_registry

    registry = variant_registry()
    in_default = {v.id for v in resolve_variants(get_suite("default"), registry)}
    ablations = {v.id for v in registry.all().values() if v.ablates()}
    assert ablations == {"tied-qk-pos-fixed-scale", "tied-qk-pos-no-bias", "tied-qkv-pos-fixed-scale",
                         "tied-qkv-pos-no-bias", "tied-qk-rel", "tied-qkv-rel"}  # fmt: skip
    assert not in_default & ablations and {"tied-qk-pos", "tied-qkv-pos"} <= in_default
    in_ablation = {v.id for v in resolve_variants(get_suite("plus-ablation"), registry)}
    assert ablations <= in_ablation and {registry.get(a).ablates() for a in ablations} <= in_ablation
