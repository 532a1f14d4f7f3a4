"""Training FLOPs per token: the standard count on a model whose parameters are known by hand."""

from __future__ import annotations

from typing import Any

from bench.measure.costs import non_embedding_parameters, training_flops_per_token
from bench.registry import variants
from bench_tasks.backbones.gpt import GPT, GPTConfig


def test_the_count_leaves_out_the_embedding_tables_and_counts_a_tied_head_once() -> None:
    vocab, context, d, layers, heads = 257, 32, 16, 2, 4
    net = GPT(GPTConfig(vocab, context, layers, d, heads), variants().get("qkv"))
    total = sum(p.numel() for p in net.parameters())
    # token and position tables out; the head is the token table's transpose (tied): no parameters of its own
    assert non_embedding_parameters(net) == total - vocab * d - context * d
    # per block: q, k, v, o (d x d + d each), an MLP of 4d (d x 4d + 4d, 4d x d + d), two LayerNorms (2d each)
    block = 4 * (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d) + 2 * 2 * d
    assert non_embedding_parameters(net) == layers * block + 2 * d  # and the final LayerNorm


def test_flops_per_token_are_six_n_plus_the_attention_term() -> None:
    found = training_flops_per_token(1000, n_layers=2, n_heads=4, head_dim=16, context=128)
    assert found == 6 * 1000 + 12 * 2 * 4 * 16 * 128


def test_a_cell_records_its_flops_from_the_model_as_built() -> None:
    from bench.plan.matrix import expand, resolve_variants
    from bench.plan.suites import smoke
    from bench.registry import tasks
    from bench.run.cells import flops

    suite = smoke().override(tasks=("reverse",), variants=("qkv", "tied-kv"))
    cells = expand(suite, [tasks().get("reverse")], resolve_variants(suite, variants()))
    found: dict[str, Any] = {c.variant.id: flops(c, [{"steps": 10}, {"steps": 30}], 16) for c in cells}
    assert found["tied-kv"]["non_embedding_parameters"] < found["qkv"]["non_embedding_parameters"]  # one fewer map
    qkv = found["qkv"]
    assert qkv["train_flops_per_fit"] == qkv["train_flops_per_token"] * 20 * cells[0].config.batch_size * 16
    assert qkv["train_flops_per_token"] > 6 * qkv["non_embedding_parameters"]
