"""The contract every feature extractor keeps, as a test base class to subclass.

Subclass :class:`ExtractorConformance` in a ``test_*.py`` module and set
``extractor_name`` (and ``extractor_kwargs``)::

    class TestMorphologyConformance(ExtractorConformance):
        extractor_name = "morpho"

The images are real NDSB vignettes (from the ``ndsb_subset`` fixture) and
versions of one of them in the other modes Pillow decodes (16-bit, palette,
colour RGB, RGBA), a blank image and a file that is not an image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ecotaxa_core.features import (FeatureExtractor, ImageReadError, available_extractors,
                                   get_extractor)


def write_image_variants(src: Path, dest: Path) -> dict[str, Path]:
    """Copies of the grey image ``src`` in several encodings, plus a blank and a broken file."""
    dest.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        grey = np.asarray(im.convert("L"))
    out = {"grey8": dest / "grey8.png", "grey16": dest / "grey16.png",
           "palette": dest / "palette.png", "rgb": dest / "rgb.png", "rgba": dest / "rgba.png",
           "blank": dest / "blank.png", "broken": dest / "broken.jpg"}
    Image.fromarray(grey, mode="L").save(out["grey8"])
    Image.fromarray(grey.astype(np.uint16) * 257).save(out["grey16"])
    palette = Image.fromarray(grey, mode="P")
    palette.putpalette([v for level in range(256) for v in (level, level, level)])
    palette.save(out["palette"])
    Image.fromarray(np.stack([grey] * 3, axis=2), mode="RGB").save(out["rgb"])
    opaque = np.dstack([grey] * 3 + [np.full_like(grey, 255)])
    Image.fromarray(opaque, mode="RGBA").save(out["rgba"])
    Image.new("L", (40, 30), 255).save(out["blank"])
    out["broken"].write_bytes(b"this is not a JPEG")
    return out


class ExtractorConformance:
    """Checks of the :class:`~ecotaxa_core.features.FeatureExtractor` contract."""

    extractor_name: str = ""
    extractor_kwargs: dict[str, Any] = {}
    # How close rows of the same image must be whatever the batch around it.
    atol: float = 1e-5

    @pytest.fixture(scope="class")
    @classmethod
    def kwargs(cls) -> dict[str, Any]:
        """``get_extractor`` keywords (a subclass may build them from other fixtures)."""
        return dict(cls.extractor_kwargs)

    @pytest.fixture(scope="class")
    @classmethod
    def extractor(cls, kwargs) -> FeatureExtractor:
        return get_extractor(cls.extractor_name, **kwargs)

    @pytest.fixture(scope="class")
    @classmethod
    def real_images(cls, ndsb_subset) -> list[Path]:
        """Two real images of each of three classes."""
        classes = sorted(p for p in ndsb_subset.iterdir() if p.is_dir())[:3]
        return [p for c in classes for p in sorted(c.glob("*.jpg"))[:2]]

    @pytest.fixture(scope="class")
    @classmethod
    def variants(cls, real_images, tmp_path_factory) -> dict[str, Path]:
        return write_image_variants(real_images[0], tmp_path_factory.mktemp("variants"))

    # -- description ----------------------------------------------------------
    def test_follows_the_protocol(self, extractor, kwargs):
        assert isinstance(extractor, FeatureExtractor)
        assert extractor.name == self.extractor_name in available_extractors(
            kwargs.get("backbones"))

    def test_feature_names_are_unique_strings(self, extractor):
        names = extractor.feature_names
        assert names and all(isinstance(n, str) and n for n in names)
        assert len(set(names)) == len(names)

    def test_producer_is_json_and_names_the_set(self, extractor):
        producer = extractor.producer()
        assert json.loads(json.dumps(producer)) == producer
        assert producer["name"] == extractor.name
        assert producer["version"] and isinstance(producer["settings"], dict)

    def test_producer_ignores_speed_settings(self, extractor, kwargs):
        other = get_extractor(self.extractor_name, **{**kwargs, "batch_size": 3, "num_threads": 1})
        assert other.producer() == extractor.producer()

    # -- rows -----------------------------------------------------------------
    def test_rows_are_float32_finite_one_per_image(self, extractor, real_images):
        rows = extractor.extract(real_images)
        assert rows.dtype == np.float32
        assert rows.shape == (len(real_images), len(extractor.feature_names))
        assert np.isfinite(rows).all()
        # Different organisms give different rows.
        assert len(np.unique(rows.round(4), axis=0)) == len(real_images)

    def test_no_images_gives_no_rows(self, extractor):
        assert extractor.extract([]).shape == (0, len(extractor.feature_names))

    def test_row_depends_only_on_its_image(self, extractor, real_images):
        rows = extractor.extract(real_images)
        reversed_rows = extractor.extract(real_images[::-1])[::-1]
        single = extractor.extract(real_images[2:3])
        np.testing.assert_allclose(reversed_rows, rows, atol=self.atol, rtol=1e-4)
        np.testing.assert_allclose(single[0], rows[2], atol=self.atol, rtol=1e-4)

    def test_decodes_every_image_mode_alike(self, extractor, variants):
        names = ["grey8", "grey16", "palette", "rgb", "rgba"]
        rows = extractor.extract([variants[n] for n in names])
        assert np.isfinite(rows).all()
        for i in range(1, len(names)):
            np.testing.assert_allclose(rows[i], rows[0], atol=self.atol, rtol=1e-4,
                                       err_msg=f"{names[i]} differs from grey8")

    def test_blank_image_does_not_raise(self, extractor, variants):
        rows = extractor.extract([variants["blank"], variants["grey8"]])
        assert rows.shape == (2, len(extractor.feature_names))
        assert np.isfinite(rows[1]).all()

    def test_unreadable_file_is_named(self, extractor, variants):
        with pytest.raises(ImageReadError, match="broken.jpg") as info:
            extractor.extract([variants["grey8"], variants["broken"]])
        assert info.value.path == variants["broken"]
