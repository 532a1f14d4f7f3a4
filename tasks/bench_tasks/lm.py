"""Causal language modelling (the study's section 3): a GPT-2-style decoder around any variant.

Each split is one document: end-of-text, then the split's tokens, cut into disjoint windows of
`context` inputs. Window i reads tokens [iC, iC + C) of that stream and predicts the next token at
every position, so every token of the text is predicted exactly once; the last, short window is
padded with end-of-text and its padding is masked out of the loss (the study's code scored padding).

Metrics: `loss` (mean token NLL in nats), `perplexity` = exp(loss) and `bits_per_byte` = total NLL
in bits / UTF-8 bytes of the scored text, and the perplexity of the targets at each bucket of positions in
the window (`perplexity@1-16`, `@17-64`, `@65-128`: a target at position p has p tokens of context), where
what a sliding window or a shared cache costs at long range shows.

The bar a model must clear is the count trigram counted on as many training tokens as a fit reads, the windows
test seed 0 reads (budget-matched); the budget-matched bigram and 4-gram, and all three counted on the whole
training split, are shown beside it.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from bench_variants.base import VariantSpec

from . import baselines
from .backbones.gpt import GPT, GPTConfig, lm_loss
from .base import Baseline, DataSource, OptimConfig, Scale, Task, TaskConfig
from .datamodule import SplitDataModule, split_tensors
from .module import Sums, TaskModule
from .text import SPLITS, Tokenizer, make_tokenizer, prepare_corpus, read_split

DEFAULT_CORPUS = "kjv"


@dataclass(frozen=True)
class LMConfig(TaskConfig):
    context: int = 128
    corpus: str = DEFAULT_CORPUS  # "kjv", "wiki" (offline) or "wikitext-2" (needs BENCH_DOWNLOAD=1)
    tokenizer: str = "bytes"  # "bytes" or "gpt2"
    vocab_multiple: int = 1  # embedding rows rounded up to this (the study: 50,257 -> 50,304 with 64)
    eval_windows: int = 0  # val/test windows scored, evenly spaced over each split (0: all of them)


@functools.lru_cache(maxsize=4)
def cached_tokenizer(name: str) -> Tokenizer:
    """`make_tokenizer(name)`, built once per process (GPT-2's BPE takes about a second)."""
    return make_tokenizer(name)


def make_windows(ids: list[int], eot_id: int, context: int) -> tuple[Tensor, Tensor, Tensor]:
    """Disjoint windows over `[eot] + ids`: inputs (N, C), next-token targets (N, C), padding (N, C).

    Every id is a target exactly once; `pad_NC` is True where the target is padding.
    """
    n_targets = len(ids)
    n_windows = max(1, math.ceil(n_targets / context))
    stream_S = torch.full((n_windows * context + 1,), eot_id, dtype=torch.long)
    stream_S[1 : n_targets + 1] = torch.tensor(ids, dtype=torch.long)
    x_NC = stream_S[:-1].view(n_windows, context)
    y_NC = stream_S[1:].view(n_windows, context)
    pad_NC = (torch.arange(n_windows * context) >= n_targets).view(n_windows, context)
    return x_NC, y_NC, pad_NC


#: the first position of each bucket the test perplexity is also reported over (positions count from 1)
POSITION_BUCKETS = (1, 17, 65)


def position_buckets(context: int) -> list[tuple[str, int, int]]:
    """(name, first, last) of each bucket of target positions that a window of `context` holds, 1-based."""
    starts = [p for p in POSITION_BUCKETS if p <= context]
    ends = [nxt - 1 for nxt in starts[1:]] + [context]
    return [(f"{first}-{last}", first, last) for first, last in zip(starts, ends, strict=True)]


class LMDataModule(SplitDataModule):
    """Windows of the cached train/val/test text; train windows shuffled per seed."""

    def __init__(self, data_dir: Path, config: LMConfig, seed: int) -> None:
        super().__init__(config.batch_size, seed)
        self.data_dir, self.config = Path(data_dir), config
        self.source: DataSource = prepare_corpus(self.data_dir, config.corpus)

    def build(self) -> dict[str, Dataset]:
        c = self.config
        windows = split_windows(str(self.data_dir), c.corpus, c.tokenizer, c.context, c.eval_windows)
        return {split: TensorDataset(*tensors) for split, tensors in windows.items()}


@functools.lru_cache(maxsize=4)
def split_windows(
    data_dir: str, corpus: str, tokenizer: str, context: int, eval_windows: int
) -> dict[str, tuple[Tensor, ...]]:
    """Each split's windows (val and test thinned to `eval_windows`), built once per process.

    Tokenizing and windowing the corpus took about 0.25 s of every fit; the fits only read them.
    """
    tok = cached_tokenizer(tokenizer)
    out: dict[str, tuple[Tensor, ...]] = {}
    for split in SPLITS:
        ids = tok.encode(read_split(Path(data_dir), corpus, split))
        tensors: tuple[Tensor, ...] = make_windows(ids, tok.eot_id, context)
        out[split] = tensors if split == "train" else spaced_windows(tensors, eval_windows)
    return out


def spaced_windows(tensors: tuple[Tensor, ...], count: int) -> tuple[Tensor, ...]:
    """`count` windows evenly spaced over the split, first and last included (all when 0 or too few)."""
    n_windows = len(tensors[0])
    if count <= 0 or count >= n_windows:
        return tensors
    keep_K = torch.linspace(0, n_windows - 1, count).round().long()
    return tuple(t[keep_K] for t in tensors)


def window_sums(net: nn.Module, token_bytes_V: Tensor, batch: list[Tensor]) -> tuple[Tensor, Sums]:
    """Mean NLL over non-padding targets, and sums of NLL and of target bytes with the target count."""
    x_BT, y_BT, pad_BT = batch
    # Padding is only ever on the right, so the causal mask already hides it from every real
    # query; the model needs no key-padding mask (variants without one run too). The loss masks it.
    logits_BTV = net(x_BT)
    loss = lm_loss(logits_BTV.float(), y_BT, pad_BT)
    count = int((~pad_BT).sum())
    target_bytes = token_bytes_V[y_BT].masked_fill(pad_BT, 0).sum()
    sums: Sums = {"loss": (loss.detach() * count, count), "bytes_per_token": (target_bytes.float(), count)}
    if not net.training:  # the per-position losses cost a second pass over the logits: evaluation only
        nll_BT = F.cross_entropy(logits_BTV.detach().float().transpose(1, 2), y_BT, reduction="none")
        nll_BT = nll_BT.masked_fill(pad_BT, 0.0)
        for name, first, last in position_buckets(x_BT.shape[1]):
            kept = int((~pad_BT[:, first - 1 : last]).sum())
            sums[f"loss@{name}"] = (nll_BT[:, first - 1 : last].sum(), kept)
    return loss, sums


def finalize_lm(means: dict[str, float]) -> dict[str, float]:
    """Perplexity and bits per byte from the mean NLL (nats) and the mean bytes per target token."""
    if "loss" not in means:
        return {}
    out = {"perplexity": math.exp(min(means["loss"], 700.0))}
    if means.get("bytes_per_token"):
        out["bits_per_byte"] = means["loss"] / math.log(2) / means["bytes_per_token"]
    for name, value in means.items():
        if name.startswith("loss@"):
            out[f"perplexity@{name.removeprefix('loss@')}"] = math.exp(min(value, 700.0))
    return out


class LMModule(TaskModule):
    """A GPT scored by next-token NLL over non-padding targets."""

    token_bytes_V: Tensor  # (vocab,) UTF-8 bytes of each id, a buffer so it follows the device

    def __init__(self, net: GPT, optim: OptimConfig, token_bytes: list[int]) -> None:
        super().__init__(net, optim)
        rows = net.config.vocab_size - len(token_bytes)
        self.register_buffer("token_bytes_V", torch.tensor([*token_bytes, *[0] * rows]), persistent=False)

    def evaluate(self, batch: list[Tensor]) -> tuple[Tensor, Sums]:
        return window_sums(self.net, self.token_bytes_V, batch)

    def finalize(self, means: dict[str, float]) -> dict[str, float]:
        return finalize_lm(means)


@torch.no_grad()
def text_logprob(net: GPT, tok: Tokenizer, text: str, batch_size: int = 32) -> float:
    """Total log-probability (nats) of `text` as one document, with the task's windows."""
    x_NC, y_NC, pad_NC = make_windows(tok.encode(text), tok.eot_id, net.config.context)
    device = next(net.parameters()).device
    total = 0.0
    for start in range(0, len(x_NC), batch_size):
        x_BC, y_BC, pad_BC = (t[start : start + batch_size].to(device) for t in (x_NC, y_NC, pad_NC))
        logp_BCV = net(x_BC).double().log_softmax(-1)  # float64: sums over long texts stay exact
        logp_BC = logp_BCV.gather(-1, y_BC[..., None])[..., 0]
        total += float(logp_BC.masked_fill(pad_BC, 0.0).double().sum())
    return total


def unigram_perplexity(data_dir: Path, config: LMConfig, split: str = "val") -> float:
    """Perplexity of add-one-smoothed unigram frequencies counted on train, on `split`."""
    tok = cached_tokenizer(config.tokenizer)
    counts = Counter(tok.encode(read_split(data_dir, config.corpus, "train")))
    total = sum(counts.values()) + tok.vocab_size
    ids = tok.encode(read_split(data_dir, config.corpus, split))
    nll = -sum(math.log((counts[i] + 1) / total) for i in ids)
    return math.exp(nll / max(1, len(ids)))


_SCALES: dict[Scale, LMConfig] = {
    # budgets cap the batches of the one epoch (not max_steps), so the epoch ends and validation runs
    "smoke": LMConfig(d_model=32, n_layers=1, n_heads=2, batch_size=16, context=32, limit_train_batches=8),
    # context 128 (the issue of verdicts that survive the budget asked for at least 128), 1,600 x 8 windows
    # (1.6M bytes, 44% of train) in ~24 s on one thread: measured on the tuning seed's validation split (seed
    # 1,000,000, lr 5e-3), QKV 5.52 against the budget-matched trigram's 7.21 and the full-split trigram's
    # 6.56; at 800 batches QKV (7.48) did not beat the full-split trigram. Scored on 256 windows (32K bytes)
    # of each of val and test.
    "default": LMConfig(
        d_model=64, n_layers=2, n_heads=4, batch_size=8, context=128, limit_train_batches=1600, eval_windows=256
    ),
    # the study's 300M model (GPTConfig.study_300m); its 1,152 sequences per step need accumulation
    "paper": LMConfig(
        d_model=1024,
        n_layers=20,
        n_heads=16,
        batch_size=16,
        context=2048,
        tokenizer="gpt2",
        vocab_multiple=64,
        limit_train_batches=4_238,  # 10B tokens / 2,359,296 tokens per step
        accelerator="gpu",  # about 300M parameters: on a cluster, a node with a GPU
    ),
}


class LMTask(Task):
    """Causal LM on real text (default: the King James Bible, bytes), perplexity lower is better."""

    id = "lm"
    version = "2"
    family = "lm"
    metric = "perplexity"
    higher_is_better = False
    causal = True
    description = "causal language modelling, perplexity with padding masked (the study's section 3)"
    learn_margin = 0.05  # relative: 5% below the budget-matched count trigram's perplexity
    equivalence_margin = 0.05  # "within a few percent" of QKV's perplexity (the study's +3.1% reads as equal)

    def optim_defaults(self) -> dict[str, float]:
        return {"lr": 5e-3}  # many small steps: 3e-3 learns too slowly, 1e-2 is unstable (ppl 7 or 11 by seed)

    def config(self, scale: Scale) -> TaskConfig:
        return _SCALES[scale]

    def prepare(self, data_dir: Path) -> DataSource:
        """The default corpus' splits; a config naming another corpus prepares it in `datamodule`."""
        return prepare_corpus(Path(data_dir), DEFAULT_CORPUS)

    def _config(self, config: TaskConfig) -> LMConfig:
        if not isinstance(config, LMConfig):
            raise TypeError(f"task {self.id!r} needs an LMConfig, got {type(config).__name__}")
        return config

    def datamodule(self, data_dir: Path, config: TaskConfig, seed: int) -> L.LightningDataModule:
        return LMDataModule(data_dir, self._config(config), seed)

    def gpt_config(self, config: TaskConfig) -> GPTConfig:
        """The backbone's size at `config`: the tokenizer's vocabulary rounded up to `vocab_multiple`."""
        cfg = self._config(config)
        vocab = cached_tokenizer(cfg.tokenizer).vocab_size
        vocab = -(-vocab // cfg.vocab_multiple) * cfg.vocab_multiple
        return GPTConfig(vocab, cfg.context, cfg.n_layers, cfg.d_model, cfg.n_heads)

    def build_model(self, variant: VariantSpec, config: TaskConfig, optim: OptimConfig) -> TaskModule:
        cfg = self._config(config)
        net = GPT(self.gpt_config(cfg), variant)
        return LMModule(net, optim, cached_tokenizer(cfg.tokenizer).token_bytes())

    def context_length(self, config: TaskConfig) -> int:
        return self._config(config).context

    def baseline(self, data_dir: Path, config: TaskConfig) -> Baseline:
        """The count trigram counted on the training windows a fit reads (test seed 0's, in its order, as many as
        its budget reads), smoothing chosen on val; test perplexity.

        It scores exactly the model's targets: every test token once, padding excluded, and an n-gram sees n - 1
        tokens back only where the window holds them. `others` holds the budget-matched bigram and 4-gram and the
        same models counted on the whole training split. The bar is the trigram, not the strongest of them: on the
        KJV's bytes the 4-gram (4.54 on test) beats what a d=64 model learns from 1.6M bytes (QKV about 5.5), so a
        4-gram bar would leave the LM ungated; the page shows it beside the bar, so a reader sees that margin.
        """
        cfg = self._config(config)
        datamodule = LMDataModule(data_dir, cfg, seed=0)
        splits = split_tensors(datamodule)
        seen = read_windows(datamodule, cfg.limit_train_batches, cfg.max_epochs)
        vocab = cached_tokenizer(cfg.tokenizer).vocab_size
        grams = {split: _ngrams(tensors) for split, tensors in splits.items()}
        matched = baselines.count_lm(_ngrams(seen), grams["val"], grams["test"], vocab)
        full = baselines.count_lm(grams["train"], grams["val"], grams["test"], vocab)
        others = {f"count {baselines.ORDER_NAMES[o]}": v for o, v in matched.test.items() if o != GATE_ORDER}
        others.update({f"count {baselines.ORDER_NAMES[o]}, whole train split": v for o, v in full.test.items()})
        note = (
            f"{cfg.corpus}, {cfg.tokenizer} tokens, context {cfg.context}: budget-matched, counted on the "
            f"{len(seen[0])} train windows ({int((~seen[2]).sum())} targets) test seed 0 reads, of "
            f"{len(splits['train'][0])}; add-k k={matched.k:g} for the bigram, each higher order's pseudo-counts "
            f"toward the one below chosen on val; {len(grams['test'][-1])} test targets"
        )
        return Baseline(f"count {baselines.ORDER_NAMES[GATE_ORDER]}", matched.test[GATE_ORDER], others, note)


#: the order of the count n-gram the LM's bar is (the trigram: two tokens of context)
GATE_ORDER = 3
#: the highest order of the count n-gram baselines (the 4-gram: three tokens of context)
MAX_ORDER = 4


def _ngrams(windows: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    x_NC, y_NC, pad_NC = windows
    return baselines.window_ngrams(x_NC, y_NC, pad_NC, order=MAX_ORDER)


def read_windows(datamodule: LMDataModule, limit: int | float, epochs: int = 1) -> tuple[Tensor, ...]:
    """The training windows a fit of `datamodule`'s seed reads, in the order it reads them: `limit` batches of
    each of `epochs` epochs (a fraction of the epoch's batches when a float, as Lightning reads it)."""
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    batches = limit if isinstance(limit, int) else int(len(loader) * limit)
    read: list[list[Tensor]] = []
    for _ in range(max(1, epochs)):
        read.extend(batch for _, batch in zip(range(batches), loader, strict=False))
    return tuple(torch.cat(parts) for parts in zip(*read, strict=True))


LM = LMTask()
