"""MVTec-style image anomaly detection: a masked-patch ViT autoencoder around any variant.

Unsupervised: the model trains on defect-free images only (`train/good`) and is scored on `test/*`
(good and defective, with pixel masks). Not in the study; part of this benchmark's mission.

Data, always read through anomalib's `MVTecAD` datamodule (MVTec layout, masks, resizing, a fixed
label-aware split of `test/` into validation and test halves):
- `category` brick, grass or gravel (the default): the offline proxy that `prepare` builds from
  scikit-image's CC0 textures with anomalib's Perlin defects (`textures.py`), kind "proxy".
- `category` one of MVTec AD's 15: the real dataset at `<data_dir>/MVTecAD/<category>`, kind "real".
  anomalib downloads it (4.9 GB) only when the folder is missing and `BENCH_DOWNLOAD=1` is set.

Model (pure torch, `MaskedPatchAutoencoder`): hidden patches' pixels are zeroed -> a convolutional
stem embeds each patch with the visible pixels of its 3x3-patch neighbourhood (kernel 3P, stride P)
-> `Encoder` with learned positions -> per-patch linear decoder to pixels. Training hides a random
`mask_ratio` of the patches (flipped / rot90 images) behind a learned token and reconstructs them
from the visible ones (MSE on hidden patches): a patch cannot be copied through, so a defect,
unpredictable from the normal texture around it, leaves a large error. The stem is there because
attention alone, from a lone mask token, takes hundreds of epochs to find the neighbours that
predict a patch: with a per-patch linear embedding the default fit stayed at the error of
predicting the mean pixel (normalised MSE 0.136 vs 0.139), while the stem gets 0.02 in 8 epochs.
At evaluation every patch is hidden exactly once (`eval_stride`^2 passes over a regular grid); the
per-pixel squared error, Gaussian-smoothed by `smooth_sigma` (none at the default scale, whose
defects include 1-2 px scratches), is the anomaly map; the image score is the mean of its top
`top_k` fraction (10% at the default scale). Image and pixel AUROC use anomalib's `AUROC` metric.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from bench_variants.base import VariantSpec

from . import baselines
from .backbones import Encoder, EncoderConfig
from .base import Baseline, DataError, DataSource, OptimConfig, Scale, Task, TaskConfig
from .datamodule import SplitDataModule
from .module import Sums, TaskModule, as_logged, loss_sums
from .textures import FOLDER, MANIFEST, TEXTURES, build_textures

#: MVTec AD's categories (anomalib's `anomalib.data.datasets.image.mvtecad.CATEGORIES`).
MVTEC_CATEGORIES: tuple[str, ...] = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
)  # fmt: skip
MVTEC_FOLDER = "MVTecAD"
PROXY_NAME = "MVTec-layout texture anomalies (scikit-image brick/grass/gravel + anomalib Perlin defects)"
SPLIT_SEED = 0  # val/test halves of test/ do not depend on the run seed


@dataclass(frozen=True)
class MVTecConfig(TaskConfig):
    category: str = "brick"
    img_size: int = 64  # images are resized to img_size x img_size
    patch_size: int = 8
    mask_ratio: float = 0.25  # fraction of patches hidden per training image
    eval_stride: int = 2  # evaluation hides every eval_stride-th patch per axis, in eval_stride**2 passes
    # defects include 1-2 px scratches at 64 px: smoothing washes them out (top 10% beat the max: measured)
    smooth_sigma: float = 0.0  # Gaussian smoothing of the anomaly map, in pixels (0: none)
    top_k: float = 0.0  # image score = mean of the highest top_k fraction of the map (0: its maximum)
    augment: bool = True  # random flips and rot90 of training images (textures have no orientation to keep)


# ---------------------------------------------------------------------------------------------- data


def texture_source(root: Path, category: str) -> DataSource:
    """The proxy's `DataSource`; the note carries the build's manifest (image size and counts)."""
    manifest = " ".join((root / MANIFEST).read_text().split()) if (root / MANIFEST).is_file() else "not built yet"
    note = f"category {category}; CC0 textures; train and test crops from disjoint checkerboard tiles; build {manifest}"
    return DataSource(PROXY_NAME, "proxy", str(root), note)


def locate(data_dir: Path, category: str) -> tuple[Path, DataSource]:
    """The root that holds `category` in MVTec layout and the source it is.

    Raises:
        DataError: `category` is neither a texture proxy nor an MVTec AD category.
    """
    if category in TEXTURES:
        root = Path(data_dir) / FOLDER
        return root, texture_source(root, category)
    if category in MVTEC_CATEGORIES:
        root = Path(data_dir) / MVTEC_FOLDER
        return root, DataSource(f"MVTec AD ({category})", "real", str(root / category), "CC BY-NC-SA 4.0")
    known = (*TEXTURES, *MVTEC_CATEGORIES)
    close = difflib.get_close_matches(category, known, n=3)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    raise DataError(
        f"Unknown mvtec category {category!r}; {hint}Available: {', '.join(TEXTURES)} (offline texture proxy), "
        f"{', '.join(MVTEC_CATEGORIES)} (MVTec AD under {Path(data_dir) / MVTEC_FOLDER})"
    )


def check_layout(category_dir: Path) -> None:
    """Fail early, naming the file, on a tree anomalib would misread: no images, or a missing mask.

    Raises:
        DataError: `train/good` or `test/` is empty, a defective image has no
            `ground_truth/<defect>/<name>_mask.png`, or a mask has no image.
    """
    if not any((category_dir / "train" / "good").glob("*.png")):
        raise DataError(f"no training images: {category_dir / 'train' / 'good'}/*.png is empty or missing")
    defects = sorted(p for p in (category_dir / "test").glob("*") if p.is_dir() and any(p.glob("*.png")))
    if not defects:
        raise DataError(f"no test images under {category_dir / 'test'}/<good|defect>/*.png")
    for folder in defects:
        if folder.name == "good":
            continue
        for image in sorted(folder.glob("*.png")):
            mask = category_dir / "ground_truth" / folder.name / f"{image.stem}_mask.png"
            if not mask.is_file():
                raise DataError(f"{image} has no mask: expected {mask}; restore it or remove the image")
    for mask in sorted((category_dir / "ground_truth").glob("*/*_mask.png")):
        image = category_dir / "test" / mask.parent.name / f"{mask.name.removesuffix('_mask.png')}.png"
        if not image.is_file():
            raise DataError(f"{mask} masks no image: expected {image}; restore it or remove the mask")


def _decode_error(path: Path | str) -> OSError | None:
    """Why PIL cannot decode the image at `path` in full, or None when it can."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except OSError as err:
        return err
    return None


def _unreadable(paths: list[str]) -> str:
    """The first of `paths` that PIL cannot fully decode (or all of them, if each decodes)."""
    return next((path for path in paths if _decode_error(path)), " or ".join(paths))


def check_images(category_dir: Path, fix: str) -> None:
    """Every PNG of a category decodes in full: anomalib's reader fills a truncated one in without a word.

    About 0.2 s for a texture proxy's 840 images, once per process (see `anomalib_splits`).
    """
    for path in sorted(category_dir.rglob("*.png")):
        if err := _decode_error(path):
            raise DataError(f"cannot read {path} ({err}); {fix}")


class NamedErrors(Dataset):
    """An anomalib dataset whose unreadable files raise `DataError` naming the file."""

    def __init__(self, inner: Any, fix: str) -> None:
        self.inner, self.fix = inner, fix

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.inner[index]
        except OSError as err:
            row = self.inner.samples.iloc[index]
            paths = [p for p in (row.image_path, row.mask_path) if isinstance(p, str) and p]
            raise DataError(f"cannot read {_unreadable(paths)} ({err}); {self.fix}") from err


def collate(items: list[Any]) -> dict[str, Tensor]:
    """anomalib's `ImageBatch.collate`, unpacked into plain tensors the harness can count and move.

    Returns `image` (B, 3, H, W) in [0, 1], `label` (B,) 1 for defective, and `mask` (B, H, W) bool
    where the dataset has masks (the first value is the image, so `len` of it is the batch size).
    """
    from anomalib.data import ImageBatch

    batch: Any = ImageBatch.collate(items)  # an ImageBatch; collate is typed as the mixin
    out = {"image": batch.image.as_subclass(Tensor), "label": batch.gt_label.as_subclass(Tensor).long()}
    if batch.gt_mask is not None:
        out["mask"] = batch.gt_mask.as_subclass(Tensor).bool()
    return out


def stack_split(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """All images (N, 3, H, W) in [0, 1] and labels (N,) of one split, in dataset order."""
    batches = list(DataLoader(dataset, batch_size=256, collate_fn=collate))
    return torch.cat([b["image"] for b in batches]), torch.cat([b["label"] for b in batches])


class MVTecDataModule(SplitDataModule):
    """anomalib's `MVTecAD` over `root/category`: train = `train/good`, val and test = halves of `test/`."""

    def __init__(self, root: Path, config: MVTecConfig, seed: int, source: DataSource, data_dir: Path) -> None:
        super().__init__(config.batch_size, seed, collate_fn=collate)
        self.root, self.config, self.source, self.data_dir = root, config, source, data_dir

    @property
    def category_dir(self) -> Path:
        return self.root / self.config.category

    def prepare_data(self) -> None:
        if self.source.kind == "proxy":
            build_textures(self.data_dir)
        elif not self.category_dir.is_dir():
            if os.environ.get("BENCH_DOWNLOAD") != "1":
                raise DataError(
                    f"MVTec AD category {self.config.category!r} not found at {self.category_dir}; put the "
                    f"extracted MVTec AD under {self.root} (<category>/train/good/*.png, test/, ground_truth/) "
                    "or set BENCH_DOWNLOAD=1 to let anomalib download it (4.9 GB)"
                )
            from anomalib.data import MVTecAD

            MVTecAD(root=self.root, category=self.config.category).prepare_data()

    def build(self) -> dict[str, Dataset]:
        fix = f"delete {self.root} and run prepare again" if self.source.kind == "proxy" else "re-extract MVTec AD"
        return dict(anomalib_splits(self.category_dir, self.config.img_size, fix))


@functools.lru_cache(maxsize=4)
def anomalib_splits(category_dir: Path, img_size: int, fix: str) -> dict[str, Dataset]:
    """anomalib's train/val/test datasets of one category at one size, built once per process.

    Building them (listing and checking the files) took 0.2-0.7 s of every fit; the fits only read them.
    """
    from anomalib.data import MVTecAD
    from torchvision.transforms.v2 import Resize

    check_layout(category_dir)
    check_images(category_dir, fix)
    anomalib_dm = MVTecAD(
        root=category_dir.parent,
        category=category_dir.name,
        num_workers=0,
        augmentations=Resize((img_size, img_size), antialias=True),
        val_split_mode="from_test",
        val_split_ratio=0.5,
        seed=SPLIT_SEED,
    )
    anomalib_dm.setup()
    return {split: NamedErrors(getattr(anomalib_dm, f"{split}_data"), fix) for split in ("train", "val", "test")}


# --------------------------------------------------------------------------------------------- model


def gaussian_blur(maps_BHW: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian smoothing with reflected borders; `sigma` <= 0 returns the maps unchanged."""
    if sigma <= 0:
        return maps_BHW
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, maps_BHW.shape[-1] - 1, maps_BHW.shape[-2] - 1)
    x_K = torch.arange(-radius, radius + 1, dtype=maps_BHW.dtype, device=maps_BHW.device)
    kernel_K = torch.exp(-(x_K**2) / (2 * sigma**2))
    kernel_K = kernel_K / kernel_K.sum()
    x_B1HW = F.pad(maps_BHW[:, None], (radius, radius, radius, radius), mode="reflect")
    x_B1HW = F.conv2d(x_B1HW, kernel_K.view(1, 1, 1, -1))
    return F.conv2d(x_B1HW, kernel_K.view(1, 1, -1, 1))[:, 0]


def top_k_mean(maps_BHW: Tensor, fraction: float) -> Tensor:
    """Per image, the mean of the highest `fraction` of map values (at least one value: the max)."""
    flat_BP = maps_BHW.flatten(1)
    k = max(1, round(fraction * flat_BP.shape[1]))
    return flat_BP.topk(k, dim=1).values.mean(dim=1)


def sincos_2d(grid: int, dim: int) -> Tensor:
    """(grid*grid, dim) 2D sin-cos position table (MAE): half the channels encode the row, half the column."""
    quarter = dim // 4
    omega_Q = 1.0 / 10_000 ** (torch.arange(quarter, dtype=torch.float32) / max(1, quarter))
    rows_GG, cols_GG = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    parts = []
    for coord_GG in (rows_GG, cols_GG):
        angle_NQ = coord_GG.flatten().float()[:, None] * omega_Q[None]
        parts += [angle_NQ.sin(), angle_NQ.cos()]
    table_ND = torch.cat(parts, dim=1)
    return F.pad(table_ND, (0, dim - table_ND.shape[1]))  # (N, D); zero channels when dim % 4


class MaskedPatchAutoencoder(nn.Module):
    """Image (B, 3, H, W) in [0, 1] -> reconstruction of the hidden patches, and anomaly maps."""

    def __init__(self, variant: VariantSpec, config: MVTecConfig) -> None:
        super().__init__()
        self.config = config
        self.grid = config.img_size // config.patch_size
        patch_dim = 3 * config.patch_size**2
        P = config.patch_size
        # each patch sees its 8 neighbours' visible pixels: interpolation is local, attention refines it
        self.embed = nn.Conv2d(3, config.d_model, kernel_size=3 * P, stride=P, padding=P)
        self.mask_token = nn.Parameter(torch.zeros(config.d_model))
        encoder = EncoderConfig(config.n_layers, config.d_model, config.n_heads, max_len=self.grid**2)
        self.encoder = Encoder(encoder, variant)
        if self.encoder.pos_emb is not None:
            # start the learned positions at MAE's 2D sin-cos table: from N(0, 1) attention takes far
            # longer to find the neighbouring patches that predict a hidden one
            with torch.no_grad():
                self.encoder.pos_emb.weight.copy_(sincos_2d(self.grid, config.d_model))
        self.head = nn.Linear(config.d_model, patch_dim)

    def patchify(self, x_BCHW: Tensor) -> Tensor:
        B, C, G, P = x_BCHW.shape[0], x_BCHW.shape[1], self.grid, self.config.patch_size
        x_BCGPGP = x_BCHW.reshape(B, C, G, P, G, P)
        return x_BCGPGP.permute(0, 2, 4, 1, 3, 5).reshape(B, G * G, C * P * P)  # (B, N, C*P*P)

    def unpatchify(self, x_BNX: Tensor, channels: int) -> Tensor:
        B, G, P = x_BNX.shape[0], self.grid, self.config.patch_size
        x_BGGCPP = x_BNX.reshape(B, G, G, channels, P, P)
        return x_BGGCPP.permute(0, 3, 1, 4, 2, 5).reshape(B, channels, G * P, G * P)  # (B, C, H, W)

    def forward(self, x_BCHW: Tensor, hide_BN: Tensor) -> Tensor:
        """Predicted patches (B, N, 3*P*P) in normalised pixels; hidden patches are seen as the mask token."""
        G, P = self.grid, self.config.patch_size
        visible_B1HW = (~hide_BN).view(-1, 1, G, G).repeat_interleave(P, 2).repeat_interleave(P, 3)
        x_BCHW = _normalise(x_BCHW) * visible_B1HW  # hidden pixels are 0 (grey) before any neighbour sees them
        tokens_BND = self.embed(x_BCHW).flatten(2).transpose(1, 2)  # (B, N, D)
        tokens_BND = tokens_BND + hide_BN[..., None] * self.mask_token.to(tokens_BND.dtype)
        return self.head(self.encoder(tokens_BND))

    def random_hide(self, batch: int, device: torch.device) -> Tensor:
        """(B, N) bool: exactly round(mask_ratio * N) hidden patches per image, drawn from the global RNG."""
        n = self.grid**2
        n_hide = max(1, round(self.config.mask_ratio * n))
        ranks_BN = torch.rand(batch, n, device=device).argsort(dim=1).argsort(dim=1)
        return ranks_BN < n_hide

    def loss(self, x_BCHW: Tensor, hide_BN: Tensor) -> Tensor:
        """Mean squared error over the hidden patches."""
        err_BN = (self(x_BCHW, hide_BN) - self.patchify(_normalise(x_BCHW))).pow(2).mean(-1)
        return (err_BN * hide_BN).sum() / hide_BN.sum().clamp(min=1)

    def error_map(self, x_BCHW: Tensor) -> Tensor:
        """(B, H, W) squared error of every pixel, predicted while its patch was hidden (stride**2 passes)."""
        s, G = self.config.eval_stride, self.grid
        rows_GG, cols_GG = torch.meshgrid(torch.arange(G), torch.arange(G), indexing="ij")
        phase_N = ((rows_GG % s) * s + cols_GG % s).flatten().to(x_BCHW.device)
        target_BNX = self.patchify(_normalise(x_BCHW))
        err_BN1PP = torch.zeros(x_BCHW.shape[0], G * G, self.config.patch_size**2, device=x_BCHW.device)
        for phase in range(s * s):
            hide_BN = (phase_N == phase).expand(x_BCHW.shape[0], -1)
            sq_BNCPP = (self(x_BCHW, hide_BN) - target_BNX).pow(2).unflatten(-1, (3, -1))
            err_BN1PP = torch.where(hide_BN[..., None], sq_BNCPP.mean(-2), err_BN1PP)
        return self.unpatchify(err_BN1PP, channels=1)[:, 0]

    def anomaly_map(self, x_BCHW: Tensor) -> Tensor:
        """(B, H, W) smoothed reconstruction error: high where the image is unlike the training images."""
        return gaussian_blur(self.error_map(x_BCHW), self.config.smooth_sigma)

    def score(self, map_BHW: Tensor) -> Tensor:
        """(B,) image anomaly scores from anomaly maps."""
        return top_k_mean(map_BHW, self.config.top_k)


def augment(x_BCHW: Tensor) -> Tensor:
    """Each image under one of the 8 flips/rotations of the square, drawn from the global RNG."""
    B = x_BCHW.shape[0]
    flip_B = torch.rand(B, device=x_BCHW.device) < 0.5
    x_BCHW = torch.where(flip_B[:, None, None, None], x_BCHW.flip(-1), x_BCHW)
    turns_B = torch.randint(0, 4, (B,)).tolist()
    return torch.stack([torch.rot90(x_CHW, k, (-2, -1)) for x_CHW, k in zip(x_BCHW, turns_B, strict=True)])


def _normalise(x_BCHW: Tensor) -> Tensor:
    return (x_BCHW - 0.5) / 0.25  # [0, 1] -> about zero mean, unit spread for natural images


# ----------------------------------------------------------------------------------------- the module


def auroc(preds: Tensor, targets: Tensor) -> float | None:
    """Area under the ROC curve with anomalib's `AUROC`; None when `targets` holds a single class.

    `preds` and `targets` are image scores (N,) and labels (N,), or maps (N, H, W) and masks (N, H, W).
    Predictions are first rescaled to [0, 1] (min-max, which keeps their order and so the AUROC):
    torchmetrics takes predictions outside [0, 1] for logits and applies a sigmoid, which rounds
    every error above ~17 to exactly 1.0 and turns distinct scores into ties.
    """
    from anomalib.data import ImageBatch
    from anomalib.metrics import AUROC

    targets = targets.bool()
    if bool(targets.all()) or not bool(targets.any()):
        return None
    preds = preds.double()
    preds = (preds - preds.min()) / (preds.max() - preds.min()).clamp(min=1e-300)
    n = preds.shape[0]
    if preds.ndim == 1:
        batch = ImageBatch(image=torch.zeros(1, 3, 1, 1).expand(n, -1, -1, -1), pred_score=preds, gt_label=targets)
        metric = AUROC(fields=["pred_score", "gt_label"])
    else:
        image = torch.zeros(1, 3, 1, 1).expand(n, -1, *preds.shape[1:])
        batch = ImageBatch(image=image, anomaly_map=preds, gt_mask=targets)
        metric = AUROC(fields=["anomaly_map", "gt_mask"])
    metric.update(batch)
    return float(metric.compute())


class AnomalyModule(TaskModule):
    """Trains on reconstruction MSE; collects scores and maps over val/test and logs image/pixel AUROC.

    AUROC is exact (anomalib's `AUROC`, torchmetrics' `BinaryROC` without binning) over the whole
    epoch, so it is computed at epoch end from what the steps collected, not averaged over batches.
    A stage whose examples are all of one class (e.g. one `fast_dev_run` batch) logs no AUROC.
    """

    net: MaskedPatchAutoencoder

    def __init__(self, net: MaskedPatchAutoencoder, optim: OptimConfig) -> None:
        super().__init__(net, optim)
        self._collected: dict[str, list[dict[str, Tensor]]] = {}

    def evaluate(self, batch: dict[str, Tensor]) -> tuple[Tensor, Sums]:
        images_BCHW = batch["image"]
        if self.training and self.net.config.augment:
            images_BCHW = augment(images_BCHW)
        loss = self.net.loss(images_BCHW, self.net.random_hide(images_BCHW.shape[0], images_BCHW.device))
        return loss, loss_sums(loss, images_BCHW.shape[0])

    def eval_batch(self, stage: str, batch: dict[str, Tensor]) -> None:
        images_BCHW, labels_B = batch["image"], batch["label"]
        errors_BHW = self.net.error_map(images_BCHW)
        maps_BHW = gaussian_blur(errors_BHW, self.net.config.smooth_sigma)
        good_B = labels_B == 0
        if good_B.any():  # the training objective on held-out good images
            loss = errors_BHW[good_B].mean()
            self._accumulate(stage, loss_sums(loss, int(good_B.sum())))
        found = {"score": self.net.score(maps_BHW), "label": labels_B, "map": maps_BHW}
        if "mask" in batch:
            found["mask"] = batch["mask"]
        self._collected.setdefault(stage, []).append({k: v.detach().cpu() for k, v in found.items()})

    def epoch_metrics(self, stage: str) -> dict[str, float]:
        """The stage's mean loss, and image (and pixel, where masks exist) AUROC over everything it scored."""
        found = self._collected.pop(stage, [])
        metrics: dict[str, float] = {}
        if found:
            joined = {key: torch.cat([f[key] for f in found]) for key in found[0]}
            values = {"image_auroc": auroc(joined["score"], joined["label"])}
            if "mask" in joined:
                values["pixel_auroc"] = auroc(joined["map"], joined["mask"])
            metrics = {name: as_logged(value) for name, value in values.items() if value is not None}
        return {**metrics, **super().epoch_metrics(stage)}


# ---------------------------------------------------------------------------------------------- task

_SCALES: dict[Scale, MVTecConfig] = {
    "smoke": MVTecConfig(d_model=32, n_layers=1, n_heads=2, batch_size=16, img_size=32, limit_train_batches=4),
    # 6 epochs: QKV's image AUROC ~0.81 (8 epochs: 0.87), far past the pixel-deviation baseline (0.65)
    "default": MVTecConfig(d_model=64, n_layers=2, n_heads=4, batch_size=8, max_epochs=6, top_k=0.1),
    "paper": MVTecConfig(
        d_model=256, n_layers=6, n_heads=8, batch_size=32, max_epochs=100, img_size=128, smooth_sigma=1.0, top_k=0.001
    ),
}


class MVTecTask(Task):
    """Unsupervised image anomaly detection in MVTec AD's layout, scored by image AUROC."""

    id = "mvtec"
    version = "3"  # 3: checkerboard texture split (build v3), conv-stem context, flips, top-10% score
    family = "anomaly"
    metric = "image_auroc"
    higher_is_better = True
    causal = False
    description = "MVTec-style anomaly detection (train on good images), masked-patch ViT autoencoder, image AUROC"
    learn_margin = 0.02

    def optim_defaults(self) -> dict[str, float]:
        return {"lr": 1e-2}  # the default config's small batches (8) learn far faster at 1e-2 than 3e-3

    def config(self, scale: Scale) -> TaskConfig:
        return _SCALES[scale]

    def prepare(self, data_dir: Path) -> DataSource:
        """Build the offline texture categories once; the source of the default (texture) categories.

        A real MVTec AD category is read (or, with BENCH_DOWNLOAD=1, downloaded) by the datamodule;
        `source(data_dir, config)` and the datamodule's `source` name what a given config reads.
        """
        return texture_source(build_textures(data_dir), " or ".join(TEXTURES))

    def source(self, data_dir: Path, config: TaskConfig) -> DataSource:
        """Where `config.category` is read from."""
        return locate(data_dir, self._config(config).category)[1]

    def _config(self, config: TaskConfig) -> MVTecConfig:
        if not isinstance(config, MVTecConfig):
            raise TypeError(f"task {self.id!r} needs an MVTecConfig, got {type(config).__name__}")
        if config.img_size % config.patch_size:
            raise ValueError(f"img_size {config.img_size} is not a multiple of patch_size {config.patch_size}")
        return config

    def datamodule(self, data_dir: Path, config: TaskConfig, seed: int) -> L.LightningDataModule:
        cfg = self._config(config)
        root, source = locate(data_dir, cfg.category)
        return MVTecDataModule(root, cfg, seed, source, Path(data_dir))

    def build_model(self, variant: VariantSpec, config: TaskConfig, optim: OptimConfig) -> TaskModule:
        return AnomalyModule(MaskedPatchAutoencoder(variant, self._config(config)), optim)

    def context_length(self, config: TaskConfig) -> int:
        cfg = self._config(config)
        return (cfg.img_size // cfg.patch_size) ** 2

    def baseline(self, data_dir: Path, config: TaskConfig) -> Baseline:
        """|image - mean good training image| as the anomaly map, scored as the model's maps are; test AUROC."""
        cfg = self._config(config)
        datamodule = self.datamodule(data_dir, cfg, seed=0)
        assert isinstance(datamodule, MVTecDataModule)
        splits = {name: stack_split(dataset) for name, dataset in datamodule.build().items()}
        (train_NCHW, _), (test_NCHW, labels_N) = splits["train"], splits["test"]
        maps_NHW = gaussian_blur(baselines.deviation_maps(train_NCHW, test_NCHW), cfg.smooth_sigma)
        value = baselines.auroc(top_k_mean(maps_NHW, cfg.top_k), labels_N)
        others = {"mean abs deviation": baselines.auroc(maps_NHW.flatten(1).mean(dim=1), labels_N)}
        note = (
            f"category {cfg.category} at {cfg.img_size} px: mean of {len(train_NCHW)} good training images; "
            f"image score as the model's (smoothing {cfg.smooth_sigma}, top_k {cfg.top_k}); {len(labels_N)} test images"
        )
        return Baseline("pixel deviation from the mean good image", value, others, note)


MVTEC = MVTecTask()
