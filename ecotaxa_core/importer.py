"""Importing a folder or zip into a project: EcoTaxa TSV bundles or class folders.

:func:`import_path` finds what the path holds (:mod:`~ecotaxa_core.import_sources`),
checks everything before writing anything (every TSV line, every image fully
decoded, the project's existing objects and columns) and raises
:class:`~ecotaxa_core.tsv.TsvFormatError` listing every problem with its file,
line and column, or :class:`~ecotaxa_core.errors.UnknownCategories` listing
every category it cannot match. Then it writes atomically
(:mod:`~ecotaxa_core.import_writer`).

Bundles: see :mod:`~ecotaxa_core.bundle_import`. Class folders: see
:mod:`~ecotaxa_core.class_folder_import`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ecotaxa_core.class_folder_import import plan_class_folders
from ecotaxa_core.bundle_import import plan_bundle
from ecotaxa_core.db.models import User
from ecotaxa_core.errors import UserNotFound
from ecotaxa_core.image_checks import check_images
from ecotaxa_core.import_checks import check_against_project
from ecotaxa_core.import_plan import ImportPlan
from ecotaxa_core.import_sources import open_source
from ecotaxa_core.import_writer import write_plan
from ecotaxa_core.instance import Instance
from ecotaxa_core.projects import get_project
from ecotaxa_core.taxonomy import CategoryResolver
from ecotaxa_core.tsv.issues import ImportReport

__all__ = ["ImportResult", "import_path"]


@dataclass(frozen=True)
class ImportResult:
    """What an import wrote; counts are of the rows the imported objects use."""

    project_id: int
    source: str
    kind: str  # "ecotaxa_bundle" | "class_folders"
    n_objects: int
    n_images: int
    n_samples: int
    n_acquisitions: int
    n_processes: int
    tsv_files: list[str]
    taxa_created: list[str]
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def import_path(inst: Instance, project_id: int, path: str | Path, *, user_id: int | None,
                create_missing_taxa: bool = False,
                progress: Callable[[int, int], None] | None = None) -> ImportResult:
    """Import the EcoTaxa bundle or class folders at ``path`` (a folder or a .zip).

    Parameters
    ----------
    inst : the instance to write into.
    project_id : the destination project.
    path : a folder or a zip holding ``ecotaxa*.tsv`` files and images, or class
        folders ``<category>/<image>`` (possibly under one wrapping folder).
    user_id : the importing user; class-folder objects are validated by them.
    create_missing_taxa : create categories that match no taxon (under the
        parent their label names) instead of raising ``UnknownCategories``.
    progress : called now and then with (steps done, total steps); a step is
        one image checked or one image stored.

    Raises
    ------
    TsvFormatError : any problem of the source, all of them in its report.
    UnknownCategories : labels matching no taxon, without ``create_missing_taxa``.
    ProjectNotFound, UserNotFound.
    """
    started = time.perf_counter()
    with inst.sessions() as s:
        get_project(s, project_id)
        if user_id is not None and s.get(User, user_id) is None:
            raise UserNotFound(f"no user with id {user_id}")
    with open_source(path, inst.settings.work_dir) as source:
        report = ImportReport(source.source)
        with inst.sessions() as s:
            if source.kind == "ecotaxa_bundle":
                plan = plan_bundle(source, report)
            else:
                plan = plan_class_folders(s, project_id, source, user_id=user_id)
                if not create_missing_taxa:
                    _fail_fast_on_unknown_categories(s, plan)
        n_files = len({im.src for im in plan.images})
        total = n_files + plan.n_images

        def checked(done: int) -> None:
            if progress is not None:
                progress(done, total)

        def stored(done: int) -> None:
            if progress is not None:
                progress(n_files + done, total)

        check_images(plan.images, report, progress=checked)
        with inst.sessions() as s:
            check_against_project(s, project_id, plan, report, inst.features)
        report.raise_if_any()
        taxa_created = write_plan(inst, project_id, plan, create_missing_taxa=create_missing_taxa,
                                  progress=stored)
    return _result(project_id, plan, taxa_created, time.perf_counter() - started)


def _fail_fast_on_unknown_categories(s, plan: ImportPlan) -> None:
    """Class folders: say which folders match no taxon before decoding every image."""
    resolver = CategoryResolver(create_missing=False)
    folders = {o.label: Path(o.rel).parent.as_posix() for o in reversed(plan.objects)}
    for label, folder in folders.items():
        resolver.add(label, f"folder {folder}")
    resolver.resolve(s)


def _result(project_id: int, plan: ImportPlan, taxa_created: list[str],
            seconds: float) -> ImportResult:
    objs = plan.objects
    return ImportResult(
        project_id=project_id, source=plan.source, kind=plan.kind, n_objects=len(objs),
        n_images=plan.n_images,
        n_samples=len({o.sample for o in objs if o.sample}),
        n_acquisitions=len({o.acquisition for o in objs if o.acquisition}),
        n_processes=len({o.process for o in objs if o.process}),
        tsv_files=list(plan.tsv_files), taxa_created=list(taxa_created),
        seconds=round(seconds, 3))
