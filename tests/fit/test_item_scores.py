"""Item scores: a fit of an accuracy task records what it got right per test item, packed, in the test split's
fixed order, and it decodes to the fit's test accuracy; tasks without a per-item accuracy record none."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.fit.loop import FitLoop
from bench.fit.train import FitResult, fit
from bench.registry import tasks, variants
from bench.run.cells import _FIT_FIELDS, _seed_record
from bench_record.schema import ItemScores, SeedFit
from bench_tasks.base import OptimConfig
from bench_tasks.module import Classifier
from bench_tasks.vision import ImageDataModule, ImageSplits, VisionConfig
from tests.tasks.test_task_mnist import write_raw

pytestmark = pytest.mark.usefixtures("offline", "one_thread")


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MNIST in torchvision's raw idx layout: 1,200 train and 120 test images (what `bench data prepare` reads)."""
    data_dir = tmp_path_factory.mktemp("mnist")
    write_raw(data_dir / "MNIST" / "raw", n_train=1200, n_test=120)
    return data_dir


def test_a_smoke_fit_records_item_scores_that_decode_to_its_test_accuracy(mnist_dir: Path) -> None:
    task = tasks().get("mnist")
    config = dataclasses.replace(task.config("smoke"), max_epochs=1)
    dev = fit(task, variants().get("qkv"), config, OptimConfig(), seed=0, data_dir=mnist_dir, fast_dev_run=True)
    assert dev.item_scores is None  # a dev run tests one batch, not the test set
    results = {
        seed: fit(task, variants().get(variant), config, OptimConfig(lr=3e-3), seed=seed, data_dir=mnist_dir)
        for seed, variant in ((0, "qkv"), (1, "tied-kv"))
    }
    test_labels = {seed: _test_labels(task.datamodule(mnist_dir, config, seed)) for seed in results}
    assert torch.equal(test_labels[0], test_labels[1])  # one test set in one order, whatever the seed
    for seed, result in results.items():
        assert result.item_scores is not None
        scores = ItemScores.from_dict(result.item_scores)
        assert (scores.metric, scores.n) == ("accuracy", len(test_labels[seed]))
        assert len(scores.correct) == 4 * -(-((scores.n + 7) // 8) // 3)  # base64 of ceil(n / 8) bytes
        assert scores.unpack().mean() == pytest.approx(result.test["accuracy"], abs=1e-6)
        # what bench writes per seed: the typed record reads it back and writes the same JSON
        record = _seed_record(seed, {"lr": 3e-3}, result)
        fitted = SeedFit.from_dict(record)
        assert fitted.item_scores == scores and fitted.to_dict() == record


def _test_labels(datamodule: ImageDataModule) -> torch.Tensor:
    datamodule.setup("test")
    return torch.cat([y for _, y in datamodule.test_dataloader()])


def test_item_scores_follow_the_test_splits_order() -> None:
    """Item i of the record is example i of the test split: the loader does not shuffle it."""
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randint(0, 256, (90, 1, 8, 8), dtype=torch.uint8, generator=g), torch.arange(90) % 3
    splits = ImageSplits(train=(images[:60], labels[:60]), val=(images[60:70], labels[60:70]),
                         test=(images[60:], labels[60:]))  # fmt: skip
    config = VisionConfig(d_model=8, n_layers=1, n_heads=2, img_size=8, patch_size=4, n_classes=3, batch_size=7)
    torch.manual_seed(0)
    module = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), OptimConfig(lr=1e-2))
    datamodule = ImageDataModule(lambda: splits, config, seed=3)
    loop = FitLoop(module, datamodule, torch.device("cpu"))
    loop.fit(config, validate=True)
    test = loop.test()
    correct = loop.test_items()["accuracy"]
    x, y = datamodule.datasets["test"].tensors  # type: ignore[attr-defined]
    with torch.no_grad():
        expected = module.net(x).argmax(-1) == y
    assert correct.dtype == torch.bool and torch.equal(correct, expected)
    assert float(correct.float().mean()) == pytest.approx(test["accuracy"], abs=1e-6)
    assert set(module.item_scores("val")) == {"accuracy"} and len(module.item_scores("val")["accuracy"]) == 10


def test_tasks_without_a_per_item_accuracy_and_dev_runs_record_none(tmp_path: Path) -> None:
    task = tasks().get("reverse")  # steps to a target; its accuracy is per token, not per test item
    result = fit(task, variants().get("qkv"), task.config("smoke"), OptimConfig(), seed=0, data_dir=tmp_path)
    assert result.item_scores is None and "item_scores" not in _seed_record(0, {}, result)
    assert "item_scores" not in _FIT_FIELDS  # a seed saved before item scores is kept, not fitted again
    assert {f.name for f in dataclasses.fields(FitResult)} - _FIT_FIELDS == {"item_scores"}


def test_packing_is_compact_and_exact() -> None:
    bits = torch.rand(10_000, generator=torch.Generator().manual_seed(1)) < 0.7
    scores = ItemScores.pack("accuracy", bits.numpy())
    assert len(scores.correct) == 4 * -(-1250 // 3)  # 1,250 bytes before base64
    assert (scores.unpack() == bits.numpy()).all() and ItemScores.from_dict(scores.to_dict()) == scores
    odd = ItemScores.pack("accuracy", [1, 0, 1])
    assert odd.unpack().tolist() == [True, False, True]
    with pytest.raises(ValueError, match="expected 2 for n=9"):
        ItemScores.from_dict({**odd.to_dict(), "n": 9})
    with pytest.raises(ValueError, match="0/1"):
        ItemScores.pack("accuracy", [0, 2, 1])
