"""What a feature extractor is, and the registry that builds one by feature set name.

A feature extractor turns image files into one float32 row per image. Its
``name`` is the feature set it fills in the feature store (see
``docs/architecture.md``), and ``producer()`` says exactly what computed the
rows (name, version, settings that change the values); the store keeps it
with the array and refuses to append rows of another producer, so a matrix
never mixes two versions. Settings that only change speed (batch size,
threads) stay out of ``producer()``.

An extractor shall:

* have ``name`` (str) and ``feature_names`` (list of str), both known without
  reading any image or loading any model;
* return from ``extract(paths)`` an array of shape
  ``(len(paths), len(feature_names))``, dtype float32, row ``i`` for
  ``paths[i]``;
* give a row of NaN for an image where nothing can be measured (a blank
  image), and raise :class:`~ecotaxa_core.features.preprocessing.ImageReadError`
  naming the file for an image it cannot decode;
* be cheap to build, loading heavy state (network weights) on first use.

``tests/extractor_conformance.py`` checks these points for each extractor.

>>> ex = get_extractor("morpho")
>>> ex.name, len(ex.feature_names) > 20, ex.producer()["name"]
('morpho', True, 'morpho')
>>> sorted(available_extractors())
['deep_effnetlite0', 'morpho']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from ecotaxa_core.errors import EcoTaxaError

__all__ = ["FeatureExtractor", "UnknownExtractor", "get_extractor", "available_extractors"]


@runtime_checkable
class FeatureExtractor(Protocol):
    """Images in, one float32 row per image out (see the module docstring)."""

    name: str
    feature_names: list[str]

    def producer(self) -> dict[str, Any]:
        """``{"name": ..., "version": ..., "settings": {...}}``, JSON-able."""
        ...

    def extract(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Rows of shape ``(len(paths), len(feature_names))``, float32."""
        ...


class UnknownExtractor(EcoTaxaError, ValueError):
    """A feature set name that no extractor produces."""

    def __init__(self, name: str, backbones: Mapping[str, Any] | None = None):
        super().__init__(f"no feature extractor named {name!r}; known: "
                         f"{', '.join(sorted(available_extractors(backbones)))} (a timm "
                         "backbone is added with: ecotaxa backbone add)")
        self.name = name


def _morpho(*, input_size: int, batch_size: int, bottom_crop: int,
            num_threads: int | None, pixel_size_um: float | None,
            device: str, views: int) -> FeatureExtractor:
    from ecotaxa_core.features.morphology import MorphologyExtractor

    return MorphologyExtractor(bottom_crop=bottom_crop, pixel_size_um=pixel_size_um)


def _deep_effnetlite0(*, input_size: int, batch_size: int, bottom_crop: int,
                      num_threads: int | None, pixel_size_um: float | None,
                      device: str, views: int) -> FeatureExtractor:
    from ecotaxa_core.features.deep import EfficientNetLite0Extractor

    return EfficientNetLite0Extractor(input_size=input_size, batch_size=batch_size,
                                      bottom_crop=bottom_crop, num_threads=num_threads,
                                      device=device, views=views)


_REGISTRY: dict[str, Callable[..., FeatureExtractor]] = {
    "morpho": _morpho,
    "deep_effnetlite0": _deep_effnetlite0,
}


def available_extractors(backbones: Mapping[str, Any] | None = None) -> list[str]:
    """Feature set names that :func:`get_extractor` knows (with ``backbones``, those of
    the instance's registered backbones too: ``deep_NAME``)."""
    return list(_REGISTRY) + sorted(backbones or {})


def get_extractor(name: str, *, input_size: int = 224, batch_size: int = 64,
                  bottom_crop: int = 0, num_threads: int | None = None,
                  pixel_size_um: float | None = None, device: str = "auto",
                  backbones: Mapping[str, Any] | None = None, views: int = 1) -> FeatureExtractor:
    """The extractor filling feature set ``name``.

    Parameters
    ----------
    name : feature set name (``morpho``, ``deep_effnetlite0``, ``deep_NAME`` of a
        registered backbone).
    input_size : side in pixels of a deep network's square input.
    batch_size : images per forward pass of a deep network.
    bottom_crop : pixels cropped off the bottom of each image first (a scale
        bar; 31 for ZooScan, see
        :func:`~ecotaxa_core.features.preprocessing.default_bottom_crop`).
    num_threads : torch intra-op threads for a deep network (process-wide; None
        leaves torch's choice).
    pixel_size_um : size of a pixel in micrometres (``Project.pixel_size_um``),
        for morphology's areas in mm² and lengths in mm; None when unknown.
    device : where a deep network runs: ``auto`` (a CUDA GPU when present),
        ``cpu``, ``cuda``, ``cuda:N``. Speed only.
    views : flips averaged by a deep network (1, 2, 4 or 8; see
        :class:`~ecotaxa_core.features.deep.DeepExtractor`).
    backbones : the instance's registered timm backbones by feature set name,
        as :class:`~ecotaxa_core.features.backbones.BackboneSpec` or its
        ``to_dict()`` (JSON-able, for Dask workers).

    Extractors ignore the settings they have no use for (morphology has no
    input size, a network no pixel size). Batch size and threads change speed,
    not values, so they stay out of ``producer()``.
    """
    if backbones and name in backbones:
        from ecotaxa_core.features.backbones import BackboneSpec, TimmBackboneExtractor

        spec = backbones[name]
        if not isinstance(spec, BackboneSpec):
            spec = BackboneSpec.from_dict(spec["name"], spec)
        return TimmBackboneExtractor(spec, input_size=int(input_size),
                                     batch_size=int(batch_size), bottom_crop=int(bottom_crop),
                                     num_threads=num_threads, device=device, views=views)
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise UnknownExtractor(name, backbones) from None
    return factory(input_size=int(input_size), batch_size=int(batch_size),
                   bottom_crop=int(bottom_crop), num_threads=num_threads,
                   pixel_size_um=None if pixel_size_um is None else float(pixel_size_um),
                   device=device, views=int(views))
