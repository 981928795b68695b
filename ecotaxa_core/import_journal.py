"""Imports that leave nothing half done, even when the process is killed.

An import writes to three stores: vault files, feature rows, database rows.
Only the database has transactions, so the ``import_runs`` row, inserted in
the same transaction as the imported rows, is the commit marker, and a
*journal* on disk says what else the run is about to write:

1. before writing anything, the import writes its journal (JSON, under
   ``work_dir/import_journals``): run id, project, scratch folders, the run's
   own vault folders (``images/run_<id>``, ``thumbs/run_<id>``: its images go
   there as they are checked), the row count of the feature store it appends
   to (or where a rewrite keeps the old store), and, once the rows have ids,
   the other vault files it will create (copies of a file several images name);
2. then it writes vault files, feature rows, and commits the database
   transaction holding the rows and the ``import_runs`` row;
3. then it deletes the journal.

:func:`recover_interrupted_imports` (run at the start of every import, and
from the command line) finishes what a dead import left: a journal whose run
has no committed row is undone (its vault files and folders removed, the feature store
truncated or put back, scratch folders removed); a committed one only has its
leftovers cleaned. Imports of one project are serialised by a lock file
(``fcntl.flock``, released by the system when a process dies), so a journal
whose project lock can be taken belongs to a dead import; imports of
different projects run at the same time.

Image ids come from the database. PostgreSQL never gives an id twice, but
SQLite may give a rolled-back id again, to another project's import: recovery
therefore keeps a vault file that a committed image row or another journal
names, under a short instance-wide lock that journals take to list their files.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ecotaxa_core.db.models import Image, ImportRun
from ecotaxa_core.durable_files import file_lock, write_json_atomically
from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.import_features import finish_features, undo_features
from ecotaxa_core.instance import Instance

__all__ = ["ImportJournal", "RecoveryReport", "project_lock", "vault_lock",
           "recover_interrupted_imports", "recover_project", "JOURNAL_DIR", "LOCK_DIR"]

JOURNAL_DIR = "import_journals"
LOCK_DIR = "import_locks"


# -- locks ---------------------------------------------------------------------------
def project_lock(work_dir: Path, project_id: int, blocking: bool = True):
    """Context manager holding the import lock of a project; yields whether it got it.

    >>> import tempfile
    >>> work = Path(tempfile.mkdtemp())
    >>> with project_lock(work, 1) as got, project_lock(work, 1, blocking=False) as again:
    ...     got, again
    (True, False)
    """
    return file_lock(Path(work_dir) / LOCK_DIR / f"project_{int(project_id)}.lock", blocking)


def vault_lock(work_dir: Path):
    """Short instance-wide lock: journals listing vault files, recovery deleting them."""
    return file_lock(Path(work_dir) / LOCK_DIR / "vault.lock", True)


# -- journals ------------------------------------------------------------------------
@dataclass
class ImportJournal:
    """The journal file of one import run."""

    path: Path
    data: dict[str, Any]

    @classmethod
    def create(cls, work_dir: Path, run_id: str, project_id: int, **fields: Any) -> "ImportJournal":
        folder = Path(work_dir) / JOURNAL_DIR
        folder.mkdir(parents=True, exist_ok=True)
        data = {"run_id": run_id, "project_id": int(project_id),
                "started_at": datetime.now(timezone.utc).isoformat(), "scratch": [],
                "features": {}, "vault_files": [], **fields}
        journal = cls(folder / f"project_{int(project_id)}_{run_id}.json", data)
        write_json_atomically(journal.path, data)
        return journal

    @classmethod
    def load(cls, path: Path) -> "ImportJournal":
        try:
            return cls(path, json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise EcoTaxaError(f"unreadable import journal {path} ({e})") from e

    @property
    def run_id(self) -> str:
        return self.data["run_id"]

    @property
    def project_id(self) -> int:
        return int(self.data["project_id"])

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        write_json_atomically(self.path, self.data)

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)


def _journals(work_dir: Path, project_id: int | None = None) -> list[Path]:
    folder = Path(work_dir) / JOURNAL_DIR
    if not folder.exists():
        return []
    pattern = "project_*.json" if project_id is None else f"project_{int(project_id)}_*.json"
    return sorted(folder.glob(pattern))


def _project_of(path: Path) -> int:
    return int(path.name.split("_", 2)[1])


# -- recovery ------------------------------------------------------------------------
@dataclass
class RecoveryReport:
    """Runs whose leftovers were undone (never committed), finished (committed), or
    left alone because an import of their project is running (busy)."""

    undone: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    vault_files_removed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recover_interrupted_imports(inst: Instance, project_id: int | None = None) -> RecoveryReport:
    """Undo or finish the imports a dead process left (all projects, or one).

    A project whose import is running now is left alone (reported as busy).
    """
    report = RecoveryReport()
    work_dir = inst.settings.work_dir
    projects = sorted({_project_of(p) for p in _journals(work_dir, project_id)})
    for pid in projects:
        with project_lock(work_dir, pid, blocking=False) as got:
            if not got:
                report.busy += [p.stem.split("_", 2)[2] for p in _journals(work_dir, pid)]
                continue
            recover_project(inst, pid, report)
    return report


def recover_project(inst: Instance, project_id: int,
                    report: RecoveryReport | None = None) -> RecoveryReport:
    """Recover the journals of one project; the caller holds its import lock."""
    report = report if report is not None else RecoveryReport()
    work_dir = inst.settings.work_dir
    for tmp in (Path(work_dir) / JOURNAL_DIR).glob(f"project_{int(project_id)}_*.json.tmp"):
        tmp.unlink(missing_ok=True)
    for path in _journals(work_dir, project_id):
        journal = ImportJournal.load(path)
        undo_or_finish(inst, journal, report)
    return report


def _committed(inst: Instance, run_id: str) -> bool:
    with inst.sessions() as s:
        return s.scalar(select(ImportRun.id).where(ImportRun.id == run_id,
                                                   ImportRun.committed_at.is_not(None))) is not None


def undo_or_finish(inst: Instance, journal: ImportJournal,
                   report: RecoveryReport | None = None) -> bool:
    """Undo a run that did not commit, or clean up after one that did; returns committed.

    The caller holds the project's import lock, and the run's own process is
    done with it (dead, or handling its failure).
    """
    committed = _committed(inst, journal.run_id)
    for feature_set, state in journal.data.get("features", {}).items():
        backup = state.get("backup") or None
        if committed:
            finish_features(inst.features, backup)
        else:
            undo_features(inst.features, journal.project_id, int(state.get("n_rows", 0)),
                          backup)
    removed = 0 if committed else _remove_vault_files(inst, journal) + _remove_vault_dirs(
        inst, journal)
    for name in journal.data.get("scratch", []):
        if name and "/" not in name and not name.startswith("."):
            shutil.rmtree(Path(inst.settings.work_dir) / name, ignore_errors=True)
    journal.delete()
    if report is not None:
        (report.finished if committed else report.undone).append(journal.run_id)
        report.vault_files_removed += removed
    return committed


def _remove_vault_dirs(inst: Instance, journal: ImportJournal) -> int:
    """Remove the run's own vault folders (``images/run_<id>`` ...); the files removed."""
    removed = 0
    for rel in journal.data.get("vault_dirs", []):
        parts = rel.split("/")
        if len(parts) != 2 or parts[0] not in ("images", "thumbs") \
                or parts[1] != f"run_{journal.run_id}":
            continue  # never anything else, whatever the journal says
        staged = inst.vault.staging_root(inst.settings.work_dir) / rel
        if inst.vault.is_url and staged.is_dir():  # staged, maybe not all published
            removed += sum(1 for p in staged.rglob("*") if p.is_file())
            shutil.rmtree(staged, ignore_errors=True)
        removed += inst.vault.remove_folder(rel)
    return removed


def _remove_vault_files(inst: Instance, journal: ImportJournal) -> int:
    entries = journal.data.get("vault_files", [])
    if not entries:
        return 0
    removed = 0
    with vault_lock(inst.settings.work_dir):
        # Files another journal names belong to a run still in flight (or to recover later).
        others: set[str] = set()
        for path in _journals(inst.settings.work_dir):
            if path != journal.path and path.exists():
                for _, rel, thumb in ImportJournal.load(path).data.get("vault_files", []):
                    others.update((rel, thumb))
        # Files a committed image row names are someone else's (SQLite reuses rolled-back ids).
        in_use: set[str] = set()
        ids = sorted({int(e[0]) for e in entries})
        with inst.sessions() as s:
            for start in range(0, len(ids), 500):
                for rel, thumb in s.execute(select(Image.file_path, Image.thumb_path).where(
                        Image.id.in_(ids[start:start + 500]))):
                    in_use.update((rel, thumb))
        for _, rel, thumb in entries:
            for name in (rel, thumb):
                if name is None or name in others or name in in_use:
                    continue
                removed += inst.vault.remove(name, name + ".part")
    return removed
