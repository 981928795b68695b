"""Importing a folder or zip into a project: EcoTaxa TSV bundles or class folders.

:func:`import_path` finds what the path holds (:mod:`~ecotaxa_core.import_sources`),
compares it with what the project holds (:mod:`~ecotaxa_core.reimport`: files
already loaded and objects already present are skipped, or updated in an update
mode), checks everything before writing anything (every TSV line, every image
to store fully decoded, the project's columns, every category and annotator
name) and raises :class:`~ecotaxa_core.tsv.TsvFormatError` listing every problem
with its file, line and column, or :class:`~ecotaxa_core.errors.UnmatchedNames`
(or one of its halves) listing every unmatched name with where it appears. Then
it writes atomically (:mod:`~ecotaxa_core.import_writer`), with a journal that
makes even a killed import leave nothing behind
(:mod:`~ecotaxa_core.import_journal`).

Bundles: see :mod:`~ecotaxa_core.bundle_import`. Class folders: see
:mod:`~ecotaxa_core.class_folder_import`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ecotaxa_core.bundle_import import plan_bundle
from ecotaxa_core.class_folder_import import plan_class_folders
from ecotaxa_core.db.models import User, utcnow
from ecotaxa_core.errors import EcoTaxaError, UserNotFound
from ecotaxa_core.import_checks import check_against_project
from ecotaxa_core.import_features import backup_path, plan_features
from ecotaxa_core.import_images import ImageStager, StagingDirs
from ecotaxa_core.import_journal import (ImportJournal, project_lock, recover_project,
                                         undo_or_finish)
from ecotaxa_core.import_maps import load_taxa_map, load_users_map
from ecotaxa_core.import_names import NameAnswers, check_names
from ecotaxa_core.import_plan import ImportPlan
from ecotaxa_core.import_sources import ImportLimits, ImportSource, open_source
from ecotaxa_core.import_writer import WriteOutcome, WriteRequest, write_delta
from ecotaxa_core.instance import Instance
from ecotaxa_core.projects import get_project
from ecotaxa_core.file_digest import file_sha256
from ecotaxa_core.reimport import ImportDelta, check_mode, loaded_files, plan_delta
from ecotaxa_core.tsv.issues import ImportReport

__all__ = ["ImportResult", "import_path"]

_MAX_LISTED = 100


@dataclass(frozen=True)
class ImportResult:
    """What an import wrote.

    ``n_objects`` and ``n_images`` count the objects and images added (images
    include those added to objects already present); ``n_samples`` ... count the
    parents the added objects use.
    """

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
    mode: str = "add"
    run_id: str | None = None  # None when nothing was read (every file already loaded)
    files_skipped: list[str] = field(default_factory=list)
    n_objects_skipped: int = 0
    n_objects_updated: int = 0
    n_objects_not_found: int = 0
    not_found: list[str] = field(default_factory=list)  # first ones only
    n_parents_updated: int = 0
    n_classifications_changed: int = 0
    users_created: list[str] = field(default_factory=list)
    # The project's pixel size, when this import set it from its columns (µm).
    pixel_size_um_set: float | None = None
    notes: list[str] = field(default_factory=list)  # what the user should know

    def to_dict(self) -> dict:
        return asdict(self)


def import_path(inst: Instance, project_id: int, path: str | Path, *, user_id: int | None,
                create_missing_taxa: bool = False,
                progress: Callable[[int, int], None] | None = None,
                taxa_map: Path | None = None, users_map: Path | None = None,
                create_missing_users: bool = False, mode: str = "add") -> ImportResult:
    """Import the EcoTaxa bundle or class folders at ``path`` (a folder or a .zip).

    Parameters
    ----------
    inst : the instance to write into.
    project_id : the destination project.
    path : a folder or a zip holding ``ecotaxa*.tsv`` files and images, or class
        folders ``<category>/<image>`` (possibly under one wrapping folder).
    user_id : the importing user; class-folder objects are validated by them, and
        classification changes of ``update_all`` are recorded as theirs.
    create_missing_taxa : create categories that match no taxon (under the
        parent their label names) instead of stopping.
    progress : called now and then with (image files done, image files so far): each
        file checked and staged (copied, with its thumbnail); the total grows while
        the TSV files are read.
    taxa_map : a map file (see :mod:`~ecotaxa_core.import_maps`): category names
        of the source -> taxa of this instance (id or display name).
    users_map : a map file: annotator names or e-mails -> e-mails of users.
    create_missing_users : create the annotators that match no user, without a
        password (they cannot sign in), instead of stopping.
    mode : "add" (skip files already loaded and objects already present, add
        new images of known objects), "update_metadata" or "update_all" (see
        :mod:`~ecotaxa_core.reimport`).

    Raises
    ------
    TsvFormatError : any problem of the source, all of them in its report
        (:class:`~ecotaxa_core.import_maps.MapFileError` for a map file).
    UnknownCategories, UnknownAnnotators, UnmatchedNames : names matching nothing.
    ProjectNotFound, UserNotFound, EcoTaxaError (an unknown mode).
    """
    started, started_at = time.perf_counter(), utcnow()
    check_mode(mode)
    with inst.sessions() as s:
        get_project(s, project_id)
        if user_id is not None and s.get(User, user_id) is None:
            raise UserNotFound(f"no user with id {user_id}")
        answers = NameAnswers(
            taxa_map=load_taxa_map(s, Path(taxa_map)) if taxa_map is not None else {},
            users_map=load_users_map(s, Path(users_map)) if users_map is not None else {},
            create_missing_taxa=create_missing_taxa, create_missing_users=create_missing_users)
    work_dir = inst.settings.work_dir
    with project_lock(work_dir, project_id):
        recover_project(inst, project_id)
        with open_source(path, work_dir, limits=import_limits(inst.settings)) as source:
            run = _Run(inst, project_id, source, user_id, answers, mode, progress, started,
                       started_at)
            return run.execute(_scratch_names(source, Path(path), work_dir))


def import_limits(settings) -> ImportLimits:
    """The hostile-input bounds the instance's settings give."""
    return ImportLimits(
        max_unzipped_bytes=int(settings.import_max_unzipped_gib * 2**30),
        max_compression_ratio=settings.import_max_compression_ratio,
        max_zip_entries=settings.import_max_zip_entries,
        max_image_pixels=int(settings.import_max_image_megapixels * 1_000_000))


def _scratch_names(source: ImportSource, path: Path, work_dir: Path) -> list[str]:
    """Folders directly under ``work_dir`` that the source's zips were extracted into.

    Never a folder holding ``path`` itself (a user's folder that happens to lie there).
    """
    base, given = work_dir.resolve(), Path(path).resolve()
    names = []
    for p in [source.root] + [f.base for f in source.tsv_files]:
        try:
            rel = Path(p).resolve().relative_to(base)
        except ValueError:
            continue
        if (rel.parts and rel.parts[0].startswith("import_") and rel.parts[0] not in names
                and not given.is_relative_to(base / rel.parts[0])):
            names.append(rel.parts[0])
    return names


class _Run:
    """One import run, from the opened source to the committed transaction."""

    def __init__(self, inst: Instance, project_id: int, source: ImportSource,
                 user_id: int | None, answers: NameAnswers, mode: str,
                 progress: Callable[[int, int], None] | None, started: float, started_at):
        self.inst, self.project_id, self.source = inst, project_id, source
        self.user_id, self.answers, self.mode = user_id, answers, mode
        self.progress, self.started, self.started_at = progress, started, started_at
        self.run_id = str(uuid.uuid4())
        self.staging = StagingDirs.for_run(inst.vault.staging_root(inst.settings.work_dir),
                                           self.run_id, inst.settings.work_dir)
        self.files_skipped: list[str] = []
        self.imported_files: list[tuple[str, str, int]] = []

    def execute(self, scratch: list[str]) -> ImportResult:
        """Check and write, with a journal naming everything a failure must undo."""
        journal = ImportJournal.create(self.inst.settings.work_dir, self.run_id,
                                       self.project_id, scratch=scratch,
                                       vault_dirs=StagingDirs.vault_folders(self.run_id))
        try:
            result = self._checked_and_written(journal)
        except BaseException as failure:
            try:
                undo_or_finish(self.inst, journal)
            except Exception as e:  # the journal stays: recovery will finish the job
                failure.add_note(f"undoing import run {self.run_id} failed as well ({e}); "
                                 "it is undone at the next import of the project, or by the "
                                 "import recovery")
            raise
        undo_or_finish(self.inst, journal)
        return result

    def _checked_and_written(self, journal: ImportJournal) -> ImportResult:
        with ImageStager(self.staging, max_pixels=self.source.limits.max_image_pixels,
                         progress=self.progress) as stager:
            return self._staged_and_written(journal, stager)

    def _staged_and_written(self, journal: ImportJournal, stager: ImageStager) -> ImportResult:
        inst, source = self.inst, self.source
        report = ImportReport(source.source)
        with inst.sessions() as s:
            plan = self._plan(s, report, stager)
            if plan is None:  # every file was loaded before
                return self._result(ImportPlan(source=source.source, kind=source.kind),
                                    ImportDelta(mode=self.mode), WriteOutcome(), written=False)
            try:
                return self._checked_plan_written(s, journal, stager, plan, report)
            finally:
                plan.close()

    def _checked_plan_written(self, s, journal: ImportJournal, stager: ImageStager,
                              plan: ImportPlan, report: ImportReport) -> ImportResult:
        inst = self.inst
        delta = plan_delta(s, self.project_id, plan, self.mode, report)
        check_against_project(s, self.project_id, plan, delta.names, delta.classified, report)
        creates_names = False
        if not report.n_issues:
            creates_names = check_names(s, delta.names, delta.classified, self.answers, report)
        s.rollback()  # the checks are done: no read transaction stays open while writing
        all_handed = self.mode == "add" and plan.kind == "ecotaxa_bundle"  # while read

        def images_ready() -> None:
            stager.finish(delta.images_to_store, report, all_handed=all_handed)
            report.raise_if_any()

        # PostgreSQL writes the object and feature rows while the last images are
        # staged: a long transaction blocks nobody there (SQLite has one writer), unless
        # it creates names: it then holds a lock that other imports creating names need,
        # and they would wait for its images as well.
        overlap = (inst.engine.dialect.name == "postgresql" and all_handed
                   and not creates_names and not report.n_issues)
        if not overlap:
            images_ready()

        features = plan_features(inst.features, self.project_id, plan, delta)
        backup = None
        if features.rewrite:
            backup = backup_path(inst.features, self.project_id, self.run_id)
        journal.update(features={"tsv": {"n_rows": features.n_rows_before, "backup": backup}})
        request = WriteRequest(
            project_id=self.project_id, plan=plan, delta=delta, answers=self.answers,
            features=features, user_id=self.user_id, run_id=self.run_id, journal=journal,
            stager=stager, creates_names=creates_names, started_at=self.started_at, imported_files=self.imported_files,
            summarize=lambda outcome: self._result(plan, delta, outcome).to_dict(),
            images_ready=images_ready if overlap else None)
        outcome = write_delta(inst, request)
        return self._result(plan, delta, outcome)

    def _plan(self, s, report: ImportReport, stager: ImageStager) -> ImportPlan | None:
        source = self.source
        if source.kind != "ecotaxa_bundle":
            if self.mode != "add":
                raise EcoTaxaError(f"mode {self.mode!r} needs an EcoTaxa bundle (ecotaxa*.tsv "
                                   f"files); {source.source} holds class folders")
            return plan_class_folders(s, self.project_id, source, user_id=self.user_id,
                                      spill_dir=self.inst.settings.work_dir)
        digests = {f.rel: file_sha256(f.path) for f in source.tsv_files}
        to_read = list(source.tsv_files)
        if self.mode == "add":
            loaded = loaded_files(s, self.project_id, digests.values())
            to_read = [f for f in source.tsv_files if digests[f.rel] not in loaded]
            self.files_skipped = [f.rel for f in source.tsv_files if digests[f.rel] in loaded]
            if not to_read:
                return None
        # A new object's images are staged while the files are read (an update stores
        # few images, and only those of objects already present).
        plan = plan_bundle(source, report, to_read,
                           on_image=stager.submit if self.mode == "add" else None,
                           spill_dir=self.inst.settings.work_dir)
        if self.mode == "add":  # update runs do not make a file "loaded"
            self.imported_files = [(rel, digests[rel], plan.tsv_rows.get(rel, 0))
                                   for rel in plan.tsv_files]
        return plan

    def _result(self, plan: ImportPlan, delta: ImportDelta, outcome: WriteOutcome,
                written: bool = True) -> ImportResult:
        samples, acquisitions, processes = delta.parents_used if delta.mode == "add" else (
            (), (), ())
        return ImportResult(
            project_id=self.project_id, source=plan.source, kind=plan.kind,
            n_objects=delta.n_new if delta.mode == "add" else 0,
            n_images=delta.n_images_to_store, n_samples=len(samples),
            n_acquisitions=len(acquisitions), n_processes=len(processes),
            tsv_files=list(plan.tsv_files), taxa_created=list(outcome.taxa_created),
            seconds=round(time.perf_counter() - self.started, 3), mode=self.mode,
            run_id=self.run_id if written else None,
            files_skipped=list(self.files_skipped), n_objects_skipped=delta.n_skipped,
            pixel_size_um_set=outcome.pixel_size_um_set, notes=list(outcome.notes),
            n_objects_updated=outcome.updates.n_objects_updated,
            n_objects_not_found=len(delta.not_found), not_found=delta.not_found[:_MAX_LISTED],
            n_parents_updated=outcome.updates.n_parents_updated,
            n_classifications_changed=outcome.updates.n_classifications_changed,
            users_created=list(outcome.users_created))
