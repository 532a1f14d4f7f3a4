"""Rich tables for the CLI: the variant list and the measured-cache check."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.console import make_console
from bench.measure.costs import measure_decoding, parse_dtype, reduction_vs
from bench.registry import BUILTIN_DISTRIBUTION, Registry, variants
from bench_record.compare import BASELINE

if TYPE_CHECKING:
    from bench.measure.conformance import CheckResult
    from bench.measure.decoder import DecoderConfig
    from bench_variants.base import AttentionConfig, VariantSpec


def _config(heads: int, head_dim: int) -> AttentionConfig:
    from bench_variants.base import AttentionConfig

    if heads <= 0 or head_dim <= 0:
        raise ValueError(f"--heads and --head-dim must be positive, got {heads} and {head_dim}")
    return AttentionConfig(heads * head_dim, heads)


def _report_failures(registry: Registry, console: Console, shown: frozenset[str] = frozenset()) -> None:
    for name, failure in registry.failures.items():
        if name in shown:  # already a row of the table
            continue
        console.print(f"[yellow]skipped:[/] {escape(str(failure))}")


def _neg_bytes(spec: VariantSpec, config: AttentionConfig) -> int | float:
    return 0 if spec.check(config) else -spec.bytes_per_token_per_layer(config)


LONG_CONTEXT = 32_768  # tokens: where a bounded or shared cache shows its worth


def _cache_row(spec: VariantSpec, config: AttentionConfig, baseline: VariantSpec, dtype: Any, layers: int) -> list[str]:
    """The cost columns of one variant at `config` (n/a when it cannot run it)."""
    if spec.check(config):
        return ["n/a"] * 5
    declared = spec.cache_spec(config)
    return [
        declared.formula or "-",
        f"{declared.bytes_per_token_per_layer(dtype):,}",
        f"{declared.bytes(1, layers, dtype) / 1024:g}",
        f"{declared.bytes(LONG_CONTEXT, layers, dtype) / 2**20:,.4g}",
        f"{reduction_vs(spec, baseline, config) * 100:g}%",
    ]


def _broken(name: str, exc: Exception) -> str:
    return f"[red]broken:[/] variant {escape(name)}: {escape(f'{type(exc).__name__}: {exc}')}"


def variants_table(heads: int, head_dim: int, layers: int, dtype_name: str) -> int:
    """Print every registered variant with its cache cost at a reference config.

    A variant that raises while describing itself is named below the table with its error, and the
    exit status is 1; the others are listed all the same.
    """
    dtype = parse_dtype(dtype_name)
    config = _config(heads, head_dim)
    registry = variants()
    baseline = registry.get(BASELINE)
    rows: dict[str, tuple[tuple[Any, ...], list[str]]] = {}
    broken: list[str] = []
    references: list[str] = []
    for name, spec in registry.all().items():
        try:
            origin = registry.origin(name)
            origin = "built-in" if origin == BUILTIN_DISTRIBUTION else origin
            row = [name, spec.display_name, *_cache_row(spec, config, baseline, dtype, layers), spec.version, origin]
            if spec.reference:
                references.append(f"{escape(name)}: {escape(spec.reference)}")
            # the baseline first, then by cache size, largest first
            key = (spec is not baseline, spec.check(config) is not None, _neg_bytes(spec, config), name)
        except Exception as exc:  # one broken plugin is named; the others are still listed
            broken.append(_broken(name, exc))
            continue
        rows[name] = (key, row)
    table = Table(
        title=f"Attention variants (H={heads}, d_head={head_dim}, {layers} layers, {dtype_name} cache)",
        caption="cache: per token per layer, b = bytes per element; reduction: per token against QKV at this "
        "config; n/a: the variant cannot run it",
    )
    numbers = ("B/token/layer", "KiB/token", "MiB @ 32k", "reduction")
    for col in ("id", "name", "cache", *numbers, "version", "origin"):
        table.add_column(col, justify="right" if col in numbers else "left")
    for _, row in sorted(rows.values(), key=lambda kr: kr[0]):
        table.add_row(*(escape(str(c)) for c in row))
    console = make_console()
    console.print(table)
    console.print("References:\n  " + "\n  ".join(references))
    for line in broken:
        console.print(line)
    _report_failures(registry, console)
    return 1 if broken else 0


def _resolve_each(registry: Registry, names: list[str] | None) -> list[tuple[str, Any]]:
    """(name, spec) of each variant asked for, or (name, the ImportError) of a plugin that fails to load.

    An unknown name is still an error (a typo, with did-you-mean): nothing is measured.
    """
    out: list[tuple[str, Any]] = []
    for name in names or registry.names():
        try:
            spec = registry.get(name)
        except ImportError as exc:
            out.append((name, exc))
            continue
        if all(spec is not s for _, s in out):
            out.append((name, spec))
    return out


def _decode_row(spec: VariantSpec, config: DecoderConfig, tokens: int) -> tuple[list[str], bool]:
    """The table row of one variant and whether it passed (n/a counts as passed)."""
    reason = spec.check(config.attention)
    if reason or not spec.supports.decoding:
        why = reason or "no incremental decoding (declared)"
        return [escape(spec.id), escape(spec.display_name), "n/a", "n/a", "-", escape(why)], True
    result = measure_decoding(spec, config, tokens)
    ok = result.bytes_match and result.max_abs_diff <= spec.decode_atol
    cells = [f"{result.bytes_held:,}", f"{result.bytes_derived:,}", "yes" if ok else "[red]NO[/]"]
    return [escape(spec.id), escape(spec.display_name), *cells, f"{result.max_abs_diff:.2e}"], ok


def cache_table(names: list[str] | None, heads: int, head_dim: int, layers: int, tokens: int) -> int:
    """Decode through a real cache for each variant; compare bytes held with the derived formula.

    A variant that fails to load or raises is a row of its own, named with its error; the others are
    measured all the same, and the exit status is 1.
    """
    from bench.measure.decoder import reference_decoder

    if tokens <= 0 or layers <= 0:
        raise ValueError(f"--tokens and --layers must be positive, got {tokens} and {layers}")
    config = reference_decoder().config(
        vocab_size=256, context=tokens, n_layers=layers, d_model=heads * head_dim, n_heads=heads
    )
    registry = variants()
    table = Table(title=f"Measured KV cache, fp32, {tokens} tokens, H={heads}, d_head={head_dim}, {layers} layers")
    for col in ("id", "name", "bytes held", "bytes derived", "match", "max |logit diff| vs full pass"):
        table.add_column(col, justify="left" if col in ("id", "name") else "right")
    failed = 0
    console = make_console()
    selected = _resolve_each(registry, names)
    with console.status("decoding") as status:
        for name, spec in selected:
            status.update(f"decoding {name}")
            try:
                if isinstance(spec, Exception):
                    raise spec
                row, ok = _decode_row(spec, config, tokens)
            except Exception as exc:  # one broken plugin is reported by name; the others are still measured
                failed += 1
                why = escape(f"{type(exc).__name__}: {exc}")
                table.add_row(
                    escape(name), escape(str(getattr(spec, "display_name", "?"))), "-", "-", "[red]NO[/]", why
                )
                continue
            failed += not ok
            table.add_row(*row)
    console.print(table)
    _report_failures(registry, console, frozenset(name for name, _ in selected))
    return 1 if failed else 0


def check_variant_report(target: str) -> int:
    """Run the conformance checks against one variant (registry name or `module:object`); 1 if any failed."""
    from bench.measure.conformance import load_target, run_checks

    spec = load_target(target)
    console = make_console()
    with console.status(f"checking {spec.id}"):
        results = run_checks(spec)
    return conformance_table(spec, target, results, console)


def conformance_table(spec: VariantSpec, target: str, results: list[CheckResult], console: Console) -> int:
    """Print the conformance checks' `results` for `spec` (named `target` on the command line); 1 if any failed."""
    from bench.measure.conformance import FAIL, PASS, SKIP

    style = {PASS: "[green]pass[/]", FAIL: "[bold red]FAIL[/]", SKIP: "[yellow]skipped[/]"}
    table = Table(title=f"Conformance of variant {escape(spec.id)} ({escape(spec.display_name)}, {escape(target)})")
    for col in ("check", "result", "detail"):
        table.add_column(col)
    for r in results:
        table.add_row(escape(r.check), style.get(r.status, "[dim]info[/]"), escape(r.detail))
    console.print(table)
    failed = [r.check for r in results if r.status == FAIL]
    if failed:
        console.print(f"[bold red]{len(failed)} check(s) failed:[/] {escape(', '.join(failed))}")
    else:
        console.print("[green]all applicable checks passed[/]")
    return 1 if failed else 0


def tasks_table(data_dir: Path) -> int:
    """Print every registered task with its metric, direction and the data source it runs on."""
    from bench.registry import tasks
    from bench.run.data import recorded_sources

    registry = tasks()
    sources = recorded_sources(data_dir)
    table = Table(title=f"Tasks (data: {data_dir})", caption="source: as recorded by `bench data prepare`")
    for col in ("id", "family", "metric", "direction", "causal", "version", "data source", "kind", "origin"):
        table.add_column(col)
    for name, task in registry.all().items():
        source = sources.get(name)
        origin = registry.origin(name)
        table.add_row(
            escape(name),
            escape(task.family),
            escape(task.metric),
            "higher is better" if task.higher_is_better else "lower is better",
            "yes" if task.causal else "no",
            escape(task.version),
            escape(source["name"]) if source else "[dim]not prepared: run `bench data prepare`[/]",
            escape(source["kind"]) if source else "",
            "built-in" if origin == BUILTIN_DISTRIBUTION else escape(origin),
        )
    console = make_console()
    console.print(table)
    _report_failures(registry, console)
    return 0


def prepare_report(names: list[str] | None, data_dir: Path) -> int:
    """Prepare the data of the named tasks (all by default) and print what each one will run on."""
    from bench.registry import tasks
    from bench.run.data import prepare_tasks

    registry = tasks()
    selected = registry.resolve(names) if names else list(registry.all().values())
    outcomes = prepare_tasks(selected, data_dir)
    table = Table(title=f"Data prepared in {data_dir}")
    for col in ("task", "status", "source", "kind", "origin / problem"):
        table.add_column(col)
    for o in outcomes:
        if o.source:
            table.add_row(escape(o.task), "[green]ready[/]", escape(o.source["name"]), escape(o.source["kind"]),
                          escape(o.source["origin"]))  # fmt: skip
        else:
            table.add_row(escape(o.task), "[red]failed[/]", "", "", escape(o.error or ""))
    console = make_console()
    console.print(table)
    _report_failures(registry, console)
    return 1 if any(o.error for o in outcomes) else 0


def convergence_table(record: dict[str, Any], console: Console) -> None:
    """A convergence record (`bench converge`): each variant's plateau, its last quarter's movement and its
    steps to the target; then what the task measures and why."""
    target = record["target"]
    table = Table(title=f"{record['task']}: {record['run']['steps']} steps, seed {record['run']['seed']}, "
                        f"validation {target['metric']} (target {target['target']})")  # fmt: skip
    for column in ("variant", "plateau", "moved (last quarter)", "steps to target"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for variant, run in record["variants"].items():
        steps = run["steps_to_target"]
        table.add_row(variant, f"{run['plateau']:.4f}", f"{run['last_quarter_moved']:.4f}",
                      "never" if steps is None else str(steps))  # fmt: skip
    console.print(table)
    verdict = record["verdict"]
    console.print(f"measures [bold]{verdict['measures']}[/]: {escape(verdict['reason'])}", highlight=False)
