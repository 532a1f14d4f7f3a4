"""CIFAR-10 and CIFAR-100 with a ViT from scratch (the study's Table 2), real or offline proxy.

Real data: torchvision's `CIFAR10`/`CIFAR100` read `<data_dir>/cifar-10-batches-py` or
`<data_dir>/cifar-100-python` and check the md5 of every file; with `BENCH_DOWNLOAD=1` torchvision
downloads them. Validation is the last 10% of the training set in file order (CIFAR-10's
`data_batch_5`); test is the official test set.

Offline default: a proxy cut from the photos that packages ship (`photos.py`), written once in
CIFAR's own pickle format (Python 2 style pickles, so `encoding="bytes"` gives b"data" keys as in the
real files) under `<data_dir>/cifar10-proxy/` or `<data_dir>/cifar100-proxy/`, and read by the same
torchvision code minus the md5 check (the files are ours, not the published ones).
"""

from __future__ import annotations

import functools
import os
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from .base import DataError, DataSource, Scale
from .photos import PHOTO_NAMES, PHOTOS_ORIGIN, CropSpec, build_once, class_names, crops, prepare_command
from .vision import ImageClassificationTask, ImageSplits, VisionConfig

PIXELS = 3 * 32 * 32  # one CIFAR row: the R, G and B planes of a 32x32 image
VAL_FRACTION = 10  # the last 1/10 of the training set is held out for validation

#: images (N, 32, 32, 3) uint8 and labels (N,) int64
Split = tuple[np.ndarray, np.ndarray]


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` opcodes, as the published CIFAR pickles hold them.

    They then load as `str` with `encoding="latin1"` (torchvision) and as `bytes` with
    `encoding="bytes"` (the CIFAR web page's recipe), exactly like the real files.
    """

    dispatch: ClassVar[dict[Any, Any]] = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)  # type: ignore[attr-defined]
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)  # type: ignore[attr-defined]
        self.memoize(obj)  # type: ignore[attr-defined]

    dispatch[bytes] = save_py2_str


def write_cifar_pickle(path: Path, entry: dict[bytes, Any]) -> None:
    """Write `entry` as one CIFAR file (protocol 2, Python 2 strings)."""
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(entry)


def _rows(images_NHWC: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) uint8 -> (N, 3072): CIFAR's row layout, channel planes one after another."""
    return np.ascontiguousarray(images_NHWC.transpose(0, 3, 1, 2).reshape(len(images_NHWC), PIXELS))


def _filenames(labels: np.ndarray, names: list[str], start: int) -> list[bytes]:
    return [f"{names[y]}_s_{start + i:06d}.png".encode() for i, y in enumerate(labels)]


def write_cifar10(folder: Path, train: Split, test: Split, names: list[str]) -> None:
    """`data_batch_1..5`, `test_batch` and `batches.meta` in `folder` from (N, 32, 32, 3) images and labels."""
    folder.mkdir(parents=True, exist_ok=True)
    (images, labels), n_batches = train, 5
    bounds = np.linspace(0, len(labels), n_batches + 1).astype(int)
    for i in range(n_batches):
        part = slice(bounds[i], bounds[i + 1])
        write_cifar_pickle(
            folder / f"data_batch_{i + 1}",
            {
                b"batch_label": f"training batch {i + 1} of {n_batches}".encode(),
                b"labels": [int(y) for y in labels[part]],
                b"data": _rows(images[part]),
                b"filenames": _filenames(labels[part], names, int(bounds[i])),
            },
        )
    write_cifar_pickle(
        folder / "test_batch",
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": [int(y) for y in test[1]],
            b"data": _rows(test[0]),
            b"filenames": _filenames(test[1], names, 0),
        },
    )
    meta = {b"num_cases_per_batch": int(bounds[1]), b"label_names": [n.encode() for n in names], b"num_vis": PIXELS}
    write_cifar_pickle(folder / "batches.meta", meta)


def write_cifar100(
    folder: Path, train: Split, test: Split, names: list[str], coarse: list[int], coarse_names: list[str]
) -> None:
    """`train`, `test` and `meta` in `folder`; `coarse[fine label]` is the superclass of each class."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in {"train": train, "test": test}.items():
        write_cifar_pickle(
            folder / split,
            {
                b"filenames": _filenames(labels, names, 0),
                b"batch_label": f"{split}ing batch 1 of 1".encode(),
                b"fine_labels": [int(y) for y in labels],
                b"coarse_labels": [coarse[int(y)] for y in labels],
                b"data": _rows(images),
            },
        )
    meta = {b"fine_label_names": [n.encode() for n in names], b"coarse_label_names": [n.encode() for n in coarse_names]}
    write_cifar_pickle(folder / "meta", meta)


@dataclass(frozen=True)
class CifarLayout:
    """What tells CIFAR-10 and CIFAR-100 apart: names, files on disk and the torchvision class."""

    id: str
    name: str
    folder: str
    torchvision_class: str
    label_key: str
    meta_key: str
    n_classes: int
    epochs: int  # the study's budget (paper scale)
    default_epochs: int  # the CPU budget (default scale)


CIFAR10_LAYOUT = CifarLayout(
    "cifar10", "CIFAR-10", "cifar-10-batches-py", "CIFAR10", "labels", "label_names", 10, 40, 2
)
CIFAR100_LAYOUT = CifarLayout(
    "cifar100", "CIFAR-100", "cifar-100-python", "CIFAR100", "fine_labels", "fine_label_names", 100, 50, 5
)


@functools.cache
def dataset_class(name: str, generated: bool) -> Any:
    """torchvision's class `name`; for `generated` folders, a subclass that skips only the md5 check."""
    import torchvision.datasets

    base = getattr(torchvision.datasets, name)
    if not generated:
        return base
    # same files and reading code; the published checksums cannot match files we generated
    unchecked = {
        "train_list": [[file, None] for file, _ in base.train_list],
        "test_list": [[file, None] for file, _ in base.test_list],
        "meta": {**base.meta, "md5": None},
    }
    return type(f"Generated{name}", (base,), unchecked)


def _files(layout: CifarLayout) -> list[tuple[str, str, str]]:
    """(file name, published md5, role) for every file of `layout`; role is "batch" or "meta"."""
    base = dataset_class(layout.torchvision_class, False)
    batches = [(file, md5, "batch") for file, md5 in base.train_list + base.test_list]
    return [*batches, (base.meta["filename"], base.meta["md5"], "meta")]


#: the only globals a CIFAR pickle needs: numpy's array reconstruction (the rest is dicts, lists, str, int;
#: `_codecs.encode` is how Python 3 writes bytes at protocol 2, a pure function)
_ARRAY_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # Python 3's protocol-2 bytes


class UnsafePickle(pickle.UnpicklingError):
    """A data file that asks to import anything beyond numpy's array reconstruction."""


class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain data and numpy arrays; any other global (a way to run code) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ARRAY_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickle(f"it asks to load {module}.{name}, which no CIFAR file needs: refusing to unpickle it")


def _unpickle(path: Path) -> Any:
    """A CIFAR pickle, as torchvision reads them (latin1), but through `_ArraysOnly`: a data folder
    someone else can write cannot run code as the next user."""
    with open(path, "rb") as f:
        return _ArraysOnly(f, encoding="latin1").load()


def file_problem(path: Path, md5: str | None, role: str, layout: CifarLayout) -> str | None:
    """What is wrong with one CIFAR file (None if nothing): missing, checksum, unpicklable, bad arrays."""
    from torchvision.datasets.utils import check_integrity

    if not path.is_file():
        return "is missing"
    if md5 is not None and not check_integrity(str(path), md5):
        return f"fails its md5 check (expected {md5}): corrupt or truncated"
    try:
        entry = _unpickle(path)
    except Exception as err:  # a damaged pickle can raise almost any exception type
        return f"cannot be unpickled ({type(err).__name__}: {err}): corrupt or truncated"
    if role == "meta":
        ok = isinstance(entry, dict) and isinstance(entry.get(layout.meta_key), list)
        return None if ok else f"has no {layout.meta_key!r} list"
    if not isinstance(entry, dict) or "data" not in entry or layout.label_key not in entry:
        return f"is not a CIFAR batch (needs 'data' and {layout.label_key!r} entries)"
    data, labels = entry["data"], entry[layout.label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        shape = getattr(data, "shape", type(data).__name__)
        return f"'data' must be a uint8 array of shape (N, {PIXELS}), got {shape}"
    if len(labels) != len(data):
        return f"holds {len(data)} images but {len(labels)} labels: truncated"
    if any(not 0 <= int(y) < layout.n_classes for y in labels):
        return f"has labels outside [0, {layout.n_classes})"
    return None


def _configs(layout: CifarLayout) -> dict[Scale, VisionConfig]:
    common: dict[str, Any] = {"img_size": 32, "in_chans": 3, "n_classes": layout.n_classes}
    return {
        "smoke": VisionConfig(d_model=32, n_layers=1, n_heads=2, batch_size=32, patch_size=8, max_train=256, **common),
        # 16 patches of 8x8, heads of 16, mean-pooled, 5,000 training images: past a linear probe on pixels
        # (CIFAR-10 proxy 0.59 -> ~0.85 in 2 epochs; CIFAR-100 proxy 0.64 -> ~0.72 in 5), scored on 2,000
        "default": VisionConfig(
            d_model=64,
            n_layers=2,
            n_heads=4,
            batch_size=64,
            max_epochs=layout.default_epochs,
            patch_size=8,
            max_train=5000,
            max_eval=2000,
            global_pool="avg",
            mlp_ratio=1,  # as MNIST's default: the same accuracy, 40% less time a step
            **common,
        ),
        # the study: patch {4, 7}, embed {64, 256, 512}, layers {2, 4}, heads {2, 4}; 40 / 50 epochs
        "paper": VisionConfig(
            d_model=256, n_layers=4, n_heads=4, batch_size=128, max_epochs=layout.epochs, patch_size=4, **common
        ),
    }


class CifarTask(ImageClassificationTask):
    """CIFAR-10 or CIFAR-100, real when its folder is there, else the photo-crop proxy."""

    version = "1"

    def __init__(self, layout: CifarLayout, proxy: CropSpec) -> None:
        if proxy.n_classes != layout.n_classes or proxy.size != 32:
            raise ValueError(f"{layout.name} proxy must have {layout.n_classes} classes of 32x32 images")
        self.layout, self.proxy = layout, proxy
        self.id = layout.id
        self.description = f"{layout.name} top-1 accuracy, ViT from scratch (the study's Table 2)"

    def config(self, scale: Scale) -> VisionConfig:
        return _configs(self.layout)[scale]

    def proxy_root(self, data_dir: Path) -> Path:
        return data_dir / f"{self.id}-proxy"

    def prepare(self, data_dir: Path) -> DataSource:
        real = data_dir / self.layout.folder
        if real.exists() or os.environ.get("BENCH_DOWNLOAD") == "1":
            self._download(data_dir)
            self._check(data_dir, generated=False)
            return self._source(data_dir, generated=False)
        write: Callable[[Path], None] = lambda tmp: self._write_proxy(tmp / self.layout.folder)  # noqa: E731
        build_once(self.proxy_root(data_dir), self.proxy, write, self._fix(data_dir, generated=True))
        return self._source(data_dir, generated=True)

    def _download(self, data_dir: Path) -> None:
        if os.environ.get("BENCH_DOWNLOAD") != "1":
            return
        try:
            dataset_class(self.layout.torchvision_class, False)(str(data_dir), train=True, download=True)
        except Exception as err:  # network, disk or archive errors, all reported the same way
            raise DataError(f"downloading {self.layout.name} into {data_dir} failed: {err}") from err

    def _write_proxy(self, folder: Path) -> None:
        train, test = crops(self.proxy, "train"), crops(self.proxy, "test")
        names = class_names(self.proxy)
        if self.layout.n_classes == 10:
            write_cifar10(folder, train, test, names)
            return
        regions = self.proxy.grid[0] * self.proxy.grid[1]
        write_cifar100(folder, train, test, names, [y // regions for y in range(len(names))], list(PHOTO_NAMES))

    def _source(self, data_dir: Path, generated: bool) -> DataSource:
        if not generated:
            origin = str(data_dir / self.layout.folder)
            note = "val = last 10% of the training files (CIFAR-10: data_batch_5); test = the official test set"
            return DataSource(f"{self.layout.name} (torchvision files, md5-checked)", "real", origin, note)
        p = self.proxy
        name = (
            f"{self.layout.name}-shaped proxy: crops of {len(PHOTO_NAMES)} photos shipped by scikit-image/scikit-learn"
        )
        cls = "source photo" if p.grid == (1, 1) else f"(photo, cell of a {p.grid[0]}x{p.grid[1]} grid)"
        note = (
            f"class = {cls}; {p.train_per_class}/{p.test_per_class} random 32x32 crops per class for train/test "
            f"(side {p.scale[0]}-{p.scale[1]} of the region, random flip, seed {p.seed}); val = last 10% of train; "
            f"photos: {PHOTOS_ORIGIN}"
        )
        return DataSource(name, "proxy", str(self.proxy_root(data_dir) / self.layout.folder), note)

    def _fix(self, data_dir: Path, generated: bool) -> str:
        if generated:
            return f"Delete {self.proxy_root(data_dir)} and re-run `{prepare_command(self.id, data_dir)}`."
        folder = data_dir / self.layout.folder
        return (
            f"Delete {folder} and re-run `BENCH_DOWNLOAD=1 {prepare_command(self.id, data_dir)}`, or restore the file."
        )

    def _locate(self, data_dir: Path) -> tuple[Path, bool]:
        """(root torchvision reads, whether it holds generated data)."""
        if (data_dir / self.layout.folder).exists():
            return data_dir, False
        if self.proxy_root(data_dir).exists():
            return self.proxy_root(data_dir), True
        raise DataError(f"no {self.layout.name} data in {data_dir}: run `{prepare_command(self.id, data_dir)}` first.")

    def _check(self, data_dir: Path, generated: bool) -> None:
        """Raise `DataError` naming the first bad file; for real data this includes the md5 check."""
        root = self.proxy_root(data_dir) if generated else data_dir
        for file, md5, role in _files(self.layout):
            path = root / self.layout.folder / file
            problem = file_problem(path, None if generated else md5, role, self.layout)
            if problem:
                raise DataError(f"{path} {problem}. {self._fix(data_dir, generated)}")

    def _read(self, data_dir: Path, train: bool) -> tuple[Tensor, Tensor]:
        """Images (N, 3, 32, 32) uint8 and labels (N,) of one split: torchvision's files and layout, read
        through `_unpickle` (arrays only) rather than torchvision's plain `pickle.load`."""
        root, generated = self._locate(data_dir)
        base = dataset_class(self.layout.torchvision_class, generated)
        try:
            entries = [
                _unpickle(root / base.base_folder / file) for file, _ in (base.train_list if train else base.test_list)
            ]
            data = np.vstack([e["data"] for e in entries]).reshape(-1, 3, 32, 32)
            images_NHWC = np.asarray(data.transpose(0, 2, 3, 1), dtype=np.uint8)
            labels_N = np.asarray([y for e in entries for y in e[self.layout.label_key]], dtype=np.int64)
            if (
                labels_N.shape != (len(images_NHWC),)
                or not ((labels_N >= 0) & (labels_N < self.layout.n_classes)).all()
            ):
                raise ValueError(f"{len(images_NHWC)} images with {len(labels_N)} labels, or labels out of range")
        except Exception as err:  # torchvision on a damaged file can raise almost anything: find the file
            self._check(data_dir, generated)
            fix = self._fix(data_dir, generated)
            raise DataError(f"{root / self.layout.folder} could not be read ({err}). {fix}") from err
        images_NCHW = np.ascontiguousarray(images_NHWC.transpose(0, 3, 1, 2))
        return torch.from_numpy(images_NCHW), torch.from_numpy(labels_N)

    def load_splits(self, data_dir: Path, config: VisionConfig) -> ImageSplits:
        images, labels = self._read(data_dir, train=True)
        n_val = len(labels) // VAL_FRACTION
        if n_val == 0:
            raise DataError(f"{data_dir}: {len(labels)} training images are too few to hold out a validation tenth")
        train, val = (images[:-n_val], labels[:-n_val]), (images[-n_val:], labels[-n_val:])
        return ImageSplits(train=train, val=val, test=self._read(data_dir, train=False))


#: 10 classes (one per photo), 500 train + 100 test crops each, like CIFAR-10's 5,000 + 1,000 per class / 10
CIFAR10_PROXY = CropSpec(grid=(1, 1), size=32, scale=(0.04, 0.2), train_per_class=500, test_per_class=100)
#: 100 classes (each photo cut into a 2x5 grid), 50 train + 10 test crops each
CIFAR100_PROXY = CropSpec(grid=(2, 5), size=32, scale=(0.5, 1.0), train_per_class=50, test_per_class=10)

CIFAR10 = CifarTask(CIFAR10_LAYOUT, CIFAR10_PROXY)
CIFAR100 = CifarTask(CIFAR100_LAYOUT, CIFAR100_PROXY)
