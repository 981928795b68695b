"""Which column gives a project its pixel size, in which unit, and when none does."""

from __future__ import annotations

from ecotaxa_core.import_plan import ParentPlan
from ecotaxa_core.pixel_size import pixel_size_of


def parent(orig_id: str, **extra) -> ParentPlan:
    return ParentPlan(orig_id, "ecotaxa_x.tsv", 3, extra=extra)


def test_columns_in_their_units_and_order():
    # UVP: acq_pixel in mm.
    assert pixel_size_of([], [parent("a", pixel=0.073)]).um == 73.0
    # Recent ZooProcess in mm wins over process_pixel, which wins over acq_pixel.
    found = pixel_size_of([parent("p", particle_pixel_size_mm="0.0106", pixel="99")],
                          [parent("a", pixel=0.073)])
    assert (found.um, found.column) == (10.6, "process_particle_pixel_size_mm")
    assert pixel_size_of([parent("p", pixel="10,6")], []).um == 10.6  # decimal comma


def test_no_size_when_absent_meaningless_or_disagreeing():
    assert pixel_size_of([parent("p")], [parent("a", instrument="uvp5")]).um is None
    assert pixel_size_of([parent("p", pixel="n/a"), parent("q", pixel="0")], []).um is None
    found = pixel_size_of([parent("p", pixel="10.6"), parent("q", pixel="21.2")], [])
    assert found.um is None and found.conflicting and found.values == (10.6, 21.2)
    # The same size written twice is one size.
    assert pixel_size_of([parent("p", pixel="10.6"), parent("q", pixel=10.6)], []).um == 10.6
