"""CIFAR-10/100: the real loaders on tiny files in CIFAR's own pickle format, the proxy, and fits."""

from __future__ import annotations

import hashlib
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.fit.train import fit
from bench.registry import variants
from bench_tasks import cifar
from bench_tasks.base import DataError, OptimConfig
from bench_tasks.cifar import CIFAR10_LAYOUT, CIFAR100_LAYOUT, CifarLayout, CifarTask, dataset_class
from bench_tasks.photos import CropSpec

LAYOUTS = [CIFAR10_LAYOUT, CIFAR100_LAYOUT]
#: tiny proxies: 10 classes x (20 + 2) crops, 100 classes x (2 + 1) crops
TINY_SPECS = {
    "cifar10": CropSpec(grid=(1, 1), size=32, scale=(0.04, 0.2), train_per_class=20, test_per_class=2),
    "cifar100": CropSpec(grid=(2, 5), size=32, scale=(0.5, 1.0), train_per_class=2, test_per_class=1),
}


def tiny_task(layout: CifarLayout) -> CifarTask:
    return CifarTask(layout, TINY_SPECS[layout.id])


@pytest.fixture(scope="module", params=LAYOUTS, ids=lambda layout: layout.id)
def proxy_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[CifarTask, Path]:
    """A data dir holding the tiny proxy of one layout, prepared once for the module."""
    task = tiny_task(request.param)
    data_dir = tmp_path_factory.mktemp(task.id)
    task.prepare(data_dir)
    return task, data_dir


def write_real_layout(data_dir: Path, layout: CifarLayout, n_train: int, n_test: int) -> dict[str, np.ndarray]:
    """Tiny files as the published archive holds them (str keys, protocol 2), written without bench's writer."""
    rng = np.random.default_rng(0)
    folder = data_dir / layout.folder
    folder.mkdir(parents=True)
    base = dataset_class(layout.torchvision_class, False)
    rows = {}
    files = [f for f, _ in base.train_list] + [f for f, _ in base.test_list]
    for file in files:
        n = n_test if file in ("test_batch", "test") else n_train
        rows[file] = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        entry: dict[str, Any] = {"data": rows[file], layout.label_key: rng.integers(0, layout.n_classes, n).tolist()}
        if layout.label_key == "fine_labels":
            entry["coarse_labels"] = [y // 5 for y in entry["fine_labels"]]
        (folder / file).write_bytes(pickle.dumps(entry, protocol=2))
    meta = {layout.meta_key: [f"class{i}" for i in range(layout.n_classes)]}
    (folder / base.meta["filename"]).write_bytes(pickle.dumps(meta, protocol=2))
    return rows


def trust_files(monkeypatch: pytest.MonkeyPatch, data_dir: Path, layout: CifarLayout) -> None:
    """Point torchvision's published md5s at the generated files, so the real check passes on them."""
    base = dataset_class(layout.torchvision_class, False)
    folder = data_dir / layout.folder

    def md5(file: str) -> str:
        return hashlib.md5((folder / file).read_bytes()).hexdigest()

    monkeypatch.setattr(base, "train_list", [[f, md5(f)] for f, _ in base.train_list])
    monkeypatch.setattr(base, "test_list", [[f, md5(f)] for f, _ in base.test_list])
    monkeypatch.setattr(base, "meta", {**base.meta, "md5": md5(base.meta["filename"])})


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.id)
def test_real_layout_is_read_as_real(layout: CifarLayout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = write_real_layout(tmp_path, layout, n_train=20, n_test=6)
    trust_files(monkeypatch, tmp_path, layout)
    task = tiny_task(layout)
    source = task.prepare(tmp_path)
    assert source.kind == "real" and source.name.startswith(layout.name + " ")
    assert not task.proxy_root(tmp_path).exists()
    splits = task.load_splits(tmp_path, task.config("smoke"))
    n_train = 20 * (5 if layout.id == "cifar10" else 1)
    assert len(splits.train[0]) + len(splits.val[0]) == n_train and len(splits.val[0]) == n_train // 10
    test_file = "test_batch" if layout.id == "cifar10" else "test"
    assert np.array_equal(splits.test[0].flatten(1).numpy(), rows[test_file])  # CIFAR rows are C, H, W planes


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.id)
def test_real_files_keep_the_md5_check(layout: CifarLayout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_real_layout(tmp_path, layout, n_train=4, n_test=2)
    trust_files(monkeypatch, tmp_path, layout)
    damaged = tmp_path / layout.folder / ("test_batch" if layout.id == "cifar10" else "test")
    data = bytearray(damaged.read_bytes())
    data[-10] ^= 0xFF  # one flipped byte: no longer the published bytes
    damaged.write_bytes(bytes(data))
    with pytest.raises(DataError, match="md5") as err:
        tiny_task(layout).prepare(tmp_path)
    assert str(damaged) in str(err.value)


def test_writer_matches_the_published_format(tmp_path: Path) -> None:
    images_NHWC = np.zeros((10, 32, 32, 3), np.uint8)
    images_NHWC[..., 0], images_NHWC[..., 1], images_NHWC[..., 2] = 1, 2, 3
    labels = np.arange(10)
    cifar.write_cifar10(tmp_path, (images_NHWC, labels), (images_NHWC[:2], labels[:2]), [f"c{i}" for i in range(10)])
    with open(tmp_path / "data_batch_1", "rb") as f:
        entry = pickle.load(f, encoding="bytes")  # the recipe on the CIFAR web page
    assert set(entry) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert entry[b"data"].dtype == np.uint8 and entry[b"data"].shape == (2, 3072)
    assert (entry[b"data"][:, :1024] == 1).all() and (entry[b"data"][:, 2048:] == 3).all()
    with open(tmp_path / "batches.meta", "rb") as f:
        assert pickle.load(f, encoding="latin1")["label_names"][3] == "c3"


def test_proxy_is_labelled_proxy_and_loads(proxy_dir: tuple[CifarTask, Path]) -> None:
    task, data_dir = proxy_dir
    source = task.prepare(data_dir)
    assert source.kind == "proxy" and source.name.startswith(f"{task.layout.name}-shaped proxy")
    assert not (data_dir / task.layout.folder).exists()  # never where the real data would be
    splits = task.load_splits(data_dir, task.config("smoke"))
    n_classes = task.layout.n_classes
    assert splits.train[0].shape[1:] == (3, 32, 32) and splits.train[0].dtype.is_floating_point is False
    assert len(splits.test[1]) == n_classes * task.proxy.test_per_class
    assert set(splits.test[1].tolist()) == set(range(n_classes))


def test_prepare_is_idempotent_and_deterministic(
    proxy_dir: tuple[CifarTask, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task, data_dir = proxy_dir
    again = tiny_task(task.layout)
    again.prepare(tmp_path)
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    first = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*") if p.is_file())
    assert files == first and len(files) >= 4
    assert all((tmp_path / p).read_bytes() == (data_dir / p).read_bytes() for p in files)

    def no_work(*args: object) -> None:
        raise AssertionError("prepare generated crops again")

    monkeypatch.setattr(cifar, "crops", no_work)
    assert again.prepare(tmp_path).kind == "proxy"


def test_failed_build_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(*args: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(cifar, "write_cifar10", disk_full)
    with pytest.raises(OSError, match="No space"):
        tiny_task(CIFAR10_LAYOUT).prepare(tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither a half-written proxy nor its temporary folder


def test_proxy_built_from_another_spec_is_refused(proxy_dir: tuple[CifarTask, Path]) -> None:
    task, data_dir = proxy_dir
    other = CifarTask(task.layout, CropSpec(**{**task.proxy.__dict__, "seed": 1}))
    with pytest.raises(DataError, match=r"PROXY\.json"):
        other.prepare(data_dir)


def test_unprepared_data_dir_says_how_to_prepare(tmp_path: Path) -> None:
    task = tiny_task(CIFAR10_LAYOUT)
    with pytest.raises(DataError, match="bench data prepare --tasks cifar10 --data-dir"):
        task.load_splits(tmp_path, task.config("smoke"))


def _rewrite(path: Path, change: str) -> None:
    if change == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif change == "garbage":
        path.write_bytes(b"not a pickle at all")
    elif change == "missing":
        path.unlink()
    else:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        key = "labels" if "labels" in entry else "fine_labels"
        if change == "wrong size":
            entry["data"] = entry["data"][:, :3000]
        else:  # "labels short"
            entry[key] = entry[key][:-1]
        path.write_bytes(pickle.dumps(entry, protocol=2))


@pytest.mark.parametrize("change", ["truncated", "garbage", "missing", "wrong size", "labels short"])
def test_damaged_proxy_file_raises_data_error_naming_it(
    change: str, proxy_dir: tuple[CifarTask, Path], tmp_path: Path
) -> None:
    task, data_dir = proxy_dir
    shutil.copytree(data_dir, tmp_path, dirs_exist_ok=True)
    damaged = task.proxy_root(tmp_path) / task.layout.folder / ("data_batch_1" if task.id == "cifar10" else "train")
    _rewrite(damaged, change)
    with pytest.raises(DataError) as err:
        task.load_splits(tmp_path, task.config("smoke"))
    assert str(damaged) in str(err.value) and f"bench data prepare --tasks {task.id} --data-dir {tmp_path}`" in str(
        err.value
    )


@pytest.mark.parametrize("variant", ["qkv", "tied-kv"])
def test_fast_dev_run(variant: str, proxy_dir: tuple[CifarTask, Path]) -> None:
    task, data_dir = proxy_dir
    result = fit(task, variants().get(variant), task.config("smoke"), OptimConfig(), seed=0, data_dir=data_dir,
                 fast_dev_run=True)  # fmt: skip
    assert 0.0 <= result.test["accuracy"] <= 1.0 and result.test["loss"] > 0
    assert result.data_source["kind"] == "proxy"


class _RunsCode:
    """A pickled object that, loaded by plain `pickle`, would create a file: the attack a shared data folder allows."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


def test_a_proxy_file_that_would_run_code_is_refused_and_runs_nothing(
    proxy_dir: tuple[CifarTask, Path], tmp_path: Path
) -> None:
    task, data_dir = proxy_dir
    shutil.copytree(data_dir, tmp_path / "data", dirs_exist_ok=True)
    planted = (
        task.proxy_root(tmp_path / "data") / task.layout.folder / ("test_batch" if task.id == "cifar10" else "test")
    )
    with open(planted, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    marker = tmp_path / "code-ran"
    entry["filenames"] = [_RunsCode(marker)]
    planted.write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(DataError, match="refusing to unpickle") as err:
        task.load_splits(tmp_path / "data", task.config("smoke"))
    assert str(planted) in str(err.value) and not marker.exists()
