"""TinyImageNet: the reader on a tiny `tiny-imagenet-200` tree in the real layout, the proxy, and fits."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.fit.train import fit
from bench.registry import variants
from bench_tasks import tinyimagenet
from bench_tasks.base import DataError, OptimConfig
from bench_tasks.photos import CropSpec
from bench_tasks.tinyimagenet import TinyImageNetTask

WNIDS = ["n01443537", "n01629819", "n01641577"]
#: 200 classes x (2 train + 1 test) crops
TINY_SPEC = CropSpec(grid=(4, 5), size=64, scale=(0.5, 1.0), train_per_class=2, test_per_class=1)


def tiny_task() -> TinyImageNetTask:
    return TinyImageNetTask(TINY_SPEC)


def write_real_tree(data_dir: Path, n_train: int = 10, n_val: int = 2) -> Path:
    """A tiny tree as the official zip unpacks, written by hand; class k is a flat image of grey 40 + 80 k."""
    root = data_dir / "tiny-imagenet-200"
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in WNIDS))
    lines = []
    for k, wnid in enumerate(WNIDS):
        (root / "train" / wnid / "images").mkdir(parents=True)
        grey = 40 + 80 * k
        for i in range(n_train):
            # the first image of each class is greyscale, as some real TinyImageNet images are
            image = Image.new("L", (64, 64), grey) if i == 0 else Image.new("RGB", (64, 64), (grey, grey, grey))
            image.save(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
        for i in range(n_val):
            name = f"val_{k * n_val + i}.JPEG"
            Image.new("RGB", (64, 64), (grey, grey, grey)).save(root / "val" / "images" / name)
            lines.append(f"{name}\t{wnid}\t3\t5\t60\t61\n")
    (root / "val" / "val_annotations.txt").write_text("".join(lines))
    return root


@pytest.fixture(scope="module")
def proxy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("tinyimagenet")
    tiny_task().prepare(data_dir)
    return data_dir


def test_real_layout_is_read_as_real(tmp_path: Path) -> None:
    write_real_tree(tmp_path)
    task = tiny_task()
    assert task.prepare(tmp_path).kind == "real"
    assert not task.proxy_root(tmp_path).exists()
    splits = task.load_splits(tmp_path, task.config("smoke"))
    assert [len(y) for _, y in (splits.train, splits.val, splits.test)] == [27, 3, 6]
    assert splits.val[1].tolist() == [0, 1, 2] and splits.test[1].tolist() == [0, 0, 1, 1, 2, 2]
    assert splits.train[0].shape[1:] == (3, 64, 64)
    grey_per_class = splits.train[0].float().mean(dim=(1, 2, 3))
    expected = 40 + 80 * splits.train[1].float()
    assert (grey_per_class - expected).abs().max() < 3  # labels follow wnids.txt; JPEG is lossy


def test_proxy_is_labelled_proxy_in_the_real_layout(proxy_dir: Path) -> None:
    task = tiny_task()
    source = task.prepare(proxy_dir)
    assert source.kind == "proxy" and source.name.startswith("TinyImageNet-shaped proxy")
    root = task.proxy_root(proxy_dir) / "tiny-imagenet-200"
    assert not (proxy_dir / "tiny-imagenet-200").exists()
    wnids = (root / "wnids.txt").read_text().split()
    assert len(wnids) == 200 and wnids[1] == "p0000001"
    assert len(list((root / "train" / wnids[7] / "images").glob("*.JPEG"))) == 2
    splits = task.load_splits(proxy_dir, task.config("smoke"))
    assert [len(y) for _, y in (splits.train, splits.val, splits.test)] == [200, 200, 200]
    assert set(splits.test[1].tolist()) == set(range(200))


def test_prepare_is_idempotent_and_deterministic(
    proxy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = tiny_task()
    task.prepare(tmp_path)
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(proxy_dir) for p in proxy_dir.rglob("*") if p.is_file())
    assert len(files) > 600
    assert all((tmp_path / p).read_bytes() == (proxy_dir / p).read_bytes() for p in files)

    def no_work(*args: object) -> None:
        raise AssertionError("prepare generated crops again")

    monkeypatch.setattr(tinyimagenet, "crops", no_work)
    assert task.prepare(tmp_path).kind == "proxy"


def _damage(root: Path, change: str) -> Path:
    """Damage the tree in one way; returns the file the error must name."""
    image = root / "train" / WNIDS[1] / "images" / f"{WNIDS[1]}_3.JPEG"
    annotations = root / "val" / "val_annotations.txt"
    if change == "truncated jpeg":
        image.write_bytes(image.read_bytes()[:200])
    elif change == "not a jpeg":
        image.write_bytes(b"hello")
    elif change == "wrong size":
        Image.new("RGB", (32, 48)).save(image, format="JPEG")
    elif change == "missing annotation":
        annotations.write_text("".join(annotations.read_text().splitlines(keepends=True)[1:]))
        return root / "val" / "images" / "val_0.JPEG"
    elif change == "unknown wnid":
        annotations.write_text(annotations.read_text().replace(WNIDS[2], "n99999999"))
        return annotations
    else:  # "missing val image"
        image = root / "val" / "images" / "val_1.JPEG"
        image.unlink()
    return image


@pytest.mark.parametrize(
    "change", ["truncated jpeg", "not a jpeg", "wrong size", "missing annotation", "unknown wnid", "missing val image"]
)
def test_damaged_tree_raises_data_error_naming_the_file(change: str, tmp_path: Path) -> None:
    named = _damage(write_real_tree(tmp_path, n_train=4, n_val=2), change)
    task = tiny_task()
    with pytest.raises(DataError) as err:
        task.load_splits(tmp_path, task.config("smoke"))
    assert str(named) in str(err.value) and "official zip" in str(err.value)


def test_damaged_proxy_says_how_to_rebuild(proxy_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(proxy_dir, tmp_path, dirs_exist_ok=True)
    task = tiny_task()
    damaged = task.proxy_root(tmp_path) / "tiny-imagenet-200" / "val" / "images" / "val_5.JPEG"
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.raises(DataError, match="bench data prepare --tasks tinyimagenet --data-dir") as err:
        task.load_splits(tmp_path, task.config("smoke"))
    assert str(damaged) in str(err.value)


def test_real_reader_returns_uint8_rgb_for_greyscale(tmp_path: Path) -> None:
    path = tmp_path / "grey.JPEG"
    Image.new("L", (64, 64), 200).save(path)
    pixels_HWC = tinyimagenet.read_image(path)
    assert pixels_HWC.shape == (64, 64, 3) and pixels_HWC.dtype == np.uint8


@pytest.mark.parametrize("variant", ["qkv", "tied-kv"])
def test_fast_dev_run(variant: str, proxy_dir: Path) -> None:
    task = tiny_task()
    config = task.config("smoke")
    result = fit(task, variants().get(variant), config, OptimConfig(), seed=0, data_dir=proxy_dir, fast_dev_run=True)
    assert 0.0 <= result.test["accuracy"] <= 1.0 and result.test["loss"] > 0
    assert result.data_source["kind"] == "proxy"
