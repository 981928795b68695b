"""The spool that keeps an import's objects on disk: order, round trip, late images."""

from __future__ import annotations

import math
import os
from array import array
from datetime import datetime, timezone

import pytest

from ecotaxa_core.import_plan import FreeValues, ImagePlan, NumberLayout, ObjectPlan
from ecotaxa_core.import_spool import ObjectSpool


def _object(i: int, layout: NumberLayout, present: frozenset[str]) -> ObjectPlan:
    obj = ObjectPlan(orig_id=f"o{i}", rel="ecotaxa_a.tsv", line=3 + i, sample="s", lat=1.5 * i,
                     status="validated", label="Copepoda", category_id=i % 7,
                     annotation_date=datetime(2024, 1, 2, tzinfo=timezone.utc),
                     present=present,
                     extra=FreeValues(layout, array("d", [i, math.nan]), {"kind": f"k{i}"}))
    obj.images.append(ImagePlan(f"/data/v{i}.png", 0, f"v{i}.png", "ecotaxa_a.tsv", 3 + i))
    return obj


def test_spilled_objects_come_back_equal_and_in_order(tmp_path):
    layout, present = NumberLayout(("area", "mean")), frozenset({"object_id", "object_area"})
    objects = [_object(i, layout, present) for i in range(25)]
    with ObjectSpool(tmp_path, chunk=4) as spool:
        for obj in objects:
            spool.append(obj)
        assert (len(spool), spool.n_spilled) == (25, 24)
        assert os.listdir(tmp_path) == []  # an anonymous file: gone even if the process dies
        for _ in range(2):  # read again and again
            back = list(spool)
            assert [o.orig_id for o in back] == [o.orig_id for o in objects]
            for got, want in zip(back, objects):
                assert dict(got.extra) == dict(want.extra) and got.images == want.images
                got.extra = want.extra
                assert got == want
        shared = list(spool)
        assert shared[0].present is shared[10].present  # shared values stay shared
        assert shared[0].extra.layout is shared[10].extra.layout
        assert [len(b) for b in spool.batches(10)] == [10, 10, 5]


def test_images_of_a_spilled_object_are_attached_once_reading_ends():
    layout, present = NumberLayout(("area", "mean")), frozenset()
    spool = ObjectSpool(chunk=3)
    for i in range(10):
        spool.append(_object(i, layout, present))
    assert spool.in_memory(0) is None and spool.in_memory(9).orig_id == "o9"
    late = [ImagePlan("/data/w.png", 1, "w.png", "ecotaxa_a.tsv", 20),
            ImagePlan("/data/x.png", 1, "x.png", "ecotaxa_a.tsv", 21)]
    spool.add_late_image(1, "o1", late[0])
    spool.add_late_image(1, "o1", late[1])
    seen = []

    def accept(obj, image):
        seen.append((obj.orig_id, [im.original_name for im in obj.images], image.original_name))
        return all(im.rank != image.rank for im in obj.images)

    spool.attach_late_images(accept)
    assert seen == [("o1", ["v1.png"], "w.png"), ("o1", ["v1.png", "w.png"], "x.png")]
    by_id = {o.orig_id: o for o in spool}
    assert [im.original_name for im in by_id["o1"].images] == ["v1.png", "w.png"]
    assert [o.orig_id for o in spool] == [f"o{i}" for i in range(10)]
    spool.close()
    assert len(spool) == 0


def test_a_spool_chunk_holds_at_least_one_object():
    with pytest.raises(ValueError, match="at least one"):
        ObjectSpool(chunk=0)
