"""TinyImageNet (200 classes of 64x64 images) with a ViT from scratch, real or offline proxy.

Real data: the `tiny-imagenet-200` folder as the official zip unpacks it under the data dir
(`wnids.txt`, `train/<wnid>/images/*.JPEG`, `val/images/*.JPEG` with `val/val_annotations.txt`);
with `BENCH_DOWNLOAD=1` the zip is downloaded and md5-checked. The official val set (50 per class)
is the test set; validation is the last tenth of each class's training images in file-name order.

Offline default: the same layout under `<data_dir>/tinyimagenet-proxy/tiny-imagenet-200/`, 64x64
JPEG crops of 200 regions (a 4x5 grid over each of the 10 photos that packages ship, `photos.py`),
with made-up wnids `p0000000`..`p0000199`, read by the same reader.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import DataError, DataSource, Scale
from .photos import PHOTO_NAMES, PHOTOS_ORIGIN, CropSpec, build_once, class_names, crops, prepare_command
from .vision import ImageClassificationTask, ImageSplits, VisionConfig

FOLDER = "tiny-imagenet-200"
SIZE = 64
N_CLASSES = 200
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
ZIP_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
ANNOTATIONS = "val/val_annotations.txt"

#: images (N, 64, 64, 3) uint8 and labels (N,) int64
Split = tuple[np.ndarray, np.ndarray]


def read_image(path: Path) -> np.ndarray:
    """One JPEG as (64, 64, 3) uint8 RGB (TinyImageNet has some greyscale images); `DataError` if unusable."""
    from PIL import Image

    if not path.is_file():
        raise DataError(f"{path} is missing")
    try:
        with Image.open(path) as image:
            pixels_HWC = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for unreadable or truncated files
        raise DataError(f"{path} cannot be decoded ({type(err).__name__}: {err}): corrupt or truncated") from err
    if pixels_HWC.shape != (SIZE, SIZE, 3):
        raise DataError(f"{path} is {pixels_HWC.shape[1]}x{pixels_HWC.shape[0]}, TinyImageNet images are {SIZE}x{SIZE}")
    return pixels_HWC


def read_wnids(root: Path) -> list[str]:
    """The class ids in `wnids.txt` order, which fixes the label of each class."""
    path = root / "wnids.txt"
    try:
        wnids = path.read_text().split()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path} cannot be read ({err})") from err
    if not wnids or len(set(wnids)) != len(wnids):
        raise DataError(f"{path} must list distinct class ids, one a line; it lists {len(wnids)}")
    return wnids


def _stack(images: list[np.ndarray], labels: list[int]) -> Split:
    images_NHWC = np.stack(images) if images else np.zeros((0, SIZE, SIZE, 3), np.uint8)
    return images_NHWC, np.asarray(labels, dtype=np.int64)


def read_train(root: Path, wnids: list[str]) -> tuple[Split, Split]:
    """(train, val): each class's images in file-name order, the last tenth of each class held out."""
    train: tuple[list[np.ndarray], list[int]] = ([], [])
    val: tuple[list[np.ndarray], list[int]] = ([], [])
    for label, wnid in enumerate(wnids):
        folder = root / "train" / wnid / "images"
        files = sorted(folder.glob("*.JPEG"))
        if not files:
            raise DataError(f"{folder} holds no .JPEG images for class {wnid} listed in {root / 'wnids.txt'}")
        n_val = math.ceil(len(files) / 10) if len(files) > 1 else 0
        for i, path in enumerate(files):
            images, labels = val if i >= len(files) - n_val else train
            images.append(read_image(path))
            labels.append(label)
    return _stack(*train), _stack(*val)


def read_annotations(root: Path, wnids: list[str]) -> dict[str, int]:
    """Image file name -> label from `val/val_annotations.txt` (file, wnid, box per tab-separated line)."""
    path = root / ANNOTATIONS
    index = {wnid: i for i, wnid in enumerate(wnids)}
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path} cannot be read ({err})") from err
    labels: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DataError(f"{path}, line {number}: expected 'file<TAB>wnid<TAB>box' with a wnid from wnids.txt")
        labels[fields[0]] = index[fields[1]]
    return labels


def read_val(root: Path, wnids: list[str]) -> Split:
    """The official validation images with their labels, in annotation-file order."""
    labels = read_annotations(root, wnids)
    unlabelled = sorted(p.name for p in (root / "val" / "images").glob("*.JPEG") if p.name not in labels)
    if unlabelled:
        raise DataError(f"{root / ANNOTATIONS} has no line for {root / 'val' / 'images' / unlabelled[0]}")
    if not labels:
        raise DataError(f"{root / ANNOTATIONS} lists no images")
    images = [read_image(root / "val" / "images" / name) for name in labels]
    return _stack(images, list(labels.values()))


def _save_jpeg(pixels_HWC: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(pixels_HWC).save(path, format="JPEG", quality=90)


def write_tiny_imagenet(root: Path, wnids: list[str], words: list[str], train: Split, val: Split) -> None:
    """A `tiny-imagenet-200` tree at `root` from (N, 64, 64, 3) images; boxes cover the whole image."""
    box = f"0\t0\t{SIZE - 1}\t{SIZE - 1}"
    root.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (root / "words.txt").write_text("".join(f"{w}\t{name}\n" for w, name in zip(wnids, words, strict=True)))
    images_NHWC, labels_N = train
    for label, wnid in enumerate(wnids):
        (root / "train" / wnid / "images").mkdir(parents=True)
        names = [f"{wnid}_{i}.JPEG" for i in range(int((labels_N == label).sum()))]
        for name, pixels_HWC in zip(names, images_NHWC[labels_N == label], strict=True):
            _save_jpeg(pixels_HWC, root / "train" / wnid / "images" / name)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(f"{n}\t{box}\n" for n in names))
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for i, (pixels_HWC, label) in enumerate(zip(*val, strict=True)):
        _save_jpeg(pixels_HWC, root / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnids[label]}\t{box}\n")
    (root / ANNOTATIONS).write_text("".join(lines))


def _configs() -> dict[Scale, VisionConfig]:
    common: dict[str, Any] = {"in_chans": 3, "n_classes": N_CLASSES}
    return {
        "smoke": VisionConfig(
            d_model=32, n_layers=1, n_heads=2, batch_size=32, img_size=64, patch_size=16, max_train=256, **common
        ),
        # images downscaled to 32x32, 16 patches of 8x8, heads of 16, mean-pooled, 4 epochs of the 8,000
        # training crops: past a linear probe on pixels (0.74) at ~0.78; scored on 2,000
        "default": VisionConfig(
            d_model=64,
            n_layers=2,
            n_heads=4,
            batch_size=64,
            max_epochs=4,
            img_size=32,
            patch_size=8,
            max_train=10_000,
            max_eval=2000,
            global_pool="avg",
            mlp_ratio=1,  # as MNIST's default: the same accuracy, 40% less time a step
            **common,
        ),
        # the study: "a ViT-B/16-like model" (UNCONFIRMED); 64x64 input, so 8x8 patches give 64 tokens
        "paper": VisionConfig(
            d_model=768, n_layers=12, n_heads=12, batch_size=256, max_epochs=50, img_size=64, patch_size=8, **common
        ),
    }


class TinyImageNetTask(ImageClassificationTask):
    """TinyImageNet, real when `<data_dir>/tiny-imagenet-200` is there, else the photo-crop proxy."""

    id = "tinyimagenet"
    version = "1"
    description = "TinyImageNet top-1 accuracy (200 classes), ViT from scratch (the study's Table 2)"

    def __init__(self, proxy: CropSpec) -> None:
        if proxy.n_classes != N_CLASSES or proxy.size != SIZE:
            raise ValueError(f"the TinyImageNet proxy must have {N_CLASSES} classes of {SIZE}x{SIZE} images")
        self.proxy = proxy

    def config(self, scale: Scale) -> VisionConfig:
        return _configs()[scale]

    def proxy_root(self, data_dir: Path) -> Path:
        return data_dir / "tinyimagenet-proxy"

    def prepare(self, data_dir: Path) -> DataSource:
        real = data_dir / FOLDER
        if not real.exists() and os.environ.get("BENCH_DOWNLOAD") == "1":
            self._download(data_dir)
        if real.exists():
            read_wnids(real)
            return DataSource("TinyImageNet (tiny-imagenet-200)", "real", str(real), "test = official val set")
        write: Callable[[Path], None] = lambda tmp: self._write_proxy(tmp / FOLDER)  # noqa: E731
        fix = f"Delete {self.proxy_root(data_dir)} and re-run `{prepare_command(self.id, data_dir)}`."
        build_once(self.proxy_root(data_dir), self.proxy, write, fix)
        return self._proxy_source(data_dir)

    def _download(self, data_dir: Path) -> None:
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(URL, str(data_dir), md5=ZIP_MD5)
        except Exception as err:  # network, disk or archive errors, all reported the same way
            raise DataError(f"downloading TinyImageNet from {URL} into {data_dir} failed: {err}") from err

    def _write_proxy(self, root: Path) -> None:
        wnids = [f"p{i:07d}" for i in range(N_CLASSES)]
        write_tiny_imagenet(root, wnids, class_names(self.proxy), crops(self.proxy, "train"), crops(self.proxy, "test"))

    def _proxy_source(self, data_dir: Path) -> DataSource:
        p = self.proxy
        name = f"TinyImageNet-shaped proxy: crops of {len(PHOTO_NAMES)} photos shipped by scikit-image/scikit-learn"
        note = (
            f"class = (photo, cell of a {p.grid[0]}x{p.grid[1]} grid), wnids p0000000..; "
            f"{p.train_per_class}/{p.test_per_class} random {SIZE}x{SIZE} JPEG crops per class for train/test "
            f"(side {p.scale[0]}-{p.scale[1]} of the cell, random flip, seed {p.seed}); val = last tenth of each "
            f"class; test = the proxy's val folder; photos: {PHOTOS_ORIGIN}"
        )
        return DataSource(name, "proxy", str(self.proxy_root(data_dir) / FOLDER), note)

    def _locate(self, data_dir: Path) -> Path:
        for root in (data_dir / FOLDER, self.proxy_root(data_dir) / FOLDER):
            if root.exists():
                return root
        raise DataError(f"no TinyImageNet data in {data_dir}: run `{prepare_command(self.id, data_dir)}` first.")

    def load_splits(self, data_dir: Path, config: VisionConfig) -> ImageSplits:
        root = self._locate(data_dir)
        fix = (
            f"Delete {self.proxy_root(data_dir)} and re-run `{prepare_command(self.id, data_dir)}`."
            if root.parent == self.proxy_root(data_dir)
            else f"Restore the file from the official zip ({URL})."
        )
        try:
            wnids = read_wnids(root)
            (train, val), test = read_train(root, wnids), read_val(root, wnids)
        except DataError as err:
            raise DataError(f"{err}. {fix}") from err
        return ImageSplits(train=_tensors(train), val=_tensors(val), test=_tensors(test))


def _tensors(split: Split) -> tuple[Tensor, Tensor]:
    images_NHWC, labels_N = split
    return torch.from_numpy(np.ascontiguousarray(images_NHWC.transpose(0, 3, 1, 2))), torch.from_numpy(labels_N)


#: 200 classes (a 4x5 grid over each photo), 40 train + 10 test (official val) crops each
TINY_IMAGENET_PROXY = CropSpec(grid=(4, 5), size=SIZE, scale=(0.5, 1.0), train_per_class=40, test_per_class=10)

TINY_IMAGENET = TinyImageNetTask(TINY_IMAGENET_PROXY)
