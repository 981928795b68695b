"""Morphological features of the organism in an image (feature set ``morpho``).

The set ecologists know from ZooProcess and EcoTaxa, computed from the
vignette alone; ``docs/features.md`` gives each feature's formula, units and
edge cases, and how close they come to ZooProcess's own columns on real
ZooScan vignettes (``bench/validate_morpho_zooscan.py``).

Segmentation. Organisms of ZooScan, ISIIS (NDSB) and most EcoTaxa
instruments are dark on a light background. The image is read as 8-bit grey
(:func:`~ecotaxa_core.features.preprocessing.read_grey`: RGB converted, 16-bit
scaled to 0-255), ``bottom_crop`` rows are dropped, and pixels darker than the
image mean (``grey < mean(grey)``) form the foreground. That threshold keeps
faint translucent organisms (gelatinous plankton, appendages) that Otsu's
cuts. The organism is the largest 8-connected foreground object. Like
ZooProcess (ImageJ's "include holes"), it is its outline: the object *filled*
with the background pieces it encloses gives every feature, the holes only
``n_holes``, ``holes_area`` and ``holes_pct``. A blank or uniform image has no
foreground and gives a row of NaN.

Features (lengths in pixels, areas in square pixels, grey levels ``g`` on the
0 black - 255 white scale, over the filled organism; ``A`` is ``area``,
``P`` is ``perimeter``; ZooProcess's column in brackets):

==================  ==========================================================
area                pixels of the filled organism (``area``)
holes_area          pixels of its holes (``area_exc`` of ZooProcess 7.x)
holes_pct           100 holes_area / area (``%area``)
n_holes             holes: 4-connected background pieces it encloses
perimeter           outer outline through the midpoints of the boundary
                    pixel edges: 1 per straight step, √2/2 per corner
major, minor        ImageJ's ellipse: axes ratio from the second moments of
                    unit-square pixels, area equal to A (``major``, ``minor``)
angle               major axis, degrees counter-clockwise from the x axis,
                    in [0, 180) (``angle``)
eccentricity        √(1 - λ₂/λ₁) of those moments (0 disc, → 1 line)
elongation          major / minor (``elongation``)
feret, feret_min    largest and smallest caliper diameter of the pixel
                    squares (``feret``)
circularity         min(1, 4πA / P²) (``circ.``)
convex_area         pixels whose centres lie in the hull of the pixel centres
convex_perimeter    perimeter of the hull of the pixel squares
solidity            area / convex_area
esd                 2 √(A / π) (``esd``)
bbox_width/height   columns / rows spanned (``width``, ``height``)
extent              area / (bbox_width × bbox_height)
skeleton_area       pixels of the skeleton, Zhang's thinning (``skelarea``)
fractal             box-counting dimension of the outer contour, boxes of
                    1, 2, 4 ... px up to half the larger side; NaN under 8 px
symmetry_h          fraction of pixels whose mirror image across the major
                    axis (through the centroid) is organism
symmetry_v          the same across the minor axis
symmetry_ratio      symmetry_h / symmetry_v; NaN when symmetry_v is 0
centroids           distance from the centroid to the centroid weighted by
                    darkness 255 - g (``centroids``)
mean, stddev        mean, population standard deviation of g
min, max, range     darkest, lightest level, max - min
median, mode        median; most frequent level (darkest of ties)
skewness            third standardised moment (0 when all levels are equal)
kurtosis            fourth standardised moment - 3 (0 when all are equal)
q10 ... q90         quantiles, linear interpolation (q25, median, q75 are
                    ``histcum1-3``)
cv                  100 stddev / mean; NaN when mean is 0
intden              Σ g = area × mean (``intden``)
*_mm2, *_mm         area, holes_area, convex_area in mm²; perimeter,
                    convex_perimeter, major, minor, feret, feret_min, esd in
                    mm, with the pixel size; NaN when it is unknown
==================  ==========================================================

>>> import numpy as np
>>> grey = np.full((64, 64), 230, dtype=np.uint8)
>>> yy, xx = np.mgrid[:64, :64]
>>> grey[(yy - 32) ** 2 + (xx - 32) ** 2 <= 20 ** 2] = 40      # a disc of radius 20
>>> row = dict(zip(MORPHO_FEATURES, measure_grey(grey, pixel_size_um=10.0)))
>>> area, major = float(row["area"]), float(row["major"])
>>> round(area / (np.pi * 20 ** 2), 2), round(major / 40, 2), float(row["mean"])
(1.0, 1.0, 40.0)
>>> round(float(row["area_mm2"]) / area * 1e4, 3), float(row["symmetry_h"])  # 10 µm pixels
(1.0, 1.0)
>>> bool(np.isnan(measure_grey(np.full((8, 8), 7, dtype=np.uint8))).all())
True
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.morphology import skeletonize

from ecotaxa_core.features.preprocessing import read_grey
from ecotaxa_core.storage import read_bytes

__all__ = ["MorphologyExtractor", "MORPHO_FEATURES", "MORPHO_VERSION", "segment_organism",
           "measure_grey"]

#: Version of the feature definitions; stored in the producer, so a store made
#: by another version is never appended to.
MORPHO_VERSION = "2"

_SHAPE = ["area", "holes_area", "holes_pct", "n_holes", "perimeter", "major", "minor", "angle",
          "eccentricity", "elongation", "feret", "feret_min", "circularity", "convex_area",
          "convex_perimeter", "solidity", "esd", "bbox_width", "bbox_height", "extent",
          "skeleton_area", "fractal", "symmetry_h", "symmetry_v", "symmetry_ratio", "centroids"]
_GREY = ["mean", "stddev", "min", "max", "median", "mode", "skewness", "kurtosis",
         "q10", "q25", "q75", "q90", "range", "cv", "intden"]
# Features converted to mm² (areas) and mm (lengths) with the pixel size.
_AREAS_MM2 = ["area", "holes_area", "convex_area"]
_LENGTHS_MM = ["perimeter", "convex_perimeter", "major", "minor", "feret", "feret_min", "esd"]

MORPHO_FEATURES: list[str] = (_SHAPE + _GREY + [f"{n}_mm2" for n in _AREAS_MM2]
                              + [f"{n}_mm" for n in _LENGTHS_MM])

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)
_HALF_DIAGONAL = math.sqrt(0.5)
_QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90)
_LEVELS = np.arange(256, dtype=np.float64)
_AREA_INDEX = [MORPHO_FEATURES.index(n) for n in _AREAS_MM2]
_LENGTH_INDEX = [MORPHO_FEATURES.index(n) for n in _LENGTHS_MM]


# -- decoding ---------------------------------------------------------------------
def _read_grey(path: str | Path) -> np.ndarray:
    """:func:`read_grey`, with JPEGs decoded straight to their luma channel.

    libjpeg then skips the colour conversion, a third of the decoding time of
    a small vignette. For grey stored as RGB (NDSB, ZooScan JPEGs) it is the
    same array as ``read_grey``'s. For real colour the luma is what
    ``read_grey`` computes from RGB (same ITU-R 601 weights) but for roundings,
    and a few grey levels at sharp colour edges, where decoding to RGB clips
    the upsampled chroma. Any other file, or any failure (``read_grey`` then
    names the file), takes the general path.
    """
    try:
        data = read_bytes(path)
        if data[:3] == b"\xff\xd8\xff":
            with Image.open(io.BytesIO(data), formats=("JPEG",)) as im:
                if im.mode in ("L", "RGB"):
                    im.draft("L", im.size)
                    if im.mode == "L":
                        im.load()
                        return np.asarray(im)
    except (OSError, ValueError, SyntaxError):
        pass
    return read_grey(path)


# -- segmentation ------------------------------------------------------------------
def _largest_object(grey: np.ndarray, threshold: float | None = None
                    ) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Bounding box of the largest dark object and its mask cropped to that box."""
    dark = grey < (grey.mean() if threshold is None else threshold)
    labels, n_objects = ndimage.label(dark, structure=_EIGHT_CONNECTED)
    if n_objects == 0:
        return None
    if n_objects == 1:
        largest = dark
    else:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        largest = labels == sizes.argmax()  # the first of equal sizes
    rows = np.flatnonzero(largest.any(axis=1))
    cols = np.flatnonzero(largest.any(axis=0))
    box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    return box, largest[box]


def segment_organism(grey: np.ndarray, threshold: float | None = None) -> np.ndarray | None:
    """Boolean mask of the largest 8-connected object darker than the image mean.

    ``threshold`` replaces the mean (pixels ``< threshold`` are foreground).
    ``None`` when no pixel is dark enough (a uniform image).
    """
    found = _largest_object(np.asarray(grey), threshold)
    if found is None:
        return None
    box, organism = found
    mask = np.zeros(grey.shape, dtype=bool)
    mask[box] = organism
    return mask


# -- shape measures ------------------------------------------------------------------
def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Dot product of two vectors without BLAS, whose threads cost more than they
    save on vectors this small (and fight over the cores with the other workers)."""
    return float(np.einsum("i,i->", a, b))


def _outline_length(padded: np.ndarray) -> float:
    """Length of the outline through the midpoints of the boundary pixel edges.

    That is the marching-squares contour at half level of the 0/1 uint8 mask
    ``padded`` (which has an empty border), read off its 2 x 2 windows: one
    with 1 or 3 set pixels holds a diagonal step of √2/2, two side by side a
    straight step of 1, a diagonal pair two diagonal steps.
    """
    a, d = padded[:-1, :-1], padded[1:, 1:]
    quad = a + padded[:-1, 1:] + padded[1:, :-1] + d
    n_two = np.count_nonzero(quad == 2)
    n_diagonal = np.count_nonzero((quad == 2) & (a == d))
    n_corner = np.count_nonzero((quad == 1) | (quad == 3))
    return (n_two - n_diagonal) + _HALF_DIAGONAL * (n_corner + 2 * n_diagonal)


def _chain(points: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """One monotone chain of Andrew's convex hull algorithm (collinear points dropped)."""
    out: list[tuple[int, int]] = []
    for x, y in points:
        while len(out) >= 2:
            (x1, y1), (x2, y2) = out[-2], out[-1]
            if (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) > 0:
                break
            out.pop()
        out.append((x, y))
    return out


def _hull(filled: np.ndarray) -> np.ndarray:
    """Vertices ``(x, y)`` (int, in order) of the convex hull of the pixel centres.

    Only the first and last pixel of each row can be hull vertices, and of
    those only the ones that reach the extreme of all rows above or of all rows
    below (a vectorised filter); the exact chains run on what is left.
    """
    h, w = filled.shape
    rows = np.arange(h)
    left = filled.argmax(axis=1)
    right = w - 1 - filled[:, ::-1].argmax(axis=1)
    keep_l, keep_r = _staircase(-left), _staircase(right)
    xs = np.concatenate([left[keep_l], right[keep_r]])
    ys = np.concatenate([rows[keep_l], rows[keep_r]])
    order = np.lexsort((xs, ys))
    points = list(zip(xs[order].tolist(), ys[order].tolist()))
    hull = _chain(points)[:-1] + _chain(points[::-1])[:-1]
    return np.array(hull, dtype=np.int64).reshape(-1, 2)


def _staircase(values: np.ndarray) -> np.ndarray:
    """Rows whose value reaches the maximum of all rows above or of all rows below."""
    above = np.maximum.accumulate(values)
    below = np.maximum.accumulate(values[::-1])[::-1]
    keep = np.ones(len(values), dtype=bool)  # the first and last rows stay
    keep[1:-1] = (values[1:-1] >= above[:-2]) | (values[1:-1] >= below[2:])
    return keep


def _hull_measures(hull: np.ndarray) -> tuple[float, float, float, float]:
    """convex_area, convex_perimeter, feret and feret_min of a hull of pixel centres.

    The hull of the pixel *squares* is the hull of the centres grown by a unit
    square (a Minkowski sum): its perimeter is 4 more, its calipers are
    ``|n_x| + |n_y|`` wider in direction ``n``, and its diameter joins two
    opposite corners of two centre vertices. The pixel count of the hull
    comes from Pick's theorem, its vertices being on the pixel grid.
    """
    x, y = hull[:, 0], hull[:, 1]
    sx, sy = np.roll(x, -1) - x, np.roll(y, -1) - y
    twice_area = abs(int((x * sy - y * sx).sum()))  # shoelace
    on_edges = int(np.gcd(sx, sy).sum())
    convex_area = twice_area / 2 + on_edges / 2 + 1
    lengths = np.hypot(sx, sy)
    convex_perimeter = float(lengths.sum()) + 4.0
    dx = np.abs(x[:, None] - x) + 1
    dy = np.abs(y[:, None] - y) + 1
    feret = math.sqrt(float((dx * dx + dy * dy).max()))
    real = lengths > 0
    # Unit normals of the edges, and of the pixel squares' sides.
    nx = np.append(-sy[real] / lengths[real], (1.0, 0.0))
    ny = np.append(sx[real] / lengths[real], (0.0, 1.0))
    proj = nx[:, None] * x + ny[:, None] * y
    widths = np.ptp(proj, axis=1) + np.abs(nx) + np.abs(ny)
    return convex_area, convex_perimeter, feret, float(widths.min())


def _fractal_dimension(contour: np.ndarray) -> float:
    """Box-counting dimension of the ``True`` pixels, boxes of 1, 2, 4 ... px.

    The grid starts at the top-left corner of the bounding box; the largest
    box is at most half the larger side. D is minus the least-squares slope
    of log N(s) on log s. NaN with fewer than three box sizes.
    """
    h, w = contour.shape
    n_levels = max(h, w).bit_length() - 1  # sizes 1 .. 2**(n_levels - 1) <= max(h, w) / 2
    if n_levels < 3:
        return math.nan
    top = 1 << (n_levels - 1)
    boxes = np.zeros((-(-h // top) * top, -(-w // top) * top), dtype=bool)
    boxes[:h, :w] = contour
    counts = [np.count_nonzero(contour)]
    for _ in range(n_levels - 1):
        boxes = boxes[0::2] | boxes[1::2]
        boxes = boxes[:, 0::2] | boxes[:, 1::2]
        counts.append(np.count_nonzero(boxes))
    logs = [math.log2(c) for c in counts]
    mean_k, mean_log = (n_levels - 1) / 2, sum(logs) / n_levels
    cov = sum((k - mean_k) * (v - mean_log) for k, v in enumerate(logs))
    var = sum((k - mean_k) ** 2 for k in range(n_levels))
    return -cov / var


def _mirror_overlap(padded: np.ndarray, px: np.ndarray, py: np.ndarray) -> float:
    """Fraction of mirrored pixel positions ``(px, py)`` that fall on the mask.

    ``padded`` is the mask with a one-pixel empty border, so positions
    clipped to it land on background.
    """
    h, w = padded.shape
    # Nearest pixel, shifted by the border: truncating is flooring for the positive
    # values, and the negative ones are outside the mask, clipped to its border.
    xi = np.clip((px + 1.5).astype(np.intp), 0, w - 1)
    yi = np.clip((py + 1.5).astype(np.intp), 0, h - 1)
    return np.count_nonzero(padded[yi, xi]) / len(px)


# -- grey levels ------------------------------------------------------------------
def _grey_statistics(values: np.ndarray) -> list[float]:
    """The grey-level features of uint8 ``values``, from their 256-bin histogram."""
    n = len(values)
    hist = np.bincount(values, minlength=256)
    mean = _dot(hist, _LEVELS) / n
    d = _LEVELS - mean
    d2 = d * d
    m2 = _dot(hist, d2) / n
    if m2 > 0:
        skewness = _dot(hist, d2 * d) / n / m2 ** 1.5
        kurtosis = _dot(hist, d2 * d2) / n / m2 ** 2 - 3.0
    else:
        skewness = kurtosis = 0.0
    # Sorted value k is the first level whose cumulated count exceeds k;
    # quantiles interpolate between ranks floor and ceil of q (n - 1) (NumPy's "linear").
    cum = np.cumsum(hist)
    pos = np.array(_QUANTILES) * (n - 1)
    lo = np.floor(pos)
    ranks = np.concatenate([[0, n - 1], lo, np.minimum(lo + 1, n - 1)])
    sorted_at = np.searchsorted(cum, ranks, side="right").astype(np.float64)
    vmin, vmax = float(sorted_at[0]), float(sorted_at[1])
    k = len(_QUANTILES)
    q = sorted_at[2:2 + k] + (pos - lo) * (sorted_at[2 + k:] - sorted_at[2:2 + k])
    q10, q25, median, q75, q90 = (float(v) for v in q)
    stddev = math.sqrt(m2)
    return [mean, stddev, vmin, vmax, median, float(hist.argmax()), skewness, kurtosis,
            q10, q25, q75, q90, vmax - vmin, _ratio(100.0 * stddev, mean), mean * n]


# -- the row ----------------------------------------------------------------------
def measure_grey(grey: np.ndarray, pixel_size_um: float | None = None,
                 threshold: float | None = None) -> np.ndarray:
    """The ``morpho`` row (float32, in :data:`MORPHO_FEATURES` order) of a 2-D uint8 image.

    ``pixel_size_um`` (micrometres per pixel) fills the ``*_mm`` and
    ``*_mm2`` features; without it they are NaN. ``threshold`` replaces the
    image mean as the segmentation threshold (``grey < threshold``), to
    reproduce another tool's segmentation; the extractor always uses the mean.
    """
    grey = np.asarray(grey)
    if grey.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {grey.shape}")
    out = np.full(len(MORPHO_FEATURES), np.nan, dtype=np.float32)
    found = _largest_object(grey, threshold)
    if found is None:
        return out
    box, organism = found
    h, w = organism.shape
    padded = np.zeros((h + 2, w + 2), dtype=bool)
    padded[1:-1, 1:-1] = organism
    # Holes: background pieces (4-connected) other than the one outside.
    background, n_background = ndimage.label(~padded, structure=_FOUR_CONNECTED)
    filled_padded = background != background[0, 0]
    filled = filled_padded[1:-1, 1:-1]

    ys, xs = np.nonzero(filled)
    area = len(xs)
    holes_area = area - int(np.count_nonzero(organism))
    perimeter = _outline_length(filled_padded.view(np.uint8))

    # ImageJ's fitted ellipse: second moments of unit-square pixels (variance + 1/12)
    # give the axes' ratio and direction, the ellipse's area is the organism's.
    mx, my = xs.sum() / area, ys.sum() / area
    dx, dy = xs - mx, ys - my
    sxx, syy, sxy = _dot(dx, dx) / area, _dot(dy, dy) / area, _dot(dx, dy) / area
    half_sum, root = (sxx + syy) / 2 + 1 / 12, math.hypot((sxx - syy) / 2, sxy)
    l1, l2 = half_sum + root, half_sum - root
    major = math.sqrt(4 * area / math.pi * math.sqrt(l1 / l2))
    minor = math.sqrt(4 * area / math.pi * math.sqrt(l2 / l1))
    theta = 0.5 * math.atan2(2 * sxy, sxx - syy)  # from the x axis towards +y (down)
    angle = math.degrees(-theta) % 180.0
    convex_area, convex_perimeter, feret, feret_min = _hull_measures(_hull(filled))

    # Mirror images across the major axis (direction e), and across the minor axis:
    # the same points turned half a turn about the centroid.
    ex, ey = math.cos(theta), math.sin(theta)
    along = 2 * (dx * ex + dy * ey)
    px, py = along * ex - dx, along * ey - dy  # mirrored across the major axis, from the centroid
    sym_h = _mirror_overlap(filled_padded, mx + px, my + py)
    sym_v = _mirror_overlap(filled_padded, mx - px, my - py)

    # Outer contour: pixels of the filled organism with a 4-neighbour outside it.
    fp = filled_padded
    contour = filled & ~(fp[:-2, 1:-1] & fp[2:, 1:-1] & fp[1:-1, :-2] & fp[1:-1, 2:])

    values = grey[box][filled]
    darkness = 255.0 - values
    weight = float(darkness.sum())
    centroids = (math.hypot(_dot(darkness, dx) / weight, _dot(darkness, dy) / weight)
                 if weight > 0 else 0.0)

    out[:len(_SHAPE)] = [
        area, holes_area, 100.0 * holes_area / area, n_background - 1, perimeter,
        major, minor, angle, math.sqrt(1 - l2 / l1), major / minor,
        feret, feret_min, min(1.0, 4 * math.pi * area / (perimeter * perimeter)),
        convex_area, convex_perimeter, area / convex_area, 2.0 * math.sqrt(area / math.pi),
        w, h, area / (w * h), np.count_nonzero(skeletonize(filled)),
        _fractal_dimension(contour), sym_h, sym_v, _ratio(sym_h, sym_v), centroids,
    ]
    out[len(_SHAPE):len(_SHAPE) + len(_GREY)] = _grey_statistics(values)
    if pixel_size_um is not None:
        mm = pixel_size_um / 1000.0
        out[len(_SHAPE) + len(_GREY):] = np.concatenate(
            [out[_AREA_INDEX] * (mm * mm), out[_LENGTH_INDEX] * mm])
    return out


class MorphologyExtractor:
    """The ``morpho`` feature set: :func:`measure_grey` on each image file.

    Parameters
    ----------
    bottom_crop : rows dropped at the bottom of each image before segmenting
        (a scale bar would otherwise be measured).
    pixel_size_um : size of a pixel in micrometres (``Project.pixel_size_um``),
        for the ``*_mm`` and ``*_mm2`` features; None leaves them NaN.
    """

    name = "morpho"
    version = MORPHO_VERSION

    def __init__(self, bottom_crop: int = 0, pixel_size_um: float | None = None):
        if pixel_size_um is not None and not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
            raise ValueError(f"pixel_size_um must be a positive number of micrometres, "
                             f"got {pixel_size_um!r}")
        self.bottom_crop = int(bottom_crop)
        self.pixel_size_um = None if pixel_size_um is None else float(pixel_size_um)
        self.feature_names = list(MORPHO_FEATURES)

    def producer(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version,
                "settings": {"bottom_crop": self.bottom_crop, "threshold": "grey < mean",
                             "object": "largest 8-connected",
                             "pixel_size_um": self.pixel_size_um}}

    def extract(self, paths: Sequence[str | Path]) -> np.ndarray:
        out = np.empty((len(paths), len(self.feature_names)), dtype=np.float32)
        for i, path in enumerate(paths):
            grey = _read_grey(path)
            if self.bottom_crop > 0:
                grey = grey[:max(1, grey.shape[0] - self.bottom_crop)]
            out[i] = measure_grey(grey, self.pixel_size_um)
        return out

    def __repr__(self) -> str:
        return (f"MorphologyExtractor(bottom_crop={self.bottom_crop}, "
                f"pixel_size_um={self.pixel_size_um})")
