"""`bench check-variant` (the conformance gate) and `bench cache` / `bench list` going on past a broken variant."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from bench.cli import main
from bench.measure.conformance import SKIP, run_checks

#: a handful of built-ins covering the grid's corners (run time: each about a few seconds)
BUILTINS = ["qkv", "tied-kv", "mqa", "tied-qk-pos"]

LIAR = '''
"""A variant that declares twice the cache bytes it holds."""
import dataclasses

from bench_variants.presets import QKV


@dataclasses.dataclass(frozen=True)
class Liar(type(QKV)):
    def kv_cache_bytes(self, config, n_layers, n_tokens, dtype=None, batch_size=1):
        return 2 * super().kv_cache_bytes(config, n_layers, n_tokens, dtype, batch_size)


LIAR = dataclasses.replace(QKV, id="liar", display_name="Liar")
LIAR = Liar(**{f.name: getattr(LIAR, f.name) for f in dataclasses.fields(LIAR)})
'''


NAN = '''
"""A variant whose outputs are NaN whatever its input: no NaN may read as "moved by less than the tolerance"."""
import dataclasses

from bench_variants.presets import QKV


class _Nan(type(QKV.build(QKV_CONFIG))):
    def forward(self, x, **kw):
        return super().forward(x, **kw) * float("nan")


@dataclasses.dataclass(frozen=True)
class Nan(type(QKV)):
    def build(self, config):
        module = super().build(config)
        module.__class__ = _Nan
        return module


NAN = Nan(**{f.name: getattr(QKV, f.name) for f in dataclasses.fields(QKV)} | {"id": "nan", "display_name": "NaN"})
'''.replace("QKV_CONFIG", "__import__('bench_variants.base').base.AttentionConfig(8, 2)")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, " ".join((out.out + out.err).split())


@pytest.fixture
def liar_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "liar_variant.py").write_text(textwrap.dedent(LIAR))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "liar_variant", raising=False)
    monkeypatch.setenv("COLUMNS", "300")
    return "liar_variant:LIAR"


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_variants_pass(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _run(["check-variant", name], capsys)
    assert code == 0, text
    assert "all applicable checks passed" in text and "FAIL" not in text


def test_nan_outputs_fail_every_check_that_compares_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "nan_variant.py").write_text(textwrap.dedent(NAN))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("COLUMNS", "300")
    code, text = _run(["check-variant", "nan_variant:NAN"], capsys)
    assert code == 1
    assert "4 check(s) failed: masks, causality, decoding = full pass, no NaN over a short fit" in text


def test_a_lying_cache_fails_exactly_the_bytes_check(liar_module: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _run(["check-variant", liar_module], capsys)
    assert code == 1
    assert "1 check(s) failed: declared bytes = held bytes" in text  # that one and no other
    assert "declares 20,480 B (kv_cache_bytes, from cache_spec) but its cache holds 10,240 B" in text
    for check in ("construction", "shapes", "masks", "causality", "decoding = full pass", "no NaN over a short fit"):
        assert f"│ {check} │ pass │" in text  # the other rows are still shown, and pass
    assert "│ speed vs SDPA │ info │" in text


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("no_such_module_xyz:THING", "cannot import 'no_such_module_xyz'"),
        ("bench_variants.presets:NOPE", "has no object 'NOPE'"),
        ("bench_variants.presets:dataclasses", "not a VariantSpec"),
        ("qvk", "did you mean 'qkv'"),
    ],
)
def test_a_bad_target_is_a_clear_error(path: str, words: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _run(["check-variant", path], capsys)
    assert code == 2 and "Traceback" not in text
    assert words in text and path.split(":")[0] in text
    if ":" in path:
        assert "my_pkg.variant:MY_VARIANT" in text  # the fix


def test_declared_without_decoding_is_skipped_with_why() -> None:
    import dataclasses

    from bench_variants.base import Supports
    from bench_variants.presets import QKV

    kind = type("NoDecode", (type(QKV),), {"supports": property(lambda self: Supports(decoding=False))})
    spec = kind(**{f.name: getattr(QKV, f.name) for f in dataclasses.fields(QKV)})
    results = {r.check: r for r in run_checks(spec)}
    assert results["decoding = full pass"].status == SKIP
    assert "no incremental decoding" in results["declared bytes = held bytes"].detail


def _install(monkeypatch: pytest.MonkeyPatch, **objects: object) -> None:
    """Register `objects` as variant entry points beside the built-ins, as an installed plugin would."""
    import types
    from importlib.metadata import EntryPoint

    import bench.registry as registry

    module = types.ModuleType("broken_plugins_for_test")
    for i, obj in enumerate(objects.values()):
        setattr(module, f"OBJ{i}", obj)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    extra = [EntryPoint(n, f"{module.__name__}:OBJ{i}", registry.VARIANTS_GROUP) for i, n in enumerate(objects)]
    real = registry.entry_points

    def entry_points(group: str) -> list[EntryPoint]:
        return [*real(group=group), *(extra if group == registry.VARIANTS_GROUP else [])]

    monkeypatch.setattr(registry, "entry_points", entry_points)


def _raising_variant(vid: str) -> object:
    """A QKV copy whose `check` raises: every command that looks at it meets the error."""
    import dataclasses

    from bench_variants.presets import QKV

    def check(self: object, config: object) -> str | None:
        raise RuntimeError("this plugin is broken")

    kind = type("Broken", (type(QKV),), {"check": check})
    return kind(**{**{f.name: getattr(QKV, f.name) for f in dataclasses.fields(QKV)}, "id": vid})


def test_cache_names_a_broken_variant_and_measures_the_others(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _install(monkeypatch, broken=_raising_variant("broken"), gone=None)
    monkeypatch.setenv("COLUMNS", "300")
    argv = ["cache", "--variants", "qkv,broken,gone,mqa", "--tokens", "4", "--layers", "1"]
    code, text = _run(argv, capsys)
    assert code == 1
    assert "this plugin is broken" in text and "not a VariantSpec" in text
    assert text.count(" yes ") == 2  # qkv and mqa still measured


def test_list_names_a_broken_variant_and_lists_the_others(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _install(monkeypatch, broken=_raising_variant("broken"))
    monkeypatch.setenv("COLUMNS", "300")
    code, text = _run(["list", "variants"], capsys)
    assert code == 1
    assert "broken: variant broken: RuntimeError: this plugin is broken" in text
    assert "tied-kv-mqa" in text and "built-in" in text
