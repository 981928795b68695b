"""The instrument's pixel size, read from the columns EcoTaxa bundles carry.

Morphological features give areas in mm² and lengths in mm when the project
knows its pixel size (``Project.pixel_size_um``). Bundles say it in one of
these columns, looked for in this order:

* ``process_particle_pixel_size_mm`` (recent ZooProcess), in millimetres;
* ``process_pixel`` (ZooProcess: 10.6 for a ZooScan at 2400 dpi), in micrometres;
* ``acq_pixel`` (UVP5, UVP6), in millimetres.

The first of those columns that the import's processes (or acquisitions)
fill decides; it must hold one value in the whole import, between 0.01 µm and
10 mm, or no size is read (different sizes in one project would make its
features incomparable).

>>> from ecotaxa_core.import_plan import ParentPlan
>>> p = ParentPlan("zooscan_p1", "ecotaxa_a.tsv", 3, extra={"pixel": "10.6"})
>>> found = pixel_size_of([p], [])
>>> found.um, found.column
(10.6, 'process_pixel')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from ecotaxa_core.import_plan import ParentPlan

__all__ = ["PixelSize", "pixel_size_of"]

# (prefix, field, micrometres per unit of the column), in order of preference.
_COLUMNS = (("process", "particle_pixel_size_mm", 1000.0), ("process", "pixel", 1.0),
            ("acq", "pixel", 1000.0))
_MIN_UM, _MAX_UM = 0.01, 10_000.0


@dataclass(frozen=True)
class PixelSize:
    """What an import's columns say of the pixel size."""

    um: float | None  # None: no column gives one, or the values disagree
    column: str | None = None  # the column read, e.g. "process_pixel"
    values: tuple[float, ...] = ()  # the distinct sizes found (µm), when several

    @property
    def conflicting(self) -> bool:
        return len(self.values) > 1


def _as_float(value: object) -> float | None:
    try:
        number = float(str(value).strip().replace(",", "."))
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def pixel_size_of(processes: Iterable[ParentPlan],
                  acquisitions: Iterable[ParentPlan]) -> PixelSize:
    """The pixel size the import's processes and acquisitions agree on, in µm."""
    parents = {"process": list(processes), "acq": list(acquisitions)}
    for prefix, field, scale in _COLUMNS:
        found = {round(v * scale, 6) for p in parents[prefix]
                 if (v := _as_float(p.extra.get(field, ""))) is not None}
        found = {v for v in found if _MIN_UM <= v <= _MAX_UM}
        if not found:
            continue
        column = f"{prefix}_{field}"
        if len(found) > 1:
            return PixelSize(None, column, tuple(sorted(found)))
        return PixelSize(found.pop(), column)
    return PixelSize(None)
