"""MVTec-layout anomaly categories built offline from the CC0 textures that scikit-image ships.

`build_textures(data_dir)` writes, once and atomically, `<data_dir>/mvtec-textures-v2/<category>/` for
`brick`, `grass` and `gravel` (scikit-image `data.brick()`, `grass()`, `gravel()`, 512x512 grey):

    train/good/000.png ...              crops from the top rows of the texture
    test/good/000.png ...               crops from the bottom rows (disjoint from train)
    test/<defect>/000.png ...           bottom-row crops with a defect pasted in
    ground_truth/<defect>/000_mask.png  the defect's pixels (255) on 0

Defects come from anomalib's `PerlinAnomalyGenerator` (the DRAEM recipe): a thresholded, rotated
Perlin-noise region blended with either augmented Perlin noise (`noise`) or an augmented crop of the
other textures (`texture`). Everything is seeded per category, so two builds are byte-identical.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .base import DataError

TEXTURES: tuple[str, ...] = ("brick", "grass", "gravel")
DEFECTS: tuple[str, ...] = ("noise", "texture")
FORMAT_VERSION = 2  # bump when a default build would change: the folder moves, so old trees are not reused
FOLDER = f"mvtec-textures-v{FORMAT_VERSION}"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class TextureSpec:
    """What one build writes per category; stored in the manifest, so a changed spec is detected.

    Attributes:
        size: Side of the written images, in pixels.
        crop: Side of the texture crop that is resized to `size`.
        n_train: Defect-free training images.
        n_test_good: Defect-free test images.
        n_test_defect: Test images per defect type.
        train_rows: Fraction of the texture's rows that training crops come from; test crops come
            from the rest, so no training pixel is ever seen at test time.
        min_defect_area: Smallest fraction of an image a defect may cover (smaller ones are redrawn).
    """

    size: int = 64
    crop: int = 128
    n_train: int = 240
    n_test_good: int = 200  # test/ is halved into val and test: 200 images (100 good) in each
    n_test_defect: int = 100
    train_rows: float = 0.6
    min_defect_area: float = 0.01

    def as_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, **asdict(self)}


def texture(name: str) -> np.ndarray:
    """The scikit-image texture `name` as a (512, 512) uint8 array."""
    from skimage import data

    if name not in TEXTURES:
        raise DataError(f"no texture {name!r}; available: {', '.join(TEXTURES)}")
    return np.asarray(getattr(data, name)(), dtype=np.uint8)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run under torch's global RNG seeded with `seed` (the Perlin generator draws from it), then restore it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _crops(texture_HW: Tensor, n: int, rows: tuple[int, int], spec: TextureSpec) -> Tensor:
    """`n` random `crop`-pixel squares from `rows` of the texture, resized to (n, 3, size, size) in [0, 1]."""
    top, bottom = rows
    if bottom - top < spec.crop or texture_HW.shape[1] < spec.crop:
        raise ValueError(f"a {spec.crop}px crop does not fit in rows {top}..{bottom} of the texture")
    ys = torch.randint(top, bottom - spec.crop + 1, (n,))
    xs = torch.randint(0, texture_HW.shape[1] - spec.crop + 1, (n,))
    crops_NHW = torch.stack([texture_HW[y : y + spec.crop, x : x + spec.crop] for y, x in zip(ys, xs, strict=True)])
    small_N1SS = F.interpolate(crops_NHW[:, None], size=(spec.size, spec.size), mode="bilinear", antialias=True)
    return small_N1SS.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


def _defective(images_NCSS: Tensor, generator: Any, min_area: float) -> tuple[Tensor, Tensor]:
    """Each image with one defect from `generator`, and its (N, S, S) binary mask."""
    out, masks = [], []
    for image_CSS in images_NCSS:
        for _ in range(50):  # redraw regions too small to call a defect
            defect_CSS, mask_1SS = generator(image_CSS)
            if float(mask_1SS.mean()) >= min_area:
                break
        out.append(defect_CSS.clamp(0, 1))
        masks.append(mask_1SS[0] > 0.5)
    return torch.stack(out), torch.stack(masks)


def _save_png(path: Path, pixels: Tensor) -> None:
    """Write a (3, S, S) image in [0, 1] or an (S, S) bool mask as an 8-bit PNG."""
    from PIL import Image

    if pixels.dtype == torch.bool:
        array = pixels.numpy().astype(np.uint8) * 255
    else:
        array = np.rint(pixels.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _write_category(out: Path, name: str, spec: TextureSpec, sources: Path) -> None:
    """Write one category's train/test/ground_truth tree under `out / name`."""
    from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator

    texture_HW = torch.from_numpy(texture(name)).float() / 255
    split = int(spec.train_rows * texture_HW.shape[0])
    with _seeded(zlib.crc32(name.encode())):
        train = _crops(texture_HW, spec.n_train, (0, split), spec)
        good = _crops(texture_HW, spec.n_test_good, (split, texture_HW.shape[0]), spec)
        for i, image in enumerate(train):
            _save_png(out / name / "train" / "good" / f"{i:03d}.png", image)
        for i, image in enumerate(good):
            _save_png(out / name / "test" / "good" / f"{i:03d}.png", image)
        for defect in DEFECTS:
            # the noise defect blends augmented Perlin noise; the texture defect a crop of another texture
            source = sources / name if defect == "texture" else None
            generator = PerlinAnomalyGenerator(anomaly_source_path=source, probability=1.0, blend_factor=(0.4, 1.0))
            generator.anomaly_source_paths.sort()  # rglob order is the filesystem's; the draw must not be
            clean = _crops(texture_HW, spec.n_test_defect, (split, texture_HW.shape[0]), spec)
            images, masks = _defective(clean, generator, spec.min_defect_area)
            for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
                _save_png(out / name / "test" / defect / f"{i:03d}.png", image)
                _save_png(out / name / "ground_truth" / defect / f"{i:03d}_mask.png", mask)


def _write_sources(folder: Path) -> None:
    """For each texture, a folder with the other textures: the foreign material of its `texture` defects."""
    for name in TEXTURES:
        for other in TEXTURES:
            if other != name:
                image = torch.from_numpy(texture(other)).float().div(255).expand(3, -1, -1)
                _save_png(folder / name / f"{other}.png", image)


def _check_manifest(target: Path, spec: TextureSpec) -> None:
    found = json.loads((target / MANIFEST).read_text())
    if found != spec.as_dict():
        raise DataError(
            f"{target} was built with {found}, not {spec.as_dict()}; delete {target} to rebuild it with this spec"
        )


def build_textures(data_dir: Path, spec: TextureSpec | None = None) -> Path:
    """Materialise `<data_dir>/<FOLDER>` once (idempotent, atomic) and return its path.

    The tree is built in a temporary folder next to it and renamed into place, so a crash or a
    concurrent build never leaves a half-written tree where a reader looks. With `spec` None, a tree
    that is already there is used whatever it was built with (its manifest records that), and a
    missing one is built with the default `TextureSpec()`.

    Raises:
        DataError: The folder exists but was built with a different `spec` (the message names the fix).
    """
    target = Path(data_dir) / FOLDER
    if (target / MANIFEST).is_file():
        if spec is not None:
            _check_manifest(target, spec)
        return target
    spec = spec or TextureSpec()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{FOLDER}-", dir=target.parent))
    try:
        _write_sources(staging / ".sources")
        for name in TEXTURES:
            _write_category(staging, name, spec, staging / ".sources")
        shutil.rmtree(staging / ".sources")
        (staging / MANIFEST).write_text(json.dumps(spec.as_dict(), indent=1, sort_keys=True))
        try:
            os.rename(staging, target)
        except OSError:  # another process renamed its build into place first
            if not (target / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _check_manifest(target, spec)
    return target
