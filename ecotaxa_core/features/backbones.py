"""Any timm backbone as a deep feature set, with its weights from a local file.

An instance lists its extra backbones in ``backbones.toml`` (in its home, or
``ECOTAXA_BACKBONES_FILE``), one table per backbone; backbone ``NAME`` fills
the feature set ``deep_NAME``::

    [convnext_nano]
    model = "convnext_nano"                       # a timm model name
    weights = "/models/convnext_nano.safetensors"  # .safetensors, .pth or .bin
    sha256 = "9c1e..."                            # of the weights file
    n_features = 640                              # length of the pooled vector
    mean = [0.485, 0.456, 0.406]                  # per channel, on 0-1 pixel values
    std = [0.229, 0.224, 0.225]

``ecotaxa backbone add NAME --model M --weights FILE`` writes such a table
after loading the weights once (strictly: every key and shape must match;
the classifier's weights, if the file has them, are dropped), so a file that
does not fit the model is refused when it is registered, not on a worker.
Without ``mean``/``std`` the model's own pretrained configuration in timm
gives them.

A fine-tuned backbone (``ecotaxa fine-tune``, :mod:`ecotaxa_core.learn.fine_tuning`)
adds a bottleneck: its vector is ``ReLU(Linear(pooled, bottleneck))``, the
weights file holds ``backbone.*`` (the timm model) and ``bottleneck.*`` keys,
and its table records the bottleneck width, the input size it was trained
at (which its extraction then uses, whatever ``ECOTAXA_DEEP_INPUT_SIZE``
says), what it was fine-tuned from and its training record (a JSON file)::

    bottleneck = 600
    input_size = 128
    fine_tuned_from = "tf_efficientnet_lite0 ImageNet"
    training_record = "/home/models/backbones/mine-1a2b3c4d5e6f.json"

The feature set's producer (kept with its arrays) names the model, the
weights file and its SHA-256: a worker refuses weights whose hash is not the
registered one, so a replaced file never adds vectors to the rows of the
former one. Register changed weights under a new name.

>>> spec = BackboneSpec(name="tiny", model="test_resnet", weights="/m/w.pth",
...                     sha256="ab" * 32, n_features=8)
>>> spec.feature_set
'deep_tiny'
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecotaxa_core.durable_files import file_lock, write_text_atomically
from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.file_digest import file_sha256
from ecotaxa_core.features.deep import PREPROCESSING, DeepExtractor

if TYPE_CHECKING:
    import torch

__all__ = ["BackboneSpec", "BackboneError", "TimmBackboneExtractor", "read_backbones",
           "register_backbone", "load_backbone", "with_bottleneck", "FEATURE_SET_PREFIX"]

FEATURE_SET_PREFIX = "deep_"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_RESERVED = {"effnetlite0"}  # deep_effnetlite0 is the built-in default
# Keys of a fine-tuned backbone's table (absent from the others): smallest value allowed.
_OPTIONAL_INTS = {"bottleneck": 1, "input_size": 32}
_OPTIONAL_STRS = ("fine_tuned_from", "training_record")


class BackboneError(EcoTaxaError, ValueError):
    """A backbone that cannot be registered or used (bad name, file or weights)."""


@dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone (a table of ``backbones.toml``)."""

    name: str
    model: str
    weights: str
    sha256: str
    n_features: int
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    bottleneck: int | None = None
    input_size: int | None = None
    fine_tuned_from: str | None = None
    training_record: str | None = None

    @property
    def feature_set(self) -> str:
        return FEATURE_SET_PREFIX + self.name

    def to_dict(self) -> dict[str, Any]:
        """JSON- and TOML-able (what travels to Dask workers)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
                if v is not None}

    @classmethod
    def from_dict(cls, name: str, table: dict[str, Any], where: str = "") -> "BackboneSpec":
        at = f"{where}: " if where else ""
        _check_name(name, where)
        unknown = set(table) - {"model", "weights", "sha256", "n_features", "mean", "std",
                                "name", *_OPTIONAL_INTS, *_OPTIONAL_STRS}
        if unknown:
            raise BackboneError(f"{at}backbone [{name}] has unknown keys "
                                f"{', '.join(sorted(unknown))}")
        for key, kind in (("model", str), ("weights", str), ("sha256", str),
                          ("n_features", int)):
            if not isinstance(table.get(key), kind):
                raise BackboneError(f"{at}backbone [{name}] needs {key} "
                                    f"({kind.__name__}), got {table.get(key)!r}")
        triples = {}
        for key in ("mean", "std"):
            value = table.get(key)
            if value is not None:
                if (not isinstance(value, (list, tuple)) or len(value) != 3
                        or not all(isinstance(v, (int, float)) and v >= 0 for v in value)
                        or (key == "std" and not all(v > 0 for v in value))):
                    raise BackboneError(f"{at}backbone [{name}] {key} must be three "
                                        f"{'positive' if key == 'std' else 'non-negative'} "
                                        f"numbers, got {value!r}")
                value = tuple(float(v) for v in value)
            triples[key] = value
        extras: dict[str, Any] = {}
        for key, lowest in _OPTIONAL_INTS.items():
            value = table.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < lowest):
                raise BackboneError(f"{at}backbone [{name}] {key} must be an integer of at "
                                    f"least {lowest}, got {value!r}")
            extras[key] = value
        for key in _OPTIONAL_STRS:
            value = table.get(key)
            if value is not None and not isinstance(value, str):
                raise BackboneError(f"{at}backbone [{name}] {key} must be a string, "
                                    f"got {value!r}")
            extras[key] = value
        return cls(name=name, model=table["model"], weights=table["weights"],
                   sha256=table["sha256"].lower(), n_features=int(table["n_features"]),
                   **triples, **extras)


def _check_name(name: str, where: str = "") -> None:
    at = f"{where}: " if where else ""
    if not _NAME.match(name) or name in _RESERVED:
        raise BackboneError(f"{at}backbone name {name!r} must be 1-40 lower-case letters, "
                            "digits or _, start with a letter, and not be "
                            f"{', '.join(sorted(_RESERVED))}")


def read_backbones(path: Path) -> dict[str, BackboneSpec]:
    """The backbones listed in ``path`` by feature set name; none if the file is absent."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        tables = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BackboneError(f"{path}: {e}") from None
    specs = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise BackboneError(f"{path}: {name} must be a table ([{name}])")
        spec = BackboneSpec.from_dict(name, table, str(path))
        specs[spec.feature_set] = spec
    return specs


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _toml(specs: dict[str, BackboneSpec]) -> str:
    blocks = []
    for spec in sorted(specs.values(), key=lambda s: s.name):
        lines = [f"[{spec.name}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in spec.to_dict().items() if k != "name"]
        blocks.append("\n".join(lines))
    return ("# Deep feature backbones: [NAME] fills feature set deep_NAME "
            "(ecotaxa backbone add)\n\n" + "\n\n".join(blocks) + "\n")


def with_bottleneck(model: "torch.nn.Module", width: int) -> "torch.nn.Module":
    """``model`` (pooled output) followed by ``Linear(model.num_features, width)`` and ReLU:
    a fine-tuned backbone's feature part, keys ``backbone.*`` and ``bottleneck.*``."""
    from collections import OrderedDict

    import torch

    return torch.nn.Sequential(OrderedDict(
        backbone=model, bottleneck=torch.nn.Linear(model.num_features, int(width)),
        activation=torch.nn.ReLU()))


def load_backbone(model_name: str, weights: Path,
                  bottleneck: int | None = None) -> "torch.nn.Module":
    """timm ``model_name`` with the weights of ``weights``, pooled output, eval mode.

    Every key and shape of the file must match the model, except the
    classifier's, which are dropped when present (a file saved with or
    without its ImageNet head, or a head fine-tuned to other classes).
    With ``bottleneck``, the file holds a fine-tuned feature part (see
    :func:`with_bottleneck`), loaded strictly, keys and shapes.
    """
    import timm
    import torch
    from timm.models import load_state_dict

    try:
        model = timm.create_model(model_name, pretrained=False)
    except RuntimeError as e:  # timm: "Unknown model (...)"
        raise BackboneError(f"timm has no model {model_name!r} ({e})") from None
    try:
        state = load_state_dict(str(weights), use_ema=True)
    except FileNotFoundError:
        raise BackboneError(f"weights file {weights} does not exist") from None
    except Exception as e:  # not a checkpoint: pickle, zip or safetensors errors
        raise BackboneError(f"{weights} is not a weights file timm can read "
                            f"({type(e).__name__}: {e})") from None
    classifier = model.pretrained_cfg.get("classifier") or ""
    heads = [classifier] if isinstance(classifier, str) else list(classifier)
    if bottleneck is not None:
        heads = [f"backbone.{h}" for h in heads if h]
    state = {k: v for k, v in state.items()
             if not any(h and (k == h or k.startswith(h + ".")) for h in heads)}
    model.reset_classifier(0)
    if bottleneck is not None:
        model = with_bottleneck(model, bottleneck)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()
        raise BackboneError(f"{weights} does not fit timm model {model_name!r}"
                            + (f" with a {bottleneck}-unit bottleneck" if bottleneck else "")
                            + ": "
                            + " ".join(line.strip() for line in first[:4])[:600]) from None
    return model.eval().to(torch.float32)


def register_backbone(path: Path, name: str, model_name: str, weights: Path, *,
                      mean: tuple[float, float, float] | None = None,
                      std: tuple[float, float, float] | None = None,
                      replace: bool = False, bottleneck: int | None = None,
                      input_size: int | None = None, fine_tuned_from: str | None = None,
                      training_record: str | None = None) -> BackboneSpec:
    """Load ``weights`` into timm ``model_name`` once and add it to ``path`` as ``name``.

    Refuses a name already registered (unless ``replace``; its feature set's
    stored rows then refuse the new producer until deleted). ``bottleneck``,
    ``input_size``, ``fine_tuned_from`` and ``training_record`` describe a
    fine-tuned backbone (see the module docstring). Registrations take turns
    (a lock file next to ``path``), so two at once both land.
    """
    _check_name(name)
    weights = Path(weights).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(path.name + ".lock")):
        return _register_locked(path, name, model_name, weights, mean, std, replace,
                                dict(bottleneck=bottleneck, input_size=input_size,
                                     fine_tuned_from=fine_tuned_from,
                                     training_record=training_record))


def _register_locked(path: Path, name: str, model_name: str, weights: Path, mean, std,
                     replace: bool, extras: dict[str, Any]) -> BackboneSpec:
    import torch

    specs = read_backbones(path)
    if FEATURE_SET_PREFIX + name in specs and not replace:
        raise BackboneError(f"backbone {name!r} is registered already in {path}; "
                            "register the new weights under another name")
    model = load_backbone(model_name, weights, extras["bottleneck"])
    cfg = model.backbone.pretrained_cfg if extras["bottleneck"] else model.pretrained_cfg
    mean = tuple(float(v) for v in (mean or cfg.get("mean") or (0.5, 0.5, 0.5)))
    std = tuple(float(v) for v in (std or cfg.get("std") or (0.5, 0.5, 0.5)))
    with torch.inference_mode():
        n_features = int(model(torch.zeros(1, 3, 64, 64)).shape[-1])
    spec = BackboneSpec.from_dict(name, dict(model=model_name, weights=str(weights),
                                             sha256=file_sha256(weights),
                                             n_features=n_features, mean=mean, std=std,
                                             **{k: v for k, v in extras.items()
                                                if v is not None}))
    specs[spec.feature_set] = spec
    write_text_atomically(path, _toml(specs))
    return spec


class TimmBackboneExtractor(DeepExtractor):
    """Feature set ``deep_NAME``: the pooled features of a registered timm backbone
    (the other parameters: see :class:`~ecotaxa_core.features.deep.DeepExtractor`)."""

    version = "1"

    def __init__(self, spec: BackboneSpec, input_size: int = 224, batch_size: int = 64,
                 bottom_crop: int = 0, num_threads: int | None = None, device: str = "auto",
                 views: int = 1):
        # A fine-tuned backbone sees images at the scale it was trained at.
        input_size = spec.input_size or input_size
        super().__init__(input_size, batch_size, bottom_crop, num_threads, device, views)
        self.spec = spec
        self.name = spec.feature_set
        self.feature_names = [f"{spec.name}_{i:04d}" for i in range(spec.n_features)]
        if spec.mean is not None:
            self.mean = spec.mean
        if spec.std is not None:
            self.std = spec.std

    def producer(self) -> dict[str, Any]:
        settings = {"model": f"timm {self.spec.model}",
                    "weights": Path(self.spec.weights).name,
                    "weights_sha256": self.spec.sha256,
                    "input_size": self.input_size, "bottom_crop": self.bottom_crop,
                    "normalisation": {"mean": list(self.mean), "std": list(self.std)},
                    "preprocessing": PREPROCESSING, **self.view_settings()}
        if self.spec.bottleneck is not None:
            settings["bottleneck"] = {"width": self.spec.bottleneck, "activation": "relu"}
            settings["fine_tuned_from"] = self.spec.fine_tuned_from
        return {"name": self.name, "version": self.version, "settings": settings}

    def load_model(self) -> "torch.nn.Module":
        weights = Path(self.spec.weights)
        if not weights.is_file():
            raise BackboneError(f"weights file {weights} of backbone {self.spec.name!r} "
                                "does not exist (here)")
        if file_sha256(weights) != self.spec.sha256:
            raise BackboneError(f"weights file {weights} of backbone {self.spec.name!r} "
                                "changed since it was registered; register the new file "
                                "under another name")
        model = load_backbone(self.spec.model, weights, self.spec.bottleneck)
        return model
