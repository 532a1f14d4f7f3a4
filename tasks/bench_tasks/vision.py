"""Image classification with a timm ViT trained from scratch around any variant (the study's Table 2).

`ImageClassificationTask` holds everything but the data: a concrete task implements `prepare` and
`load_splits` (train/val/test tensors of images and labels). Images are uint8 (N, C, H, W) in
memory; they are scaled to [0, 1] and normalised per channel with train-split statistics.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from bench_variants.base import VariantSpec

from . import baselines
from .backbones.vit import vit
from .base import Baseline, OptimConfig, Task, TaskConfig
from .datamodule import SplitDataModule, split_tensors
from .module import Classifier, TaskModule


@dataclass(frozen=True)
class VisionConfig(TaskConfig):
    img_size: int = 28
    patch_size: int = 7
    in_chans: int = 1
    n_classes: int = 10
    max_train: int = 0  # 0: every training image; else the first max_train (after a seeded shuffle)
    max_eval: int = 0  # 0: every val and test image; else max_eval of each (a fixed sample, same for all seeds)
    global_pool: str = "token"  # timm's pooling: "token" (class token) or "avg" (mean of the patch tokens)
    mlp_ratio: int = 4  # each block's MLP width over d_model (timm's and the study's 4)


@dataclass(frozen=True)
class ImageSplits:
    """uint8 images (N, C, H, W) and int64 labels (N,) per split."""

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    #: normalised datasets built from these images, by (config, train subset seed); see `ImageDataModule.build`
    built: dict[tuple[object, ...], dict[str, Dataset]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )


_SPLITS_CACHE: dict[tuple[str, ...], ImageSplits] = {}
_BUILT_PER_SPLITS = 6  # a cell's seeds, when the train subset depends on the seed
#: image tasks whose decoded images a process keeps (every vision task of the default suite: about
#: 1 GB in all), so a worker that moves between tasks does not decode a task's files again
_SPLITS_KEPT = 5


def _stamp(folder: Path) -> str:
    try:
        return str(folder.stat().st_mtime_ns)
    except OSError:
        return ""


def _subset(split: tuple[Tensor, Tensor], n: int) -> tuple[Tensor, Tensor]:
    """`n` examples of an evaluation split in a fixed shuffled order (the same for every seed), or all."""
    images, labels = split
    if not n or n >= len(images):
        return images, labels
    keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:n]
    return images[keep], labels[keep]


class ImageDataModule(SplitDataModule):
    def __init__(self, load: Callable[[], ImageSplits], config: VisionConfig, seed: int) -> None:
        super().__init__(config.batch_size, seed)
        self.load, self.config = load, config

    def build(self) -> dict[str, Dataset]:
        """Normalised train/val/test datasets, built once per process for each config and train subset.

        Scaling, resizing and normalising every image is most of a small fit's setup (1.5 s of
        TinyImageNet's); the tensors are only read by training, so every fit of a run shares them.
        """
        splits: ImageSplits = self.load()
        subset = bool(self.config.max_train) and len(splits.train[0]) > self.config.max_train
        key = (self.config, self.seed if subset else None)
        if key not in splits.built:
            if len(splits.built) >= _BUILT_PER_SPLITS:
                splits.built.clear()
            splits.built[key] = self._normalised(splits, subset)
        return dict(splits.built[key])

    def _normalised(self, splits: ImageSplits, subset: bool) -> dict[str, Dataset]:
        images, labels = splits.train
        if subset:
            keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed))
            keep = keep[: self.config.max_train]
            images, labels = images[keep], labels[keep]
        pixels = images.float() / 255
        mean = pixels.mean(dim=(0, 2, 3), keepdim=True)[0]
        std = pixels.std(dim=(0, 2, 3), keepdim=True)[0].clamp_min(1e-3)
        out: dict[str, Dataset] = {}
        evals = {"val": _subset(splits.val, self.config.max_eval), "test": _subset(splits.test, self.config.max_eval)}
        for name, (x, y) in {"train": (images, labels), **evals}.items():
            x = self._resize(x.float() / 255)
            out[name] = TensorDataset((x - mean) / std, y.long())
        return out

    def _resize(self, x_NCHW: Tensor) -> Tensor:
        size = self.config.img_size
        if x_NCHW.shape[-1] == size and x_NCHW.shape[-2] == size:
            return x_NCHW
        return F.interpolate(x_NCHW, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class ImageClassificationTask(Task):
    """A ViT classifier around the variant; subclasses supply the data."""

    family = "vision"
    metric = "accuracy"
    higher_is_better = True
    causal = False
    learn_margin = 0.01
    equivalence_margin = 0.015  # "within about 1.5 points" of QKV's top-1 accuracy

    @abc.abstractmethod
    def load_splits(self, data_dir: Path, config: VisionConfig) -> ImageSplits:
        """Train/val/test images from the data `prepare` made ready (raises `DataError` if unusable)."""

    def _config(self, config: TaskConfig) -> VisionConfig:
        if not isinstance(config, VisionConfig):
            raise TypeError(f"task {self.id!r} needs a VisionConfig, got {type(config).__name__}")
        return config

    def datamodule(self, data_dir: Path, config: TaskConfig, seed: int) -> L.LightningDataModule:
        cfg = self._config(config)
        return ImageDataModule(lambda: self.cached_splits(data_dir, cfg), cfg, seed)

    def cached_splits(self, data_dir: Path, config: VisionConfig) -> ImageSplits:
        """`load_splits`, decoded once per process: every seed and variant of a run reads the same files.

        The key holds the folder's modification time, so data prepared anew is read anew.
        """
        key = (self.id, self.version, str(data_dir), _stamp(data_dir), repr(config))
        if key in _SPLITS_CACHE:
            _SPLITS_CACHE[key] = _SPLITS_CACHE.pop(key)  # most recently used last
        else:
            while len(_SPLITS_CACHE) >= _SPLITS_KEPT:  # the least recently used task's images go
                _SPLITS_CACHE.pop(next(iter(_SPLITS_CACHE)))
            _SPLITS_CACHE[key] = self.load_splits(data_dir, config)
        return _SPLITS_CACHE[key]

    def baseline(self, data_dir: Path, config: TaskConfig) -> Baseline:
        """A linear probe on the normalised pixels of the seed-0 train split (`max_train`, `img_size`), on test."""
        cfg = self._config(config)
        splits = split_tensors(self.datamodule(data_dir, cfg, seed=0))
        (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
        probe = baselines.linear_probe_accuracy(train_x.flatten(1), train_y, test_x.flatten(1), test_y, cfg.n_classes)
        note = (
            f"logistic regression on the top {baselines.PROBE_RANK} principal components of "
            f"{train_x[0].numel()} pixels; {len(train_y)} train, {len(test_y)} test images"
        )
        others = {"majority class": baselines.majority_class_accuracy(train_y, test_y)}
        return Baseline("linear probe on pixels", probe, others, note)

    def build_model(self, variant: VariantSpec, config: TaskConfig, optim: OptimConfig) -> TaskModule:
        cfg = self._config(config)
        net = vit(
            variant,
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            in_chans=cfg.in_chans,
            num_classes=cfg.n_classes,
            embed_dim=cfg.d_model,
            depth=cfg.n_layers,
            num_heads=cfg.n_heads,
            global_pool=cfg.global_pool,
            mlp_ratio=cfg.mlp_ratio,
        )
        return Classifier(net, optim)

    def context_length(self, config: TaskConfig) -> int:
        cfg = self._config(config)
        return (cfg.img_size // cfg.patch_size) ** 2 + 1  # patches + class token (timm keeps it with "avg")
