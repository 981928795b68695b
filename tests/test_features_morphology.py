"""Morphological features and EcoTaxa's preprocessing, on synthetic shapes and real images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ecotaxa_core.features import (ImageReadError, MORPHO_FEATURES, get_extractor, measure_grey,
                                   preprocess, read_grey, read_image)
from ecotaxa_core.features.morphology import segment_organism
from ecotaxa_core.features.preprocessing import border_median, default_bottom_crop
from conftest import DATASETS
from extractor_conformance import ExtractorConformance

BACKGROUND = 235


def _canvas(height: int = 80, width: int = 80) -> np.ndarray:
    return np.full((height, width), BACKGROUND, dtype=np.uint8)


def _disc_mask(shape, centre, radius) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def _row(grey: np.ndarray) -> dict[str, float]:
    return dict(zip(MORPHO_FEATURES, measure_grey(grey).tolist()))


class TestMorphologyConformance(ExtractorConformance):
    extractor_name = "morpho"


# -- synthetic shapes -----------------------------------------------------------
def test_black_disc_measures_as_a_disc():
    r = 25
    grey = _canvas(90, 90)
    grey[_disc_mask(grey.shape, (45, 45), r)] = 0
    row = _row(grey)
    assert row["area"] == pytest.approx(math.pi * r * r, rel=0.02)
    assert row["perimeter"] == pytest.approx(2 * math.pi * r, rel=0.05)
    for length in ("major", "minor", "esd"):
        assert row[length] == pytest.approx(2 * r, rel=0.03), length
    assert row["feret"] == pytest.approx(2 * r, rel=0.05)  # measured on the pixels' hull
    assert row["circularity"] == pytest.approx(1.0, abs=0.1)
    assert row["elongation"] == pytest.approx(1.0, abs=0.02)
    assert row["eccentricity"] < 0.15
    assert row["solidity"] == pytest.approx(1.0, abs=0.04)
    assert row["convex_area"] >= row["area"]
    assert row["convex_perimeter"] == pytest.approx(row["perimeter"], rel=0.05)
    assert row["bbox_width"] == row["bbox_height"] == 2 * r + 1
    assert row["extent"] == pytest.approx(row["area"] / (2 * r + 1) ** 2)
    assert row["n_holes"] == 0
    assert (row["mean"], row["stddev"], row["min"], row["max"], row["mode"]) == (0, 0, 0, 0, 0)
    assert (row["skewness"], row["kurtosis"]) == (0, 0)
    # A disc's skeleton is a point or a short segment, never its area.
    assert 1 <= row["skeleton_area"] < 5


def test_wide_rectangle_keeps_width_and_height_apart():
    grey = _canvas(60, 100)
    grey[20:30, 10:70] = 30  # 60 columns wide, 10 rows high
    row = _row(grey)
    assert (row["bbox_width"], row["bbox_height"], row["area"]) == (60, 10, 600)
    assert row["extent"] == 1.0 and row["solidity"] == 1.0
    assert row["elongation"] > 5
    assert row["feret"] == pytest.approx(math.hypot(59, 9), abs=1.5)
    assert row["skeleton_area"] >= 45


def test_holes_are_counted():
    grey = _canvas(80, 120)
    grey[_disc_mask(grey.shape, (40, 40), 30)] = 20
    grey[_disc_mask(grey.shape, (40, 40), 10)] = BACKGROUND  # a ring: one hole
    assert _row(grey)["n_holes"] == 1
    grey[10:70, 75:115] = 20
    grey[20:30, 85:95] = BACKGROUND
    grey[45:60, 85:105] = BACKGROUND
    grey[35:45, 70:80] = 20  # joins the box to the ring: three holes in one organism
    assert _row(grey)["n_holes"] == 3


def test_largest_object_is_measured():
    grey = _canvas(80, 120)
    grey[_disc_mask(grey.shape, (40, 30), 8)] = 0
    grey[_disc_mask(grey.shape, (40, 85), 20)] = 60
    row = _row(grey)
    assert row["area"] == pytest.approx(math.pi * 400, rel=0.02)
    assert row["mean"] == 60


def test_mean_threshold_keeps_faint_translucent_parts():
    # A dark core inside a large faint body (gelatinous organism): Otsu would keep the core.
    grey = _canvas(100, 100)
    body = _disc_mask(grey.shape, (50, 50), 30)
    grey[body] = 205
    grey[_disc_mask(grey.shape, (50, 50), 6)] = 10
    from skimage.filters import threshold_otsu

    assert (grey < threshold_otsu(grey)).sum() < 0.1 * body.sum()
    row = _row(grey)
    assert row["area"] == body.sum()
    assert row["min"] == 10 and row["max"] == 205 and row["mode"] == 205


def test_grey_statistics_of_a_two_level_organism():
    grey = _canvas(40, 60)
    grey[10:30, 10:30] = 50  # 400 pixels at 50
    grey[10:30, 30:40] = 100  # 200 pixels at 100
    row = _row(grey)
    values = np.r_[np.full(400, 50.0), np.full(200, 100.0)]
    d = values - values.mean()
    assert row["area"] == 600
    assert row["mean"] == pytest.approx(values.mean())
    assert row["stddev"] == pytest.approx(values.std())
    assert (row["min"], row["max"], row["median"], row["mode"]) == (50, 100, 50, 50)
    assert (row["q10"], row["q25"], row["q90"]) == (50, 50, 100)
    assert row["q75"] == pytest.approx(np.percentile(values, 75))
    assert row["skewness"] == pytest.approx((d ** 3).mean() / values.var() ** 1.5, rel=1e-5)
    assert row["kurtosis"] == pytest.approx((d ** 4).mean() / values.var() ** 2 - 3, rel=1e-5)


@pytest.mark.parametrize("value", [0, 128, 255])
def test_uniform_image_gives_nan_row(value):
    grey = np.full((30, 50), value, dtype=np.uint8)
    assert segment_organism(grey) is None
    assert np.isnan(measure_grey(grey)).all()


def test_single_pixel_organism_has_nan_ratios():
    grey = _canvas(20, 20)
    grey[10, 10] = 0
    row = _row(grey)
    assert row["area"] == 1
    assert math.isnan(row["circularity"]) and math.isnan(row["elongation"])


def test_bottom_crop_removes_the_scale_bar(tmp_path):
    grey = _canvas(100, 120)
    grey[_disc_mask(grey.shape, (35, 60), 15)] = 90
    grey[85:92, 5:115] = 0  # a scale bar, larger than the organism
    path = tmp_path / "vignette.png"
    Image.fromarray(grey).save(path)
    uncropped = dict(zip(MORPHO_FEATURES, get_extractor("morpho").extract([path])[0]))
    cropped = dict(zip(MORPHO_FEATURES,
                       get_extractor("morpho", bottom_crop=31).extract([path])[0]))
    assert uncropped["bbox_width"] == 110  # the bar won
    assert cropped["bbox_width"] == 31 and cropped["mean"] == 90


# -- real images ------------------------------------------------------------------
def test_real_ndsb_images_give_plausible_rows(ndsb_subset):
    paths = sorted(ndsb_subset.glob("*/*.jpg"))
    rows = get_extractor("morpho").extract(paths)
    assert np.isfinite(rows).all()
    row = {name: rows[:, i] for i, name in enumerate(MORPHO_FEATURES)}
    sizes = np.array([_size(p) for p in paths])  # (width, height)
    assert (row["area"] > 0).all() and (row["area"] <= sizes.prod(axis=1)).all()
    assert (row["bbox_width"] <= sizes[:, 0]).all() and (row["bbox_height"] <= sizes[:, 1]).all()
    assert (row["solidity"] <= 1.0 + 1e-6).all() and (row["extent"] <= 1.0 + 1e-6).all()
    assert (row["min"] <= row["q10"]).all() and (row["q90"] <= row["max"]).all()
    assert (row["major"] >= row["minor"]).all()
    # Arrow worms are long, Noctiluca is round.
    classes = np.array([p.parent.name for p in paths])
    chaetognath = np.median(row["elongation"][classes == "chaetognath_other"])
    noctiluca = np.median(row["elongation"][classes == "protist_noctiluca"])
    assert chaetognath > 2 * noctiluca


def test_real_zooscan_vignettes_with_scale_bar_crop():
    paths = sorted((DATASETS / "zooscan_vignettes_unlabelled").glob("*.png"))[:20]
    assert default_bottom_crop("zooscan") == 31
    rows = get_extractor("morpho", bottom_crop=31).extract(paths)
    heights = np.array([_size(p)[1] for p in paths])
    bbox_height = rows[:, MORPHO_FEATURES.index("bbox_height")]
    assert np.isfinite(rows).all()
    assert (bbox_height <= heights - 31).all()


# -- decoding -----------------------------------------------------------------------
def test_read_image_modes(tmp_path):
    a16 = (np.arange(60 * 40, dtype=np.uint32).reshape(40, 60) * 27).astype(np.uint16)
    Image.fromarray(a16).save(tmp_path / "g16.png")
    grey = read_grey(tmp_path / "g16.png")
    assert grey.shape == (40, 60) and grey.dtype == np.uint8
    assert abs(int(grey.max()) - round(int(a16.max()) / 257)) <= 1
    colour = np.zeros((10, 20, 3), dtype=np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour).save(tmp_path / "red.png")
    assert read_image(tmp_path / "red.png").mode == "RGB"  # real colour is kept
    rgba = np.zeros((10, 20, 4), dtype=np.uint8)  # fully transparent: white
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "clear.png")
    assert read_grey(tmp_path / "clear.png").min() == 255
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ImageReadError, match="broken.png"):
        read_image(tmp_path / "broken.png")


# -- preprocessing ------------------------------------------------------------------
def test_wide_image_is_padded_top_and_bottom():
    wide = np.full((30, 60), 200, dtype=np.uint8)  # 60 wide, 30 high
    wide[3:27, 3:30] = 0  # dark on the left half
    out = preprocess(Image.fromarray(wide), input_size=224)
    assert out.shape == (224, 224, 3)
    # The content is 224 wide and 112 high, centred vertically.
    assert (out[:56] == 200).all() and (out[168:] == 200).all()
    assert (out[72:152, 16:104] == 0).all() and (out[72:152, 116:] == 200).all()


def test_tall_image_is_padded_left_and_right():
    tall = np.full((60, 30), 200, dtype=np.uint8)  # 30 wide, 60 high
    tall[3:30, 3:27] = 0  # dark in the top half
    out = preprocess(Image.fromarray(tall), input_size=128)
    # The content is 64 wide and 128 high, centred horizontally.
    assert (out[:, :32] == 200).all() and (out[:, 96:] == 200).all()
    assert (out[10:58, 40:88] == 0).all() and (out[66:, 40:88] == 200).all()


def test_padding_takes_the_median_border_colour():
    grey = np.full((20, 50), 173, dtype=np.uint8)
    grey[0, :5] = 0  # a few dark border pixels do not move the median
    grey[5:15, 10:40] = 12
    out = preprocess(Image.fromarray(grey), input_size=100)
    assert out[0, 0].tolist() == [173, 173, 173]
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    colour = np.zeros((10, 30, 3), dtype=np.uint8)
    colour[:] = (10, 120, 230)
    out = preprocess(Image.fromarray(colour), input_size=60)
    assert out[0, 0].tolist() == [10, 120, 230]
    assert border_median(colour).tolist() == [10, 120, 230]


def test_bottom_crop_before_resizing():
    grey = np.full((131, 100), 220, dtype=np.uint8)
    grey[100:, :] = 0  # scale bar band, 31 rows
    out = preprocess(Image.fromarray(grey), input_size=50, bottom_crop=31)
    assert (out == 220).all()  # 100 x 100 after the crop: no padding, no bar
    out = preprocess(Image.fromarray(grey), input_size=50)
    assert (out == 0).any()


def test_large_image_is_shrunk_keeping_its_aspect():
    grey = np.full((100, 400), 90, dtype=np.uint8)  # 400 wide, 100 high
    grey[0, :] = grey[-1, :] = 250
    grey[:, 0] = grey[:, -1] = 250
    out = preprocess(Image.fromarray(grey), input_size=64)[..., 0]
    assert (out[:24] == 250).all() and (out[40:] == 250).all()  # content is 64 x 16
    assert (np.abs(out[26:38, 2:62].astype(int) - 90) <= 2).all()


def test_grey_conversion_of_real_rgb_jpeg(ndsb_subset):
    path: Path = sorted(ndsb_subset.glob("*/*.jpg"))[0]
    with Image.open(path) as raw:
        assert raw.mode == "RGB"  # NDSB stores grey as three equal channels
    assert read_image(path).mode == "L"
