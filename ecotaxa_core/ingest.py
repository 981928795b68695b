"""Instrument ingest: import every complete bundle dropped in a watched folder, exactly once.

A drop folder is watched for one project. Its layout::

    <drop>/                      bundles are dropped here: ``*.zip`` files or folders
    <drop>/done/                 imported bundles, renamed ``<UTC stamp>_<name>``
    <drop>/quarantine/           refused bundles ``<stamp>_<name>`` and ``<stamp>_<name>.error.txt``
    <drop>/.ingest/lock          held (``flock``) by the pass working on this folder
    <drop>/.ingest/seen.json     the last look at each bundle not yet taken
    <drop>/.ingest/processing/   the bundle being imported (``<stamp>_<name>``) and its ``.json`` record
    <drop>/.ingest/journal.jsonl one line per bundle taken: imported or quarantined

**Ready.** Names starting with ``.`` or ending with ``.part``, ``.partial``,
``.tmp``, ``.crdownload``, ``.filepart`` or ``~`` are never looked at, so a copy
made under such a name and renamed at the end is safe at once. Otherwise a
bundle is ready when two looks at least ``settle_seconds`` apart see the same
files, sizes, modification and change times (a look per pass is kept in
``seen.json``; a pass that finds a new or changed bundle looks again after the
rest of the wait when that is under a minute, so one pass is usually enough),
or at once when a marker file ``<name>.ready`` (``cast12.zip.ready``, or
``cast12.ready`` for a folder ``cast12/``) sits next to it. With
``require_ready_marker`` only marked bundles are taken. A zip must also open
with a valid central directory (which a half-copied zip lacks); one that stays
unreadable and unchanged for ``abandon_after_seconds`` goes to quarantine. An
empty folder is not a bundle yet.

**Exactly once.** A pass holds the folder's lock for its whole run (a second
pass on the same folder returns at once with ``busy``), then claims each ready
bundle by renaming it into ``.ingest/processing/`` (a rename within one file
system is atomic, so even without the lock only one claimant wins), imports it
(all or nothing, see :func:`~ecotaxa_core.importer.import_path`), records the
result next to it, and renames it into ``done/``, or writes its error report and
renames it into ``quarantine/``. The lock is an ``flock``: it holds between the
processes of one machine; a folder shared by several machines must be watched
from one of them.

**Crash recovery.** A pass first finishes what a dead pass left in
``processing/`` (the lock guarantees its owner is gone): a bundle whose record
holds a result, or whose claimed path is the source of a committed
``import_runs`` row (the importer adds that row in the import's own
transaction), goes to ``done/`` without importing again; any other is imported
again, which is safe since a failed import leaves nothing behind. Should an
importer record no such row, a pass killed between the commit and the record of
its result (milliseconds) leaves a bundle whose re-import finds its objects
already there: it is skipped or refused, never imported twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import traceback
import zipfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlalchemy import select

from ecotaxa_core.db.models import ImportRun
from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.importer import import_path
from ecotaxa_core.instance import Instance
from ecotaxa_core.projects import get_project

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None
    import msvcrt

__all__ = ["DropFolder", "BundleLook", "BundleOutcome", "IngestSummary", "look_at_drop_folder",
           "ingest_drop_folder", "UnreadableBundle", "ABANDON_AFTER_SECONDS",
           "READY_SUFFIX"]

READY_SUFFIX = ".ready"
ABANDON_AFTER_SECONDS = 3600.0
_TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".filepart", "~")
_RESERVED = ("done", "quarantine")
_LOOK_AGAIN_MAX_SECONDS = 60.0  # longer settle times are left to the next pass

RunImport = Callable[[Path], dict[str, Any]]


class UnreadableBundle(EcoTaxaError):
    """A dropped zip that never became readable (damaged, or a copy that died)."""


@dataclass(frozen=True)
class DropFolder:
    """The paths of a drop folder (see the module docstring).

    >>> DropFolder.at("/data/drop").processing.as_posix()
    '/data/drop/.ingest/processing'
    """

    root: Path
    done: Path
    quarantine: Path
    state: Path
    processing: Path
    lock: Path
    seen: Path
    journal: Path

    @classmethod
    def at(cls, root: str | Path) -> "DropFolder":
        root = Path(root)
        state = root / ".ingest"
        return cls(root, root / "done", root / "quarantine", state, state / "processing",
                   state / "lock", state / "seen.json", state / "journal.jsonl")

    def ensure(self) -> None:
        for d in (self.done, self.quarantine, self.processing):
            d.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class BundleLook:
    """One look at a bundle in the drop folder and whether it may be taken now."""

    name: str
    path: Path
    kind: str  # "zip" | "folder"
    signature: str
    n_files: int
    n_bytes: int
    marked: bool
    quiet_seconds: float  # since when it has looked the same
    ready: bool = False
    reason: str = ""  # why it is not ready
    settling: bool = False  # not ready only because it changed less than settle_seconds ago
    abandoned: bool = False  # an unreadable zip unchanged for too long


@dataclass
class BundleOutcome:
    """What a pass did with one bundle."""

    name: str
    status: str  # "imported" | "already_imported" | "quarantined" | "not_ready" | "gone"
    path: str  # where the bundle is now
    reason: str = ""
    result: dict[str, Any] | None = None
    recovered: bool = False  # found in processing/, left there by a dead pass

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IngestSummary:
    """A pass over a drop folder; ``busy`` when another pass held the folder."""

    drop_folder: str
    project_id: int
    busy: bool = False
    bundles: list[BundleOutcome] = field(default_factory=list)

    def names(self, *statuses: str) -> list[str]:
        return [b.name for b in self.bundles if b.status in statuses]

    def to_dict(self) -> dict[str, Any]:
        imported = [b for b in self.bundles if b.status in ("imported", "already_imported")]
        return {
            "drop_folder": self.drop_folder, "project_id": self.project_id, "busy": self.busy,
            "imported": [b.name for b in imported],
            "quarantined": self.names("quarantined"),
            "not_ready": self.names("not_ready"),
            "n_objects": sum((b.result or {}).get("n_objects", 0) for b in imported),
            "bundles": [b.to_dict() for b in self.bundles],
        }


# -- looking at the drop folder -----------------------------------------------------------
def _ignored(name: str) -> bool:
    low = name.lower()
    return name.startswith(".") or low.endswith(_TEMP_SUFFIXES) or low.endswith(READY_SUFFIX)


def _signature(path: Path) -> tuple[str, int, int]:
    """A digest of the names, sizes, modification and change times of every file."""
    entries = [path] if path.is_file() else sorted(path.rglob("*"))
    digest = hashlib.sha1()
    n_files = n_bytes = 0
    for p in entries:
        st = p.lstat()
        rel = p.name if p == path else p.relative_to(path).as_posix()
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n".encode())
        if not p.is_dir():
            n_files += 1
            n_bytes += st.st_size
    return digest.hexdigest(), n_files, n_bytes


def _zip_problem(path: Path) -> str:
    try:
        with zipfile.ZipFile(path):
            return ""
    except (zipfile.BadZipFile, OSError) as e:
        return f"not a complete zip (no valid central directory: {e})"


def _load_seen(drop: DropFolder) -> dict[str, dict[str, Any]]:
    try:
        return json.loads(drop.seen.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _write_json(path: Path, data: Any) -> None:
    """Write through a temporary file and an atomic rename: never a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def look_at_drop_folder(drop_folder: str | Path, *, settle_seconds: float,
                        require_ready_marker: bool = False,
                        abandon_after_seconds: float = ABANDON_AFTER_SECONDS,
                        now: float | None = None, remember: bool = False) -> list[BundleLook]:
    """Look at every bundle in ``drop_folder`` and say which may be taken now.

    Parameters
    ----------
    drop_folder : the watched folder.
    settle_seconds : how long a bundle must stay unchanged, compared with the
        previous look kept in ``.ingest/seen.json``.
    require_ready_marker : take only bundles with a ``<name>.ready`` marker.
    abandon_after_seconds : an unreadable zip unchanged this long is ``abandoned``.
    now : the clock reading of this look (``time.time()`` by default).
    remember : store this look in ``seen.json`` for the next one (the caller
        must hold the folder's lock).
    """
    drop = DropFolder.at(drop_folder)
    now = time.time() if now is None else now
    seen = _load_seen(drop)
    looks, remembered = [], {}
    for p in sorted(drop.root.iterdir()):
        if _ignored(p.name) or p.name in _RESERVED:
            continue
        if p.is_dir():
            kind = "folder"
        elif p.is_file() and p.suffix.lower() == ".zip":
            kind = "zip"
        else:
            continue
        try:
            sig, n_files, n_bytes = _signature(p)
        except FileNotFoundError:  # moved away while we looked
            continue
        except OSError as e:
            looks.append(BundleLook(p.name, p, kind, "", 0, 0, False, 0.0,
                                    reason=f"cannot be read ({e})"))
            continue
        marked = p.with_name(p.name + READY_SUFFIX).exists()
        prev = seen.get(p.name)
        since = prev["since"] if prev and prev.get("signature") == sig else now
        remembered[p.name] = {"signature": sig, "since": since}
        quiet = now - since
        reason, settling, abandoned = "", False, False
        if require_ready_marker and not marked:
            reason = f"waiting for its marker {p.name + READY_SUFFIX}"
        elif n_files == 0:
            reason = "empty folder"
        elif not marked and quiet < settle_seconds:
            settling = True
            reason = ("new or changed since the last look: unchanged for "
                      f"{quiet:.1f} s of the {settle_seconds:g} s required")
        elif kind == "zip" and (reason := _zip_problem(p)):
            abandoned = quiet >= abandon_after_seconds
        looks.append(BundleLook(p.name, p, kind, sig, n_files, n_bytes, marked, quiet,
                                ready=not reason, reason=reason, settling=settling,
                                abandoned=abandoned))
    if remember:
        drop.state.mkdir(parents=True, exist_ok=True)
        _write_json(drop.seen, remembered)
    return looks


# -- the pass -------------------------------------------------------------------------------
@contextmanager
def _folder_lock(drop: DropFolder) -> Iterator[bool]:
    """Hold the folder's lock; yields False when another pass holds it (never waits).

    ``flock`` locks belong to one open file, so two threads conflict as two
    processes do, and the system releases the lock of a killed process.
    """
    drop.state.mkdir(parents=True, exist_ok=True)
    fd = os.open(drop.lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:  # pragma: no cover - Windows
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode())
        yield True
    finally:
        os.close(fd)


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _free_name(drop: DropFolder, name: str) -> str:
    """``<stamp>_<name>`` (``<stamp>-<n>_<name>`` if taken) in processing/, done/, quarantine/."""
    stamp = _stamp()
    candidate, n = f"{stamp}_{name}", 1
    while any((d / candidate).exists() for d in (drop.processing, drop.done, drop.quarantine)):
        n += 1
        candidate = f"{stamp}-{n}_{name}"
    return candidate


def _record_path(bundle: Path) -> Path:
    return bundle.with_name(bundle.name + ".json")


def _original_name(claimed: str) -> str:
    return claimed.split("_", 1)[1] if "_" in claimed else claimed


def _journal(drop: DropFolder, outcome: BundleOutcome, project_id: int) -> None:
    line = {"at": datetime.now(timezone.utc).isoformat(), "project_id": project_id,
            **{k: v for k, v in outcome.to_dict().items() if k != "result"}}
    line["reason"] = outcome.reason.split("\n", 1)[0]  # the full report is next to the bundle
    if outcome.result:
        line["n_objects"] = outcome.result.get("n_objects")
    with drop.journal.open("a", encoding="utf-8") as f:
        f.write(json.dumps(line, default=str) + "\n")


def _claim(drop: DropFolder, look: BundleLook, project_id: int) -> Path | None:
    """Rename the bundle into processing/; None when someone else took it first."""
    target = drop.processing / _free_name(drop, look.name)
    try:
        os.rename(look.path, target)
    except FileNotFoundError:
        return None
    look.path.with_name(look.name + READY_SUFFIX).unlink(missing_ok=True)
    _write_json(_record_path(target), {
        "name": look.name, "project_id": project_id, "claimed_at": datetime.now(timezone.utc),
        "claimed_by": f"{socket.gethostname()} pid {os.getpid()}", "result": None})
    return target


def _committed_run(inst: Instance, project_id: int, bundle: Path) -> dict[str, Any] | None:
    """The summary of a committed import whose source is this claimed path, if any."""
    sources = {str(bundle), str(bundle.resolve())}
    with inst.sessions() as s:
        run = s.scalars(select(ImportRun).where(
            ImportRun.project_id == project_id, ImportRun.source.in_(sources),
            ImportRun.committed_at.is_not(None))).first()
        return dict(run.summary or {}, import_run_id=run.id) if run is not None else None


def _error_report(drop: DropFolder, bundle: Path, name: str, project_id: int,
                  exc: BaseException) -> str:
    lines = [f"Bundle: {name}", f"Drop folder: {drop.root}", f"Project: {project_id}",
             f"Moved to: {drop.quarantine / bundle.name} (paths below name it while it was "
             f"imported, as {bundle})",
             f"Refused at: {datetime.now(timezone.utc).isoformat()}",
             f"Error: {type(exc).__name__}", "", str(exc)]
    if not isinstance(exc, EcoTaxaError):  # not a problem of the input: show where it broke
        lines += ["", "".join(traceback.format_exception(exc))]
    lines += ["", "Nothing of this bundle was imported. To try again, fix it and move it back",
              "into the drop folder (the date prefix may stay), then delete this report."]
    return "\n".join(lines) + "\n"


def _finish(drop: DropFolder, bundle: Path, project_id: int, outcome: BundleOutcome) -> None:
    dest = (drop.done if outcome.status in ("imported", "already_imported")
            else drop.quarantine) / bundle.name
    os.rename(bundle, dest)
    outcome.path = str(dest)
    _journal(drop, outcome, project_id)
    _record_path(bundle).unlink(missing_ok=True)


def _quarantine(drop: DropFolder, bundle: Path, name: str, project_id: int,
                exc: BaseException, recovered: bool = False) -> BundleOutcome:
    # The report goes first: a bundle is never in quarantine without it.
    (drop.quarantine / f"{bundle.name}.error.txt").write_text(
        _error_report(drop, bundle, name, project_id, exc), encoding="utf-8")
    outcome = BundleOutcome(name, "quarantined", str(bundle),
                            reason=f"{type(exc).__name__}: {exc}", recovered=recovered)
    _finish(drop, bundle, project_id, outcome)
    return outcome


def _import_claimed(inst: Instance, drop: DropFolder, bundle: Path, project_id: int,
                    run_import: RunImport, recovered: bool = False) -> BundleOutcome:
    record_path = _record_path(bundle)
    try:
        record = json.loads(record_path.read_text())
    except (FileNotFoundError, ValueError):
        record = {"name": _original_name(bundle.name), "project_id": project_id}
    name = record.get("name") or _original_name(bundle.name)
    if recovered:
        result = record.get("result") or _committed_run(inst, project_id, bundle)
        if result is not None:
            outcome = BundleOutcome(name, "already_imported", str(bundle), result=result,
                                    reason="imported by a pass that died before moving it",
                                    recovered=True)
            _finish(drop, bundle, project_id, outcome)
            return outcome
    try:
        result = run_import(bundle)
    except Exception as exc:  # every failure is reported in quarantine; BaseException stops
        return _quarantine(drop, bundle, name, project_id, exc, recovered)
    record["result"] = result
    _write_json(record_path, record)
    outcome = BundleOutcome(name, "imported", str(bundle), result=result, recovered=recovered)
    _finish(drop, bundle, project_id, outcome)
    return outcome


def _leftovers(drop: DropFolder) -> list[Path]:
    """Bundles a dead pass left in processing/; stray records are removed."""
    bundles = []
    for p in sorted(drop.processing.iterdir()):
        if p.name.startswith("."):
            continue
        if p.suffix == ".json" and p.is_file():
            if not p.with_suffix("").exists():
                p.unlink(missing_ok=True)
            continue
        bundles.append(p)
    return bundles


def ingest_drop_folder(inst: Instance, drop_folder: str | Path, project_id: int, *,
                       user_id: int | None, create_missing_taxa: bool = False,
                       create_missing_users: bool = False,
                       settle_seconds: float = 10.0, require_ready_marker: bool = False,
                       abandon_after_seconds: float = ABANDON_AFTER_SECONDS,
                       run_import: RunImport | None = None, look_again: bool = True,
                       clock: Callable[[], float] = time.time,
                       sleep: Callable[[float], None] = time.sleep) -> IngestSummary:
    """One pass: import every ready bundle of ``drop_folder`` into ``project_id``, once.

    Parameters
    ----------
    inst : the instance to import into.
    drop_folder : the watched folder (created with its sub-folders if missing).
    project_id : the destination project; checked before anything is taken.
    user_id : the importing user.
    create_missing_taxa, create_missing_users : passed to
        :func:`~ecotaxa_core.importer.import_path`.
    settle_seconds : how long a bundle without marker must stay unchanged.
    require_ready_marker : take only bundles with a ``<name>.ready`` marker.
    abandon_after_seconds : when an unreadable zip goes to quarantine.
    run_import : imports one claimed bundle and returns its JSON-able result;
        by default :func:`~ecotaxa_core.importer.import_path` with the options above.
        A flow passes one that records a job and logs progress.
    look_again : when bundles are new or changed, wait the rest of the settle
        time (if under a minute) and look again in this pass instead of leaving
        them to the next.
    clock, sleep : the time source and the wait (tests replace them).

    Returns
    -------
    IngestSummary : one :class:`BundleOutcome` per bundle seen (``busy`` and no
        bundle when another pass holds the folder).

    Raises
    ------
    ProjectNotFound : before anything is taken.
    """
    drop = DropFolder.at(Path(drop_folder).absolute())
    with inst.sessions() as s:
        get_project(s, project_id)
    if run_import is None:
        def run_import(path: Path) -> dict[str, Any]:
            return import_path(inst, project_id, path, user_id=user_id,
                               create_missing_taxa=create_missing_taxa,
                               create_missing_users=create_missing_users).to_dict()
    drop.ensure()
    summary = IngestSummary(str(drop.root), project_id)
    options = dict(settle_seconds=settle_seconds, require_ready_marker=require_ready_marker,
                   abandon_after_seconds=abandon_after_seconds)
    with _folder_lock(drop) as held:
        if not held:
            summary.busy = True
            return summary
        for bundle in _leftovers(drop):
            summary.bundles.append(
                _import_claimed(inst, drop, bundle, project_id, run_import, recovered=True))
        looks = look_at_drop_folder(drop.root, now=clock(), remember=True, **options)
        waits = [settle_seconds - lk.quiet_seconds for lk in looks if lk.settling]
        if look_again and waits and max(waits) <= _LOOK_AGAIN_MAX_SECONDS:
            sleep(max(waits))
            looks = look_at_drop_folder(drop.root, now=clock(), remember=True, **options)
        for look in looks:
            summary.bundles.append(_take(inst, drop, look, project_id, run_import))
    return summary


def _take(inst: Instance, drop: DropFolder, look: BundleLook, project_id: int,
          run_import: RunImport) -> BundleOutcome:
    if not look.ready and not look.abandoned:
        return BundleOutcome(look.name, "not_ready", str(look.path), reason=look.reason)
    try:  # a last look: earlier imports of this pass may have taken long
        changed = _signature(look.path)[0] != look.signature
    except FileNotFoundError:
        changed = False  # gone: the claim says so
    if changed:
        return BundleOutcome(look.name, "not_ready", str(look.path),
                             reason="changed while other bundles were imported")
    bundle = _claim(drop, look, project_id)
    if bundle is None:
        return BundleOutcome(look.name, "gone", str(look.path), reason="taken by another pass")
    if look.abandoned:
        return _quarantine(drop, bundle, look.name, project_id, UnreadableBundle(
            f"{look.name}: {look.reason}; unchanged for {look.quiet_seconds:.0f} s, so it is "
            "taken as damaged rather than still being copied"))
    return _import_claimed(inst, drop, bundle, project_id, run_import)
