"""Crops of the real colour photos that packages ship: the offline stand-in for CIFAR and TinyImageNet.

Ten photos come with the wheels (scikit-image's `data` module and scikit-learn's sample images). A
class is a region of one photo (the whole photo, or one cell of a grid laid over it); an example is
a random square crop inside that region, at a random scale, resized and randomly flipped. Train and
test crops come from separate random streams. Everything is deterministic for a `CropSpec`.

`build_once` materialises a generated folder exactly once: it is written under a temporary name and
renamed into place, with a `PROXY.json` marker recording the spec it was built from.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import DataError

if TYPE_CHECKING:
    from PIL import Image

#: Bump when the generator would write different bytes for the same spec.
GENERATOR_VERSION = "1"
MARKER = "PROXY.json"

SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "rocket",
    "stereo_motorcycle",
)
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
PHOTO_NAMES = (*SKIMAGE_PHOTOS, *(name.removesuffix(".jpg") for name in SKLEARN_PHOTOS))
PHOTOS_ORIGIN = "scikit-image skimage.data ({}) and scikit-learn load_sample_image ({})".format(
    ", ".join(SKIMAGE_PHOTOS), ", ".join(SKLEARN_PHOTOS)
)


def prepare_command(task_id: str, data_dir: Path) -> str:
    """The shell command that (re)builds the data of `task_id` in `data_dir`."""
    return f"bench data prepare --tasks {task_id} --data-dir {data_dir}"


@dataclass(frozen=True)
class CropSpec:
    """How a proxy data set is cut from the photos.

    Attributes:
        grid: (rows, cols) regions per photo; a class is one region, so (1, 1) makes a class per photo.
        size: Side of the square output images in pixels.
        scale: Range of the crop side as a fraction of the region's shorter side.
        train_per_class: Training crops per class.
        test_per_class: Test crops per class.
        seed: Seed of the random streams (train and test use separate streams).
    """

    grid: tuple[int, int]
    size: int
    scale: tuple[float, float]
    train_per_class: int
    test_per_class: int
    seed: int = 0

    @property
    def n_classes(self) -> int:
        return len(PHOTO_NAMES) * self.grid[0] * self.grid[1]

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "generator_version": GENERATOR_VERSION}


@functools.cache
def load_photos() -> tuple[Image.Image, ...]:
    """The ten photos as RGB PIL images, in `PHOTO_NAMES` order."""
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_image

    arrays_HWC = []
    for name in SKIMAGE_PHOTOS:
        photo = getattr(skimage.data, name)()
        arrays_HWC.append(photo[0] if isinstance(photo, tuple) else photo)  # stereo pair: the left image
    arrays_HWC += [load_sample_image(name) for name in SKLEARN_PHOTOS]
    return tuple(Image.fromarray(np.ascontiguousarray(a[..., :3], dtype=np.uint8)).convert("RGB") for a in arrays_HWC)


def class_names(spec: CropSpec) -> list[str]:
    """One name per class, photo-major: "chelsea" for whole photos, else "chelsea-r1c3"."""
    rows, cols = spec.grid
    if rows * cols == 1:
        return list(PHOTO_NAMES)
    return [f"{photo}-r{r}c{c}" for photo in PHOTO_NAMES for r in range(rows) for c in range(cols)]


def _regions(spec: CropSpec) -> list[tuple[int, tuple[int, int, int, int]]]:
    """(photo index, (left, top, right, bottom)) per class, in `class_names` order."""
    rows, cols = spec.grid
    regions = []
    for index, photo in enumerate(load_photos()):
        width, height = photo.size
        for r in range(rows):
            for c in range(cols):
                box = (c * width // cols, r * height // rows, (c + 1) * width // cols, (r + 1) * height // rows)
                regions.append((index, box))
    return regions


def _crop(photo: Image.Image, box: tuple[int, int, int, int], spec: CropSpec, rng: np.random.Generator) -> np.ndarray:
    """One random square crop inside `box`, resized to (size, size, 3) uint8 and maybe flipped."""
    from PIL import Image

    left, top, right, bottom = box
    side = rng.uniform(*spec.scale) * min(right - left, bottom - top)
    x0 = left + rng.uniform(0, right - left - side)
    y0 = top + rng.uniform(0, bottom - top - side)
    image = photo.resize((spec.size, spec.size), Image.Resampling.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    pixels_HWC = np.asarray(image, dtype=np.uint8)
    return pixels_HWC[:, ::-1] if rng.random() < 0.5 else pixels_HWC


def crops(spec: CropSpec, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, size, size, 3) uint8 and labels (N,) int64 of `split` ("train" or "test"), shuffled.

    The order is shuffled so that any contiguous slice (e.g. the last 10% kept for validation) mixes
    all classes.
    """
    per_class = {"train": spec.train_per_class, "test": spec.test_per_class}[split]
    rng = np.random.default_rng([spec.seed, 0 if split == "train" else 1])
    photos = load_photos()
    images, labels = [], []
    for label, (index, box) in enumerate(_regions(spec)):
        for _ in range(per_class):
            images.append(_crop(photos[index], box, spec, rng))
            labels.append(label)
    order = rng.permutation(len(labels))
    images_NHWC = np.stack(images)[order] if images else np.zeros((0, spec.size, spec.size, 3), np.uint8)
    return np.ascontiguousarray(images_NHWC), np.asarray(labels, dtype=np.int64)[order]


def build_once(folder: Path, spec: CropSpec, write: Callable[[Path], None], fix: str) -> bool:
    """Make `folder` by `write(temporary folder)` then one rename, unless it already holds `spec`.

    Returns True if it built the folder, False if it was already there. Raises `DataError` when the
    folder exists but is incomplete or was built from another spec; `fix` says what to run instead.
    """
    wanted = json.loads(json.dumps(spec.as_dict()))  # tuples as JSON gives them back: lists
    if folder.exists():
        marker = folder / MARKER
        try:
            found = json.loads(marker.read_text())
        except (OSError, ValueError) as err:
            raise DataError(f"{marker}: missing or unreadable ({err}); the proxy folder is incomplete. {fix}") from err
        if found != wanted:
            raise DataError(f"{marker}: {folder} was built with {found}, this task needs {wanted}. {fix}")
        return False
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        (tmp / MARKER).write_text(json.dumps(wanted, indent=1) + "\n")
        os.rename(tmp, folder)
    except OSError:
        if not (folder / MARKER).exists():  # not a concurrent build of the same folder that won the race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True
