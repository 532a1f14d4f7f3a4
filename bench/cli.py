"""The `bench` command line. Heavy imports (torch, lightning, mlflow) happen inside the commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from bench import __version__


def _add_shape_options(parser: argparse.ArgumentParser, heads: int, head_dim: int, layers: int, dtype: str) -> None:
    parser.add_argument("--heads", type=int, default=heads, help=f"query heads H (default {heads})")
    parser.add_argument("--head-dim", type=int, default=head_dim, help=f"d_head (default {head_dim})")
    parser.add_argument("--layers", type=int, default=layers, help=f"layers (default {layers})")
    parser.add_argument("--dtype", default=dtype, help=f"cache dtype: fp16, bf16 or fp32 (default {dtype})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench",
        description="Benchmark attention variants: quality, perplexity and KV-cache bytes.",
    )
    parser.add_argument("--version", action="version", version=f"bench {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    lister = commands.add_parser("list", help="list registered variants with their cache cost")
    lister.add_argument("what", nargs="?", default="variants", choices=["variants"], help="what to list")
    _add_shape_options(lister, heads=16, head_dim=64, layers=20, dtype="fp16")
    lister.set_defaults(handler=_cmd_list)

    cache = commands.add_parser(
        "cache", help="measure KV-cache bytes by decoding through a real cache, against the derived figure"
    )
    cache.add_argument("--variants", default="all", help="comma-separated ids or display names (default: all)")
    cache.add_argument("--tokens", type=int, default=64, help="tokens to decode (default 64)")
    _add_shape_options(cache, heads=8, head_dim=16, layers=4, dtype="fp32")
    cache.set_defaults(handler=_cmd_cache)
    return parser


def _cmd_list(args: argparse.Namespace) -> int:
    from bench.report import variants_table

    return variants_table(args.heads, args.head_dim, args.layers, args.dtype)


def _cmd_cache(args: argparse.Namespace) -> int:
    from bench.report import cache_table

    names = None if args.variants == "all" else [n for n in args.variants.split(",") if n.strip()]
    return cache_table(names, args.heads, args.head_dim, args.layers, args.tokens)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `bench` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    try:
        return handler(args)
    except (KeyError, ValueError, ImportError) as exc:  # user-facing errors: message, no traceback
        from rich.markup import escape

        from bench.report import make_console

        make_console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
