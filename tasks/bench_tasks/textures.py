"""MVTec-layout anomaly categories built offline from the CC0 textures that scikit-image ships.

`build_textures(data_dir)` writes, once and atomically, `<data_dir>/mvtec-textures-v2/<category>/` for
`brick`, `grass` and `gravel` (scikit-image `data.brick()`, `grass()`, `gravel()`, 512x512 grey):

    train/good/000.png ...              crops from the "white" tiles of a checkerboard over the texture
    test/good/000.png ...               crops from the "black" tiles (no pixel shared with train)
    test/<defect>/000.png ...           test-tile crops with a defect pasted in
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
FORMAT_VERSION = 3  # bump when a default build would change (the folder moves). 3: checkerboard tiles, 2: rows
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
        tiles: The texture is cut into tiles x tiles squares coloured as a checkerboard: training crops
            come from one colour, test crops from the other. No training pixel is seen at test time,
            yet both splits cover every band of rows and columns (the textures are not stationary:
            brick's bricks grow and tilt from top to bottom, so a top/bottom split tests unseen bricks).
        min_defect_area: Smallest fraction of an image a defect may cover (smaller ones are redrawn).
    """

    size: int = 64
    crop: int = 128
    n_train: int = 240
    n_test_good: int = 200  # test/ is halved into val and test: 200 images (100 good) in each
    n_test_defect: int = 100
    tiles: int = 2
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


def _tiles(spec: TextureSpec, side: int, colour: int) -> list[tuple[int, int, int]]:
    """(top, left, tile side) of the checkerboard tiles of `colour` (0: train, 1: test) over a `side`-pixel texture."""
    tile = side // spec.tiles
    if tile < spec.crop:
        raise ValueError(f"a {spec.crop}px crop does not fit in a {tile}px tile ({spec.tiles} tiles per side)")
    cells = [(i, j) for i in range(spec.tiles) for j in range(spec.tiles) if (i + j) % 2 == colour]
    return [(i * tile, j * tile, tile) for i, j in cells]


def _crops(texture_HW: Tensor, n: int, colour: int, spec: TextureSpec) -> Tensor:
    """`n` random `crop`-pixel squares inside the tiles of `colour`, resized to (n, 3, size, size) in [0, 1]."""
    tiles = _tiles(spec, min(texture_HW.shape), colour)
    which = torch.randint(0, len(tiles), (n,))
    offsets = torch.randint(0, tiles[0][2] - spec.crop + 1, (n, 2))
    crops = []
    for k, (dy, dx) in zip(which.tolist(), offsets.tolist(), strict=True):
        y, x = tiles[k][0] + dy, tiles[k][1] + dx
        crops.append(texture_HW[y : y + spec.crop, x : x + spec.crop])
    small_N1SS = F.interpolate(
        torch.stack(crops)[:, None], size=(spec.size, spec.size), mode="bilinear", antialias=True
    )
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
    with _seeded(zlib.crc32(name.encode())):
        train = _crops(texture_HW, spec.n_train, 0, spec)
        good = _crops(texture_HW, spec.n_test_good, 1, spec)
        for i, image in enumerate(train):
            _save_png(out / name / "train" / "good" / f"{i:03d}.png", image)
        for i, image in enumerate(good):
            _save_png(out / name / "test" / "good" / f"{i:03d}.png", image)
        for defect in DEFECTS:
            # the noise defect blends augmented Perlin noise; the texture defect a crop of another texture
            source = sources / name if defect == "texture" else None
            generator = PerlinAnomalyGenerator(anomaly_source_path=source, probability=1.0, blend_factor=(0.4, 1.0))
            generator.anomaly_source_paths.sort()  # rglob order is the filesystem's; the draw must not be
            clean = _crops(texture_HW, spec.n_test_defect, 1, spec)
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
