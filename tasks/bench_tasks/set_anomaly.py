"""Set anomaly (odd one out), the study's anomaly task: which of 10 images is not like the others?

Each example is a set of `set_size` images: `set_size - 1` of one class and one of another, at a
random position. Every image is embedded on its own, a transformer encoder WITHOUT positional
embedding (a set has no order) mixes the set, and a linear head scores each element; the loss is
cross-entropy over the positions and the metric is the accuracy of picking the odd one (chance
1/set_size = 0.10).

The study built its sets from CIFAR-100 with frozen ImageNet ResNet34 features. Neither CIFAR-100 nor
pretrained weights can be had offline, so here the images are real Fashion-MNIST (or, with the config
field `images="mnist"`, MNIST's data) and each is embedded by a small CNN trained jointly with the
encoder. Results are therefore not comparable in absolute terms with the study's.

Sets are drawn from the split's own images (train sets from train images, val from val, test from
test). Train sets depend on the run seed; val and test sets are fixed, so every seed is scored alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from bench_variants.base import VariantSpec

from . import baselines
from .backbones import Encoder, EncoderConfig
from .base import Baseline, DataError, DataSource, OptimConfig, Scale, Task, TaskConfig
from .datamodule import SplitDataModule, split_seed
from .mnist import FASHION_MNIST, MNIST, IdxImageTask
from .module import Classifier, TaskModule
from .vision import ImageSplits, VisionConfig


@dataclass(frozen=True)
class SetAnomalyConfig(TaskConfig):
    images: str = "fashion-mnist"  # the image task the sets are drawn from: "fashion-mnist" or "mnist"
    set_size: int = 10
    n_train: int = 2000  # sets per split
    n_val: int = 500
    n_test: int = 1000
    embed_channels: int = 16  # width of the per-image CNN embedder


_SCALES: dict[Scale, SetAnomalyConfig] = {
    "smoke": SetAnomalyConfig(d_model=32, n_layers=1, n_heads=2, batch_size=8, n_train=32, n_val=16, n_test=16),
    "default": SetAnomalyConfig(d_model=64, n_layers=2, n_heads=4, batch_size=32, max_epochs=2),
    # the study's size is not stated; a ViT-like encoder on 50k sets of 10
    "paper": SetAnomalyConfig(
        d_model=256,
        n_layers=4,
        n_heads=4,
        batch_size=128,
        max_epochs=20,
        n_train=50_000,
        n_val=1_000,
        n_test=10_000,
        embed_channels=32,
    ),
}


def odd_one_out_sets(labels_N: Tensor, n: int, set_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """`n` sets of indices into `labels_N`: `set_size - 1` of one class, one of another, and its position.

    The common class is uniform over the classes with at least `set_size - 1` images, the odd class
    uniform over the others; images within a set are distinct.

    Returns:
        members (n, set_size) indices into the images, and odd (n,) the position of the odd one.
    """
    if set_size < 3:  # with two elements neither is the odd one
        raise ValueError(f"set_size must be at least 3, got {set_size}")
    classes_C = labels_N.unique()
    pools = [(labels_N == c).nonzero().flatten() for c in classes_C]
    eligible = torch.tensor([k for k, pool in enumerate(pools) if len(pool) >= set_size - 1], dtype=torch.long)
    if len(classes_C) < 2 or len(eligible) == 0:
        counts = {int(c): len(pool) for c, pool in zip(classes_C, pools, strict=True)}
        raise DataError(f"sets of {set_size} need 2 classes, one with {set_size - 1} images; this split has {counts}")
    C = len(classes_C)
    common_N = eligible[torch.randint(len(eligible), (n,), generator=generator)]  # index into classes_C
    odd_class_N = (common_N + torch.randint(1, C, (n,), generator=generator)) % C
    common_NS = torch.empty(n, set_size - 1, dtype=torch.long)  # S = set_size - 1
    odd_image_N = torch.empty(n, dtype=torch.long)
    for k, pool in enumerate(pools):
        rows = (common_N == k).nonzero().flatten()
        if len(rows):  # distinct images: the top set_size - 1 of random keys
            picks = torch.rand(len(rows), len(pool), generator=generator).topk(set_size - 1, dim=1).indices
            common_NS[rows] = pool[picks]
        rows = (odd_class_N == k).nonzero().flatten()
        odd_image_N[rows] = pool[torch.randint(len(pool), (len(rows),), generator=generator)]
    odd_N = torch.randint(set_size, (n,), generator=generator)
    # put the odd image (appended last) at its position, shifting the later common ones right
    slots_NT = torch.arange(set_size).expand(n, set_size)
    source_NT = torch.where(slots_NT < odd_N[:, None], slots_NT, slots_NT - 1)
    source_NT = torch.where(slots_NT == odd_N[:, None], set_size - 1, source_NT)
    members_NT = torch.cat([common_NS, odd_image_N[:, None]], dim=1).gather(1, source_NT)
    return members_NT, odd_N


class SetDataset(Dataset[tuple[Tensor, Tensor]]):
    """Sets gathered from a shared uint8 image tensor, normalised on the fly."""

    def __init__(self, images_NCHW: Tensor, members_NT: Tensor, odd_N: Tensor, mean: Tensor, std: Tensor) -> None:
        self.images_NCHW, self.members_NT, self.odd_N = images_NCHW, members_NT, odd_N
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.odd_N)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x_TCHW = self.images_NCHW[self.members_NT[i]].float() / 255
        return (x_TCHW - self.mean) / self.std, self.odd_N[i]


#: (images, mean, std) of the training images seen last: the statistics took about 0.3 s of every fit
_STATS: list[tuple[Tensor, Tensor, Tensor]] = []


def pixel_stats(images_NCHW: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std (C, 1, 1) of uint8 images scaled to [0, 1], computed once per images tensor."""
    for seen, mean, std in _STATS:
        if seen is images_NCHW:
            return mean, std
    pixels = images_NCHW.float() / 255
    mean = pixels.mean(dim=(0, 2, 3)).view(-1, 1, 1)
    std = pixels.std(dim=(0, 2, 3)).clamp_min(1e-3).view(-1, 1, 1)
    _STATS[:] = [*_STATS[-3:], (images_NCHW, mean, std)]
    return mean, std


class SetAnomalyDataModule(SplitDataModule):
    def __init__(self, images: IdxImageTask, data_dir: Path, config: SetAnomalyConfig, seed: int) -> None:
        super().__init__(config.batch_size, seed)
        self.images, self.data_dir, self.config = images, data_dir, config

    def build(self) -> dict[str, Dataset]:
        # the raw splits, which the image task loads alike for any of its configs: its default one keys
        # the per-process cache, which its own cells share
        config = self.images.config("default")
        assert isinstance(config, VisionConfig)  # an image task's own config, not user input
        splits: ImageSplits = self.images.cached_splits(self.data_dir, config)
        mean, std = pixel_stats(splits.train[0])
        cfg = self.config
        sizes = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
        out: dict[str, Dataset] = {}
        for split, n in sizes.items():
            images_NCHW, labels_N = getattr(splits, split)
            generator = torch.Generator().manual_seed(split_seed(self.seed, split))
            members_NT, odd_N = odd_one_out_sets(labels_N, n, cfg.set_size, generator)
            out[split] = SetDataset(images_NCHW, members_NT, odd_N, mean, std)
        return out


class ImageEmbedder(nn.Module):
    """A small CNN, image (C, H, W) -> (D,), trained jointly (stands in for frozen ResNet34 features)."""

    def __init__(self, in_chans: int, channels: int, d_model: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, channels, 3, stride=2, padding=1),  # 28 -> 14
            nn.GELU(),
            nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1),  # 14 -> 7
            nn.GELU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.proj = nn.Linear(2 * channels * 16, d_model)

    def forward(self, x_NCHW: Tensor) -> Tensor:
        return self.proj(self.features(x_NCHW))  # (N, D)


class SetScorer(nn.Module):
    """Per-image embedding, position-free encoder around the variant, one score per element."""

    def __init__(self, variant: VariantSpec, config: SetAnomalyConfig, in_chans: int = 1) -> None:
        super().__init__()
        self.embed = ImageEmbedder(in_chans, config.embed_channels, config.d_model)
        self.encoder = Encoder(EncoderConfig(config.n_layers, config.d_model, config.n_heads, max_len=0), variant)
        self.head = nn.Linear(config.d_model, 1)

    def forward(self, x_BTCHW: Tensor) -> Tensor:
        B, T = x_BTCHW.shape[:2]
        e_BTD = self.embed(x_BTCHW.flatten(0, 1)).view(B, T, -1)
        return self.head(self.encoder(e_BTD)).squeeze(-1)  # (B, T)


class SetAnomalyTask(Task):
    """Odd one out in sets of images, through an encoder without positions."""

    id = "set-anomaly"
    version = "1"
    family = "anomaly"
    metric = "accuracy"
    higher_is_better = True
    causal = False
    description = "set anomaly: pick the odd image in a set of 10 (chance 0.10), the study's anomaly task"
    learn_margin = 0.05

    def __init__(self, images: str = "fashion-mnist", sources: dict[str, IdxImageTask] | None = None) -> None:
        """The task over `images`' data.

        Args:
            images: The image task this instance's configs draw sets from ("fashion-mnist" or "mnist").
            sources: Image tasks by id; the registered ones by default (tests pass their own).
        """
        self.sources = sources if sources is not None else {"fashion-mnist": FASHION_MNIST, "mnist": MNIST}
        self.images = images
        self._source(images)

    def _source(self, images: str) -> IdxImageTask:
        if images not in self.sources:
            raise ValueError(f"set-anomaly images {images!r} unknown; available: {', '.join(sorted(self.sources))}")
        return self.sources[images]

    def _config(self, config: TaskConfig) -> SetAnomalyConfig:
        if not isinstance(config, SetAnomalyConfig):
            raise TypeError(f"task {self.id!r} needs a SetAnomalyConfig, got {type(config).__name__}")
        return config

    def config(self, scale: Scale) -> TaskConfig:
        base = _SCALES[scale]
        return base if base.images == self.images else SetAnomalyConfig(**{**base.as_dict(), "images": self.images})

    def prepare(self, data_dir: Path) -> DataSource:
        return self.source_for(self.images, self._source(self.images).prepare(data_dir))

    @staticmethod
    def source_for(images: str, inner: DataSource) -> DataSource:
        """The sets' `DataSource`, given the one of the images they are drawn from."""
        note = (
            f"sets built in memory from {inner.name} images ({inner.note}); stands in for the study's "
            "CIFAR-100 sets with frozen ImageNet ResNet34 features (neither is available offline, no "
            "pretrained weights): a small CNN embedder is trained jointly instead"
        )
        return DataSource(f"odd-one-out sets of {inner.name} images", "proxy", inner.origin, note)

    def datamodule(self, data_dir: Path, config: TaskConfig, seed: int) -> L.LightningDataModule:
        cfg = self._config(config)
        source = self._source(cfg.images)
        if cfg.images != self.images:  # `prepare` readied this instance's images, not these
            source.prepare(data_dir)
        return SetAnomalyDataModule(source, data_dir, cfg, seed)

    def build_model(self, variant: VariantSpec, config: TaskConfig, optim: OptimConfig) -> TaskModule:
        return Classifier(SetScorer(variant, self._config(config)), optim)  # logits over the set's members

    def context_length(self, config: TaskConfig) -> int:
        return self._config(config).set_size

    def baseline(self, data_dir: Path, config: TaskConfig) -> Baseline:
        """Pick the image farthest from its set's mean in pixel space; accuracy on the test sets."""
        datamodule = self.datamodule(data_dir, config, seed=0)
        assert isinstance(datamodule, SetAnomalyDataModule)
        test = datamodule.build()["test"]
        assert isinstance(test, SetDataset)
        sets = (test.images_NCHW[members_BS].flatten(2).float() for members_BS in test.members_NT.split(1024))
        picks_N = torch.cat([baselines.farthest_from_mean(sets_BSD) for sets_BSD in sets])
        others = {"chance": 1 / test.members_NT.shape[1]}
        note = f"no training; {len(test)} test sets of {test.members_NT.shape[1]} images, raw pixels"
        return Baseline("farthest from the set mean (pixels)", baselines.accuracy(picks_N, test.odd_N), others, note)


SET_ANOMALY = SetAnomalyTask()
