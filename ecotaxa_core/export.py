"""Exporting a project: its EcoTaxa TSV bundle, plus per-sample per-category counts.

The bundle is a zip ``ecotaxa_export_<project>_<UTC time>.zip`` (see
:mod:`~ecotaxa_core.export_tsv` for its layout) that
:func:`~ecotaxa_core.importer.import_path`, or EcoTaxa, reads back into the same
project: same objects, metadata, images, categories, statuses, annotators and
annotation times (to the second, as the EcoTaxa format writes them). Category
ids are this instance's taxon ids, which are EcoTaxa's for taxa created from
EcoTaxa files. The counts table ``counts_<project>.tsv`` is written next to it.

Concentrations and biovolumes are in :mod:`~ecotaxa_core.summaries`, the
Darwin Core Archive in :mod:`~ecotaxa_core.dwca`.
"""

from __future__ import annotations

import csv
import io
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import Object, ObjectStatus, Sample, Taxon, utcnow
from ecotaxa_core.export_bundle import write_bundle
from ecotaxa_core.export_manifest import export_digest, previous_export, remember_export
from ecotaxa_core.export_tsv import export_columns
from ecotaxa_core.instance import Instance
from ecotaxa_core.projects import get_project

__all__ = ["ExportResult", "export_project", "export_columns", "free_path"]


@dataclass(frozen=True)
class ExportResult:
    project_id: int
    bundle: Path
    counts: Path
    n_objects: int
    n_images: int
    with_images: bool = True
    split_by_sample: bool = False
    tsv_files: list[str] = field(default_factory=list)
    reused: bool = False  # the folder's previous export of the same content, kept

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bundle"], d["counts"] = str(self.bundle), str(self.counts)
        return d


def export_project(inst: Instance, project_id: int, out_dir: str | Path, *,
                   with_images: bool = True, split_by_sample: bool = False,
                   progress: Callable[[int], None] | None = None,
                   reuse: bool = True) -> ExportResult:
    """Write the project's bundle zip and counts table into ``out_dir``.

    With ``reuse``, when ``out_dir`` holds an export of the project with the
    same options and content, untouched, nothing is written and its result comes
    back with ``reused`` (see :mod:`~ecotaxa_core.export_manifest`).

    Parameters
    ----------
    inst : the instance holding the project.
    project_id : the project to export.
    out_dir : folder receiving the zip and the counts table (created if needed).
    with_images : copy the images into the zip; without them the TSV still names
        the image files (a backup of the metadata alone).
    split_by_sample : one folder with its own TSV (and images) per sample, as
        EcoTaxa's backups, instead of a single TSV.
    progress : called now and then with the number of objects written.

    Raises
    ------
    ProjectNotFound
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with inst.sessions() as s:
        get_project(s, project_id)
    options = {"with_images": with_images, "split_by_sample": split_by_sample}
    digest = export_digest(inst, project_id, out_dir, split_by_sample=split_by_sample)
    if reuse:
        previous = previous_export(out_dir, project_id, options, digest)
        if previous is not None:
            return ExportResult(**{**previous, "bundle": Path(previous["bundle"]),
                                   "counts": Path(previous["counts"]), "reused": True})
    bundle = free_path(out_dir, f"ecotaxa_export_{project_id}_"
                                f"{utcnow().strftime('%Y%m%d_%H%M%S')}", ".zip")
    stats = write_bundle(inst, project_id, bundle, with_images=with_images,
                         split_by_sample=split_by_sample, progress=progress)
    counts = out_dir / f"counts_{project_id}.tsv"
    with inst.sessions() as s:
        _write_counts(s, project_id, counts)
    result = ExportResult(project_id=project_id, bundle=bundle, counts=counts,
                          n_objects=stats.n_objects, n_images=stats.n_images,
                          with_images=with_images, split_by_sample=split_by_sample,
                          tsv_files=stats.tsv_files)
    remember_export(out_dir, project_id, options, digest,
                    {k: v for k, v in result.to_dict().items() if k != "reused"})
    return result


def free_path(folder: Path, stem: str, suffix: str) -> Path:
    """``folder/stem+suffix``, or ``stem_2``, ``stem_3`` ... when it exists."""
    path, n = folder / f"{stem}{suffix}", 2
    while path.exists():
        path, n = folder / f"{stem}_{n}{suffix}", n + 1
    return path


def _write_counts(s: Session, project_id: int, path: Path) -> None:
    """Objects per sample, category and status (categories without objects are left out)."""
    rows = s.execute(
        select(Sample.orig_id, Taxon.display_name, Object.status, func.count())
        .select_from(Object)
        .outerjoin(Sample, Sample.id == Object.sample_id)
        .outerjoin(Taxon, Taxon.id == Object.taxon_id)
        .where(Object.project_id == project_id)
        .group_by(Sample.orig_id, Taxon.display_name, Object.status)).all()
    table: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for sample, category, status, n in rows:
        table[(sample or "", category or "")][status] += n
    statuses = [s_.value for s_ in (ObjectStatus.VALIDATED, ObjectStatus.PREDICTED,
                                    ObjectStatus.DUBIOUS, ObjectStatus.UNCLASSIFIED)]
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(["sample_id", "category"] + [f"n_{st}" for st in statuses] + ["n_total"])
    for (sample, category), by_status in sorted(table.items()):
        counts = [by_status.get(st, 0) for st in statuses]
        writer.writerow([sample, category] + counts + [sum(counts)])
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, path)
