"""How close the ``morpho`` features come to ZooProcess's own columns on real ZooScan vignettes.

An EcoTaxa ZooScan bundle carries, for each object, the measurements
ZooProcess made on the scan (``object_area``, ``object_major``, ...) and the
vignette EcoTaxa shows. This script measures the vignettes again and prints,
for each ZooProcess column the bundle fills and ``morpho`` has a counterpart
for, the median relative difference (ours - ZooProcess) / ZooProcess, the
median of its absolute value and Pearson's correlation, under three
segmentations:

A. the project's: what the features flow computes for a ZooScan project
   (``MorphologyExtractor(bottom_crop=31)``, ``grey < mean``);
B. the same threshold on the vignette as this export lays it out: ZooProcess
   7.x drew an L-shaped black corner of the frame at the top left and bottom
   right of the object, which touches the organism in some vignettes, and put
   its scale legend in the rows below the bottom corner (24 to 35 rows in
   import_test, not always 31); B crops those rows and erases the corners;
C. ZooProcess's own segmentation, to compare definitions rather than
   thresholds: B, then the vignette's gamma undone
   (``raw = 255 (grey / 255) ^ (1 / process_gamma_value)``; ZooProcess
   applies the gamma to the vignettes after measuring) and ``raw <
   process_upper`` as the threshold.

Run::

    .venv/bin/python bench/validate_morpho_zooscan.py [BUNDLE_DIR]

(default: the shared ``ecotaxa_import_cases/import_test``).
``tests/test_features_morphology.py`` asserts on the same figures.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ecotaxa_core.features.morphology import (MORPHO_FEATURES,  # noqa: E402
                                              MorphologyExtractor, measure_grey)
from ecotaxa_core.features.preprocessing import ZOOSCAN_BOTTOM_CROP, read_grey  # noqa: E402

DATASETS = Path(os.environ.get("ECOTAXA_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))
DEFAULT_BUNDLE = DATASETS / "ecotaxa_import_cases" / "import_test"

#: ZooProcess column (without ``object_``) -> ``morpho`` feature.
ZOOPROCESS_COLUMNS = {
    "area": "area", "area_exc": "holes_area", "%area": "holes_pct", "perim.": "perimeter",
    "major": "major", "minor": "minor", "angle": "angle", "circ.": "circularity",
    "feret": "feret", "width": "bbox_width", "height": "bbox_height", "esd": "esd",
    "elongation": "elongation", "convarea": "convex_area", "convperim": "convex_perimeter",
    "skelarea": "skeleton_area", "fractal": "fractal", "centroids": "centroids",
    "mean": "mean", "stddev": "stddev", "mode": "mode", "min": "min", "max": "max",
    "median": "median", "skew": "skewness", "kurt": "kurtosis", "histcum1": "q25",
    "histcum2": "median", "histcum3": "q75", "range": "range", "cv": "cv", "intden": "intden",
}
CONFIGS = {"A": "project: bottom crop 31, grey < mean",
           "B": "this export's layout: legend cropped, frame corners erased, grey < mean",
           "C": "ZooProcess segmentation: B, gamma undone, raw < process_upper"}
FRAME_DARK = 10      # frame corners are drawn black
FRAME_ARM = 11       # ... with arms of 11 pixels
MIN_ARM = 8

NOTES = """\
Why some columns differ:
- Segmentation (A, B against C): ZooProcess thresholds the background-corrected
  scan at process_upper (245) before the vignette gets its gamma; `grey < mean`
  on the vignette is stricter for most objects (smaller area, darker mean), and
  for a faint object in a bright vignette (m106_mn01_n1_sml_409) looser.
- Fragmented objects: ZooProcess keeps pieces that its own pipeline joined;
  `morpho` measures the largest 8-connected piece (m106_mn01_n1_sml_409: 142 of
  516 px under C), which is why correlations can be lower than the medians.
- Grey levels: vignettes carry gamma = process_gamma_value (2 here), so A and B
  grey statistics are on another scale than ZooProcess's; C undoes it.
- object_area_exc in this export (ZooProcess 7.23) is the area of the holes
  (0 for most objects), not the area without them: it is compared with
  holes_area.
- Frame corners and legend (A): the 31 px crop made for current ZooScan
  vignettes cuts up to 6 rows of organisms in this older layout, and the black
  frame corners join the organism where they touch it."""


@dataclass
class Vignette:
    """One image of the bundle with the ZooProcess values of its object."""

    path: Path
    zooprocess: dict[str, float]
    pixel_size_um: float | None
    gamma: float
    upper: float | None


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def pixel_size_um(row: dict[str, str]) -> float | None:
    """The object's pixel size in µm, from the process/acquisition columns.

    ``process_particle_pixel_size_mm`` is in mm; ZooProcess's ``process_pixel``
    and ``acq_pixel`` are in µm for ZooScan (10.6 at 2400 dpi) and in mm for
    UVPs: a value under 1 is read as mm.
    """
    mm = _number(row.get("process_particle_pixel_size_mm"))
    if mm:
        return mm * 1000.0
    for column in ("process_pixel", "acq_pixel"):
        value = _number(row.get(column))
        if value:
            return value * 1000.0 if value < 1 else value
    return None


def read_bundle(bundle: Path) -> list[Vignette]:
    """Vignettes of the bundle's ``ecotaxa*.tsv`` files, one per image and values."""
    out, seen = [], set()
    for tsv in sorted(bundle.rglob("ecotaxa*.tsv")):
        with open(tsv, newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f, delimiter="\t"))
        header, body = lines[0], lines[1:]
        if body and all(v.strip().lower() in ("[f]", "[t]") for v in body[0] if v.strip()):
            body = body[1:]  # the type row
        for line in body:
            row = dict(zip(header, line))
            values = {c: v for c in ZOOPROCESS_COLUMNS
                      if (v := _number(row.get(f"object_{c}"))) is not None}
            key = (tsv.parent / row["img_file_name"], tuple(sorted(values.items())))
            if not values or key in seen:
                continue
            seen.add(key)
            out.append(Vignette(key[0], values, pixel_size_um(row),
                                _number(row.get("process_gamma_value")) or 1.0,
                                _number(row.get("process_upper"))))
    return out


def _arm(grey: np.ndarray, r: int, c: int, dr: int, dc: int) -> int:
    n = 0
    while (0 <= r + dr * n < grey.shape[0] and 0 <= c + dc * n < grey.shape[1]
           and grey[r + dr * n, c + dc * n] <= FRAME_DARK):
        n += 1
    return n


def find_frame(grey: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Top-left and bottom-right frame corners ZooProcess 7.x drew around the object.

    A corner is a dark pixel with a horizontal and a vertical arm of at least
    8 dark pixels: to the right and down at the top left, to the left and up
    at the bottom right. The scale bar and the legend's digits have no such
    pair of arms. None when the vignette has no frame (current ZooProcess).
    """
    ys, xs = np.nonzero(grey <= FRAME_DARK)
    top_left = bottom_right = None
    for r, c in sorted(zip(ys.tolist(), xs.tolist())):
        if _arm(grey, r, c, 0, 1) >= MIN_ARM and _arm(grey, r, c, 1, 0) >= MIN_ARM:
            top_left = (r, c)
            break
    for r, c in sorted(zip(ys.tolist(), xs.tolist()), reverse=True):
        if _arm(grey, r, c, 0, -1) >= MIN_ARM and _arm(grey, r, c, -1, 0) >= MIN_ARM:
            bottom_right = (r, c)
            break
    if top_left is None or bottom_right is None or bottom_right[0] <= top_left[0]:
        return None
    return top_left, bottom_right


def vignette_grey(path: Path) -> np.ndarray:
    """The vignette without its legend rows and frame corners (segmentation B)."""
    grey = read_grey(path).copy()
    frame = find_frame(grey)
    if frame is None:
        return grey[:max(1, grey.shape[0] - ZOOSCAN_BOTTOM_CROP)]
    (r0, c0), (r1, c1) = frame
    arms = [(r, c, dr, dc, min(FRAME_ARM, _arm(grey, r, c, dr, dc)))
            for r, c, dr, dc in ((r0, c0, 0, 1), (r0, c0, 1, 0), (r1, c1, 0, -1), (r1, c1, -1, 0))]
    for r, c, dr, dc, n in arms:
        grey[r + dr * np.arange(n), c + dc * np.arange(n)] = 255
    return grey[:r1 + 1]


def measure(vignettes: list[Vignette]) -> dict[str, np.ndarray]:
    """``morpho`` rows of the vignettes under each segmentation A, B, C."""
    rows: dict[str, list[np.ndarray]] = {k: [] for k in CONFIGS}
    for v in vignettes:
        rows["A"].append(MorphologyExtractor(bottom_crop=ZOOSCAN_BOTTOM_CROP,
                                             pixel_size_um=v.pixel_size_um).extract([v.path])[0])
        grey = vignette_grey(v.path)
        rows["B"].append(measure_grey(grey, v.pixel_size_um))
        if v.upper is None:
            rows["C"].append(np.full(len(MORPHO_FEATURES), np.nan, dtype=np.float32))
            continue
        raw = np.rint(255.0 * (grey / 255.0) ** (1.0 / v.gamma)).astype(np.uint8)
        rows["C"].append(measure_grey(raw, v.pixel_size_um, threshold=v.upper))
    return {k: np.array(r) for k, r in rows.items()}


@dataclass
class Agreement:
    """How one ``morpho`` feature agrees with one ZooProcess column."""

    column: str
    feature: str
    n: int
    median_rel: float       # median of (ours - theirs) / theirs, where theirs != 0
    median_abs_rel: float   # median of |ours - theirs| / |theirs|
    median_abs: float       # median of |ours - theirs|
    r: float                # Pearson correlation (NaN when either side is constant)


def agreement(theirs: np.ndarray, ours: np.ndarray, column: str, feature: str) -> Agreement:
    ok = np.isfinite(theirs) & np.isfinite(ours)
    theirs, ours = theirs[ok].astype(np.float64), ours[ok].astype(np.float64)
    nonzero = theirs != 0
    rel = (ours[nonzero] - theirs[nonzero]) / np.abs(theirs[nonzero])
    constant = len(theirs) < 2 or theirs.std() == 0 or ours.std() == 0
    return Agreement(column, feature, int(ok.sum()),
                     float(np.median(rel)) if len(rel) else math.nan,
                     float(np.median(np.abs(rel))) if len(rel) else math.nan,
                     float(np.median(np.abs(ours - theirs))) if len(ours) else math.nan,
                     math.nan if constant else float(np.corrcoef(theirs, ours)[0, 1]))


def compare(bundle: Path = DEFAULT_BUNDLE) -> dict[str, dict[str, Agreement]]:
    """Per segmentation (A, B, C), per ZooProcess column: its :class:`Agreement`."""
    vignettes = read_bundle(bundle)
    if not vignettes:
        raise SystemExit(f"{bundle}: no ecotaxa*.tsv with ZooProcess object columns")
    rows = measure(vignettes)
    columns = [c for c in ZOOPROCESS_COLUMNS if any(c in v.zooprocess for v in vignettes)]
    out: dict[str, dict[str, Agreement]] = {}
    for config, values in rows.items():
        out[config] = {}
        for column in columns:
            feature = ZOOPROCESS_COLUMNS[column]
            theirs = np.array([v.zooprocess.get(column, np.nan) for v in vignettes])
            out[config][column] = agreement(theirs, values[:, MORPHO_FEATURES.index(feature)],
                                            column, feature)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", nargs="?", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--objects", action="store_true",
                        help="also print each vignette's values: ZooProcess / A / C")
    args = parser.parse_args(argv)
    vignettes = read_bundle(args.bundle)
    sizes = sorted({v.pixel_size_um for v in vignettes}, key=str)
    print(f"{args.bundle}: {len(vignettes)} vignettes with ZooProcess values, "
          f"pixel size {sizes} µm, gamma {sorted({v.gamma for v in vignettes})}, "
          f"upper {sorted({v.upper for v in vignettes}, key=str)}")
    for key, text in CONFIGS.items():
        print(f"  {key}: {text}")
    result = compare(args.bundle)
    head = f"{'ZooProcess':16s} {'morpho':13s} {'n':>2s}"
    for key in CONFIGS:
        head += f" | {key + ' med.rel':>10s} {'|rel|':>6s} {'r':>6s}"
    print(head)
    print("-" * len(head))
    for column in result["A"]:
        a = result["A"][column]
        line = f"{'object_' + column:16s} {a.feature:13s} {a.n:2d}"
        for key in CONFIGS:
            g = result[key][column]
            line += f" | {g.median_rel:+10.3f} {g.median_abs_rel:6.3f} {g.r:6.3f}"
        print(line)
    if args.objects:
        rows = measure(vignettes)
        print()
        for i, v in enumerate(vignettes):
            cells = []
            for column, value in v.zooprocess.items():
                j = MORPHO_FEATURES.index(ZOOPROCESS_COLUMNS[column])
                cells.append(f"{column} {value:g}/{rows['A'][i, j]:.4g}/{rows['C'][i, j]:.4g}")
            print(f"{v.path.name}: " + ", ".join(cells))
    print()
    print(NOTES)


if __name__ == "__main__":
    main()
