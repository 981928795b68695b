"""Morphological features of the organism in an image (feature set ``morpho``).

Segmentation. Organisms of ZooScan, ISIIS (NDSB) and most EcoTaxa
instruments are dark on a light background. The image is read as 8-bit grey
(:func:`~ecotaxa_core.features.preprocessing.read_grey`: RGB converted, 16-bit
scaled to 0-255), ``bottom_crop`` rows are dropped, and pixels darker than the
image mean (``grey < mean(grey)``) form the foreground. That threshold keeps
faint translucent organisms (gelatinous plankton, appendages) that Otsu's
cuts. The organism is the largest 8-connected foreground object; its holes
stay holes. A blank or uniform image has no foreground and gives a row of NaN.

Features, in pixels (lengths) and square pixels (areas); ``A`` is ``area``,
``P`` is ``perimeter``; the grey statistics are over the organism's pixels, on
the 0 (black) - 255 (white) scale:

==================  ==========================================================
area                number of organism pixels (holes excluded)
perimeter           length of the outer and hole contours
                    (``skimage.measure.perimeter``, 4-connected)
major               major axis of the ellipse with the organism's second
                    moments
minor               minor axis of that ellipse
feret               largest distance between two points of the convex hull
                    (maximum Feret / caliper diameter)
circularity         4πA / P²: 1 for a disc, smaller for ragged shapes; NaN
                    when P is 0 (a single pixel)
elongation          major / minor; NaN when minor is 0 (a straight line)
convex_area         pixels of the convex hull
convex_perimeter    perimeter of the convex hull
solidity            area / convex_area
esd                 equivalent spherical diameter, 2 √(A / π)
bbox_width          columns spanned by the organism
bbox_height         rows spanned by the organism
mean                mean grey level
stddev              standard deviation of the grey levels (population)
min, max            darkest and lightest grey level
median              median grey level
mode                most frequent grey level (the darkest of ties)
skewness            third standardised moment of the grey levels (0 when they
                    are all equal)
kurtosis            excess kurtosis, fourth standardised moment - 3 (0 when
                    they are all equal)
q10, q25, q75, q90  grey-level quantiles (linear interpolation)
extent              area / (bbox_width × bbox_height)
eccentricity        eccentricity of the moment ellipse (0 disc, → 1 line)
n_holes             holes in the organism, 1 - Euler number (8-connected
                    foreground)
skeleton_area       pixels of the organism's skeleton
                    (``skimage.morphology.skeletonize``)
==================  ==========================================================

>>> import numpy as np
>>> grey = np.full((64, 64), 230, dtype=np.uint8)
>>> yy, xx = np.mgrid[:64, :64]
>>> grey[(yy - 32) ** 2 + (xx - 32) ** 2 <= 20 ** 2] = 40      # a disc of radius 20
>>> row = dict(zip(MORPHO_FEATURES, measure_grey(grey)))
>>> area, major = float(row["area"]), float(row["major"])
>>> round(area / (np.pi * 20 ** 2), 2), round(major / 40, 2), float(row["mean"])
(1.0, 1.0, 40.0)
>>> bool(np.isnan(measure_grey(np.full((8, 8), 7, dtype=np.uint8))).all())
True
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage
from skimage.measure import perimeter as contour_perimeter
from skimage.measure import regionprops
from skimage.morphology import skeletonize

from ecotaxa_core.features.preprocessing import read_grey

__all__ = ["MorphologyExtractor", "MORPHO_FEATURES", "segment_organism", "measure_grey"]

MORPHO_FEATURES: list[str] = [
    "area", "perimeter", "major", "minor", "feret", "circularity", "elongation",
    "convex_area", "convex_perimeter", "solidity", "esd", "bbox_width", "bbox_height",
    "mean", "stddev", "min", "max", "median", "mode", "skewness", "kurtosis",
    "q10", "q25", "q75", "q90", "extent", "eccentricity", "n_holes", "skeleton_area",
]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def segment_organism(grey: np.ndarray) -> np.ndarray | None:
    """Boolean mask of the largest 8-connected object darker than the image mean.

    ``None`` when no pixel is darker than the mean (a uniform image).
    """
    mask = grey < grey.mean()
    labels, n_objects = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if n_objects == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _grey_statistics(values: np.ndarray) -> list[float]:
    v = values.astype(np.float64)
    mean = v.mean()
    d = v - mean
    m2 = float((d * d).mean())
    if m2 > 0:
        skewness = float((d ** 3).mean()) / m2 ** 1.5
        kurtosis = float((d ** 4).mean()) / m2 ** 2 - 3.0
    else:
        skewness = kurtosis = 0.0
    q10, q25, median, q75, q90 = np.percentile(v, [10, 25, 50, 75, 90])
    mode = float(np.bincount(values.astype(np.int64)).argmax())
    return [float(mean), math.sqrt(m2), float(v.min()), float(v.max()), float(median), mode,
            skewness, kurtosis, float(q10), float(q25), float(q75), float(q90)]


def measure_grey(grey: np.ndarray) -> np.ndarray:
    """The ``morpho`` row (float32, in :data:`MORPHO_FEATURES` order) of a 2-D uint8 image."""
    grey = np.asarray(grey)
    if grey.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {grey.shape}")
    mask = segment_organism(grey)
    if mask is None:
        return np.full(len(MORPHO_FEATURES), np.nan, dtype=np.float32)
    (rows, cols), = ndimage.find_objects(mask.astype(np.uint8))
    organism = mask[rows, cols]
    props = regionprops(organism.astype(np.uint8))[0]
    area = float(props.area)
    perim = float(props.perimeter)
    major, minor = float(props.axis_major_length), float(props.axis_minor_length)
    convex = props.image_convex
    convex_area = float(convex.sum())
    bbox_height, bbox_width = organism.shape  # NumPy shape is (rows, columns)
    shape_features = [
        area, perim, major, minor, float(props.feret_diameter_max),
        _ratio(4 * math.pi * area, perim * perim), _ratio(major, minor),
        convex_area, float(contour_perimeter(convex)), _ratio(area, convex_area),
        2.0 * math.sqrt(area / math.pi), float(bbox_width), float(bbox_height),
    ]
    grey_features = _grey_statistics(grey[rows, cols][organism])
    topology = [
        area / (bbox_width * bbox_height), float(props.eccentricity),
        float(1 - props.euler_number), float(skeletonize(organism).sum()),
    ]
    return np.asarray(shape_features + grey_features + topology, dtype=np.float32)


class MorphologyExtractor:
    """The ``morpho`` feature set: :func:`measure_grey` on each image file.

    Parameters
    ----------
    bottom_crop : rows dropped at the bottom of each image before segmenting
        (a scale bar would otherwise be measured).
    """

    name = "morpho"
    version = "1"

    def __init__(self, bottom_crop: int = 0):
        self.bottom_crop = int(bottom_crop)
        self.feature_names = list(MORPHO_FEATURES)

    def producer(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version,
                "settings": {"bottom_crop": self.bottom_crop, "threshold": "grey < mean",
                             "object": "largest 8-connected"}}

    def extract(self, paths: Sequence[Path]) -> np.ndarray:
        out = np.empty((len(paths), len(self.feature_names)), dtype=np.float32)
        for i, path in enumerate(paths):
            grey = read_grey(path)
            if self.bottom_crop > 0:
                grey = grey[:max(1, grey.shape[0] - self.bottom_crop)]
            out[i] = measure_grey(grey)
        return out

    def __repr__(self) -> str:
        return f"MorphologyExtractor(bottom_crop={self.bottom_crop})"
