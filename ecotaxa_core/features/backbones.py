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

from ecotaxa_core.durable_files import write_text_atomically
from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.file_digest import file_sha256
from ecotaxa_core.features.deep import PREPROCESSING, DeepExtractor

if TYPE_CHECKING:
    import torch

__all__ = ["BackboneSpec", "BackboneError", "TimmBackboneExtractor", "read_backbones",
           "register_backbone", "load_backbone", "FEATURE_SET_PREFIX"]

FEATURE_SET_PREFIX = "deep_"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_RESERVED = {"effnetlite0"}  # deep_effnetlite0 is the built-in default


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
                                "name"}
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
        return cls(name=name, model=table["model"], weights=table["weights"],
                   sha256=table["sha256"].lower(), n_features=int(table["n_features"]),
                   **triples)


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


def load_backbone(model_name: str, weights: Path) -> "torch.nn.Module":
    """timm ``model_name`` with the weights of ``weights``, pooled output, eval mode.

    Every key and shape of the file must match the model, except the
    classifier's, which are dropped when present (a file saved with or
    without its ImageNet head, or a head fine-tuned to other classes).
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
    state = {k: v for k, v in state.items()
             if not any(h and (k == h or k.startswith(h + ".")) for h in heads)}
    model.reset_classifier(0)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()
        raise BackboneError(f"{weights} does not fit timm model {model_name!r}: "
                            + " ".join(line.strip() for line in first[:4])[:600]) from None
    return model.eval().to(torch.float32)


def register_backbone(path: Path, name: str, model_name: str, weights: Path, *,
                      mean: tuple[float, float, float] | None = None,
                      std: tuple[float, float, float] | None = None,
                      replace: bool = False) -> BackboneSpec:
    """Load ``weights`` into timm ``model_name`` once and add it to ``path`` as ``name``.

    Refuses a name already registered (unless ``replace``; its feature set's
    stored rows then refuse the new producer until deleted).
    """
    import torch

    _check_name(name)
    weights = Path(weights).resolve()
    specs = read_backbones(path)
    if FEATURE_SET_PREFIX + name in specs and not replace:
        raise BackboneError(f"backbone {name!r} is registered already in {path}; "
                            "register the new weights under another name")
    model = load_backbone(model_name, weights)
    cfg = model.pretrained_cfg
    mean = tuple(float(v) for v in (mean or cfg.get("mean") or (0.5, 0.5, 0.5)))
    std = tuple(float(v) for v in (std or cfg.get("std") or (0.5, 0.5, 0.5)))
    with torch.inference_mode():
        n_features = int(model(torch.zeros(1, 3, 64, 64)).shape[-1])
    spec = BackboneSpec.from_dict(name, dict(model=model_name, weights=str(weights),
                                             sha256=file_sha256(weights),
                                             n_features=n_features, mean=mean, std=std))
    specs[spec.feature_set] = spec
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, _toml(specs))
    return spec


class TimmBackboneExtractor(DeepExtractor):
    """Feature set ``deep_NAME``: the pooled features of a registered timm backbone
    (the other parameters: see :class:`~ecotaxa_core.features.deep.DeepExtractor`)."""

    version = "1"

    def __init__(self, spec: BackboneSpec, input_size: int = 224, batch_size: int = 64,
                 bottom_crop: int = 0, num_threads: int | None = None, device: str = "auto"):
        super().__init__(input_size, batch_size, bottom_crop, num_threads, device)
        self.spec = spec
        self.name = spec.feature_set
        self.feature_names = [f"{spec.name}_{i:04d}" for i in range(spec.n_features)]
        if spec.mean is not None:
            self.mean = spec.mean
        if spec.std is not None:
            self.std = spec.std

    def producer(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version,
                "settings": {"model": f"timm {self.spec.model}",
                             "weights": Path(self.spec.weights).name,
                             "weights_sha256": self.spec.sha256,
                             "input_size": self.input_size, "bottom_crop": self.bottom_crop,
                             "normalisation": {"mean": list(self.mean), "std": list(self.std)},
                             "preprocessing": PREPROCESSING}}

    def load_model(self) -> "torch.nn.Module":
        weights = Path(self.spec.weights)
        if not weights.is_file():
            raise BackboneError(f"weights file {weights} of backbone {self.spec.name!r} "
                                "does not exist (here)")
        if file_sha256(weights) != self.spec.sha256:
            raise BackboneError(f"weights file {weights} of backbone {self.spec.name!r} "
                                "changed since it was registered; register the new file "
                                "under another name")
        model = load_backbone(self.spec.model, weights)
        return model
