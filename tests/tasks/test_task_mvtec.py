"""The mvtec task: real anomalib loader on generated MVTec-layout trees, the texture proxy, AUROC, fits."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from bench.fit.train import fit
from bench.registry import variants
from bench_tasks import mvtec
from bench_tasks.base import DataError, OptimConfig
from bench_tasks.mvtec import MVTEC, MVTEC_CATEGORIES, MVTecConfig, MVTecDataModule, NamedErrors, auroc, locate
from bench_tasks.textures import FOLDER, TextureSpec, build_textures

TINY = TextureSpec(size=32, crop=64, n_train=4, n_test_good=4, n_test_defect=2)


def _smoke(**changes: Any) -> MVTecConfig:
    config = MVTEC.config("smoke")
    assert isinstance(config, MVTecConfig)
    return dataclasses.replace(config, **changes)


def _datamodule(data_dir: Path, config: MVTecConfig) -> MVTecDataModule:
    dm = MVTEC.datamodule(data_dir, config, seed=0)
    assert isinstance(dm, MVTecDataModule)
    return dm


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _real_layout(root: Path, category: str = "carpet") -> dict[str, np.ndarray]:
    """A tiny MVTec AD category: 3 train/good, 2 test/good, 2 test/cut with masks; returns the masks."""
    rng = np.random.default_rng(0)
    base = root / "MVTecAD" / category
    for i in range(3):
        _png(base / "train" / "good" / f"{i:03d}.png", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    for i in range(2):
        _png(base / "test" / "good" / f"{i:03d}.png", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    masks = {}
    for i in range(2):
        mask = np.zeros((16, 16), dtype=np.uint8)
        mask[2 + 4 * i : 6 + 4 * i, 3:9] = 255
        _png(base / "test" / "cut" / f"{i:03d}.png", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        _png(base / "ground_truth" / "cut" / f"{i:03d}_mask.png", mask)
        masks[f"{i:03d}"] = mask
    return masks


@pytest.fixture(scope="module")
def tiny_textures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("textures")
    build_textures(data_dir, TINY)
    return data_dir


def test_real_loader_reads_mvtec_layout(tmp_path: Path) -> None:
    masks = _real_layout(tmp_path)
    config = _smoke(category="carpet", img_size=16, batch_size=8)
    dm = _datamodule(tmp_path, config)
    assert dm.source.kind == "real" and dm.source.name == "MVTec AD (carpet)"
    dm.prepare_data()
    dm.setup("fit")
    (train,) = list(dm.train_dataloader())
    assert train["image"].shape == (3, 3, 16, 16) and not train["label"].any()
    evaluated = list(dm.val_dataloader()) + list(dm.test_dataloader())
    assert [sorted(b["label"].tolist()) for b in evaluated] == [[0, 1], [0, 1]]  # test/ halved, both classes in each
    seen = 0
    for split in ("val", "test"):
        (batch,) = list(getattr(dm, f"{split}_dataloader")())
        dataset = dm.datasets[split]
        assert isinstance(dataset, NamedErrors)
        for i, image_path in enumerate(dataset.inner.samples.image_path):
            want = masks[Path(image_path).stem] if "/cut/" in image_path else np.zeros((16, 16))
            assert torch.equal(batch["mask"][i], torch.from_numpy(want > 0))
            seen += "/cut/" in image_path
    assert seen == 2


def test_category_detection(tmp_path: Path) -> None:
    from anomalib.data.datasets.image.mvtecad import CATEGORIES

    assert tuple(CATEGORIES) == MVTEC_CATEGORIES
    root, source = locate(tmp_path, "grass")
    assert root == tmp_path / FOLDER and source.kind == "proxy" and "MVTec AD" not in source.name
    root, source = locate(tmp_path, "carpet")
    assert root == tmp_path / "MVTecAD" and source.kind == "real"
    with pytest.raises(DataError, match=r"did you mean 'brick'\?.*Available: brick, grass, gravel"):
        locate(tmp_path, "brik")


def test_missing_category_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENCH_DOWNLOAD", raising=False)
    dm = _datamodule(tmp_path, _smoke(category="bottle"))
    with pytest.raises(DataError, match=r"MVTecAD/bottle.*BENCH_DOWNLOAD=1"):
        dm.prepare_data()


def test_missing_mask_names_the_file(tmp_path: Path) -> None:
    _real_layout(tmp_path)
    (tmp_path / "MVTecAD" / "carpet" / "ground_truth" / "cut" / "001_mask.png").unlink()
    dm = _datamodule(tmp_path, _smoke(category="carpet", img_size=16))
    with pytest.raises(DataError, match=r"cut/001\.png has no mask: expected .*001_mask\.png"):
        dm.setup("fit")


def test_orphan_mask_names_the_file(tmp_path: Path) -> None:
    _real_layout(tmp_path)
    (tmp_path / "MVTecAD" / "carpet" / "test" / "cut" / "000.png").unlink()
    dm = _datamodule(tmp_path, _smoke(category="carpet", img_size=16))
    with pytest.raises(DataError, match=r"ground_truth/cut/000_mask\.png masks no image"):
        dm.setup("fit")


@pytest.mark.parametrize("damage", ["not a png", "cut short"])
def test_corrupt_png_names_the_file_before_any_fit(damage: str, tiny_textures: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_textures / FOLDER, tmp_path / FOLDER)
    bad = tmp_path / FOLDER / "grass" / "test" / "noise" / "001.png"
    whole = bad.read_bytes()
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png" if damage == "not a png" else whole[: len(whole) // 2])
    mvtec.anomalib_splits.cache_clear()
    dm = _datamodule(tmp_path, _smoke(category="grass"))
    with pytest.raises(DataError, match=r"cannot read .*grass/test/noise/001\.png"):
        dm.setup("fit")  # anomalib's own reader would fill a cut-short image in and go on


def test_build_textures_is_deterministic_and_idempotent(tiny_textures: Path, tmp_path: Path) -> None:
    first = tiny_textures / FOLDER
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    for category in ("brick", "grass", "gravel"):
        assert len([f for f in files if f.parts[:3] == (category, "train", "good")]) == TINY.n_train
        masks = [f for f in files if f.parts[:2] == (category, "ground_truth")]
        assert len(masks) == 2 * TINY.n_test_defect
        assert all(np.asarray(Image.open(first / m)).mean() / 255 >= TINY.min_defect_area for m in masks)
    stamps = {f: (first / f).stat().st_mtime_ns for f in files}
    assert build_textures(tiny_textures, TINY) == first  # a second build leaves the tree alone
    assert stamps == {f: (first / f).stat().st_mtime_ns for f in files}
    second = build_textures(tmp_path, TINY)
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    assert not [p for p in tmp_path.iterdir() if p.name != FOLDER]  # no staging folder left behind
    with pytest.raises(DataError, match=r"delete .*mvtec-textures"):
        build_textures(tmp_path, dataclasses.replace(TINY, n_train=5))


def test_auroc_on_hand_made_cases() -> None:
    labels = torch.tensor([0, 0, 1, 1, 0, 1])
    scores = torch.tensor([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])
    assert auroc(scores, labels) == pytest.approx(1.0)
    assert auroc(-scores, labels) == pytest.approx(0.0)
    assert auroc(torch.tensor([0.1, 0.9, 0.5, 0.6]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.5)
    assert auroc(scores, torch.zeros(6)) is None  # one class: undefined, not 0 or 1
    maps = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4)
    assert auroc(maps, maps >= 20) == pytest.approx(1.0)
    assert auroc(-maps, maps >= 20) == pytest.approx(0.0)


@pytest.mark.parametrize("name", ["qkv", "tied-kv"])
def test_fast_dev_run_fit(name: str, tiny_textures: Path) -> None:
    result = fit(MVTEC, variants().get(name), MVTEC.config("smoke"), OptimConfig(), seed=0, data_dir=tiny_textures,
                 fast_dev_run=True)  # fmt: skip
    for stage in (result.val, result.test):
        assert 0.0 <= stage["image_auroc"] <= 1.0 and 0.0 <= stage["pixel_auroc"] <= 1.0
        assert np.isfinite(stage["loss"])
    assert result.data_source["kind"] == "proxy" and "MVTec AD" not in result.data_source["name"]
    assert result.examples_per_second > 0
