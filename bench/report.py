"""Rich tables for the CLI: the variant list and the measured-cache check."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.costs import measure_decoding, parse_dtype, reduction_vs
from bench.registry import BUILTIN_DISTRIBUTION, Registry, variants

if TYPE_CHECKING:
    from bench_variants.base import AttentionConfig, VariantSpec


def make_console(stderr: bool = False) -> Console:
    """A console that keeps tables readable when output goes to a file or CI log."""
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=160)


def _config(heads: int, head_dim: int) -> AttentionConfig:
    from bench_variants.base import AttentionConfig

    if heads <= 0 or head_dim <= 0:
        raise ValueError(f"--heads and --head-dim must be positive, got {heads} and {head_dim}")
    return AttentionConfig(heads * head_dim, heads)


def _report_failures(registry: Registry, console: Console) -> None:
    for failure in registry.failures.values():
        console.print(f"[yellow]skipped:[/] {escape(str(failure))}")


def _neg_bytes(spec: VariantSpec, config: AttentionConfig) -> int:
    return 0 if spec.check(config) else -spec.bytes_per_token_per_layer(config)


def variants_table(heads: int, head_dim: int, layers: int, dtype_name: str) -> int:
    """Print every registered variant with its cache cost at a reference config."""
    dtype = parse_dtype(dtype_name)
    config = _config(heads, head_dim)
    registry = variants()
    baseline = registry.get("qkv")
    # the baseline first, then by cache size, largest first
    specs = dict(
        sorted(
            registry.all().items(),
            key=lambda kv: (kv[1] is not baseline, kv[1].check(config) is not None, _neg_bytes(kv[1], config), kv[0]),
        )
    )
    table = Table(
        title=f"Attention variants (H={heads}, d_head={head_dim}, {layers} layers, {dtype_name} cache)",
        caption="reduction: cache saved against QKV at this config; n/a: the variant cannot run it",
    )
    for col in ("id", "name", "tie", "KV heads", "B/token/layer", "KiB/token", "reduction", "version", "origin"):
        table.add_column(col, justify="right" if col in ("B/token/layer", "KiB/token", "reduction") else "left")
    for name, spec in specs.items():
        info = spec.describe()
        origin = registry.origin(name)
        origin = "built-in" if origin == BUILTIN_DISTRIBUTION else origin
        row = [name, spec.display_name, info.get("tie", "-")]
        reason = spec.check(config)
        if reason:
            row += ["n/a", "n/a", "n/a", "n/a"]
        else:
            layout = spec.cache_layout(config)
            per_layer = layout.bytes_per_token_per_layer(dtype)
            row += [
                str(layout.kv_heads),
                f"{per_layer:,}",
                f"{per_layer * layers / 1024:g}",
                f"{reduction_vs(spec, baseline, config) * 100:g}%",
            ]
        table.add_row(*(escape(str(c)) for c in [*row, spec.version, origin]))
    console = make_console()
    console.print(table)
    _report_failures(registry, console)
    return 0


def cache_table(names: list[str] | None, heads: int, head_dim: int, layers: int, tokens: int) -> int:
    """Decode through a real cache for each variant; compare bytes held with the derived formula."""
    from bench_tasks.backbones.gpt import GPTConfig

    if tokens <= 0 or layers <= 0:
        raise ValueError(f"--tokens and --layers must be positive, got {tokens} and {layers}")
    config = GPTConfig(vocab_size=256, context=tokens, n_layers=layers, d_model=heads * head_dim, n_heads=heads)
    registry = variants()
    specs = registry.resolve(names) if names else list(registry.all().values())
    table = Table(title=f"Measured KV cache, fp32, {tokens} tokens, H={heads}, d_head={head_dim}, {layers} layers")
    for col in ("id", "name", "bytes held", "bytes derived", "match", "max |logit diff| vs full pass"):
        table.add_column(col, justify="left" if col in ("id", "name") else "right")
    failed = 0
    console = make_console()
    with console.status("decoding") as status:
        for spec in specs:
            status.update(f"decoding {spec.id}")
            reason = spec.check(config.block.attention)
            if reason or not spec.supports.decoding:
                why = reason or "no incremental decoding (declared)"
                table.add_row(escape(spec.id), escape(spec.display_name), "n/a", "n/a", "-", escape(why))
                continue
            try:
                result = measure_decoding(spec, config, tokens)
            except Exception as exc:  # one broken plugin is reported by name; the others are still measured
                failed += 1
                why = escape(f"{type(exc).__name__}: {exc}")
                table.add_row(escape(spec.id), escape(spec.display_name), "-", "-", "[red]NO[/]", why)
                continue
            ok = result.bytes_match and result.max_abs_diff <= 1e-5
            failed += not ok
            table.add_row(
                escape(spec.id),
                escape(spec.display_name),
                f"{result.bytes_held:,}",
                f"{result.bytes_derived:,}",
                "yes" if ok else "[red]NO[/]",
                f"{result.max_abs_diff:.2e}",
            )
    console.print(table)
    _report_failures(registry, console)
    return 1 if failed else 0


def tasks_table(data_dir: Path) -> int:
    """Print every registered task with its metric, direction and the data source it runs on."""
    from bench.data import recorded_sources
    from bench.registry import tasks

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
    from bench.data import prepare_tasks
    from bench.registry import tasks

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
