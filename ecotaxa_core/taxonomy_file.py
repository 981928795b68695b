"""The taxonomy tree as a portable file, exported by one instance and imported by another.

A field computer without internet imports the file of the main instance and
gets the same taxa with the same ids, so bundles that name categories by id
mean the same thing on both sides.

The file is UTF-8 text, one taxon per line, tab-separated, with this header
(line 1); empty cells are "none"::

    id  parent_id  name  rank  aphia_id  deprecated  merged_into_id  display_name

``id`` (required, > 0), ``parent_id`` (empty at the root), ``name`` (required,
no ``<``, tab or line break), ``rank`` (free text, e.g. ``species``),
``aphia_id`` (WoRMS AphiaID), ``deprecated`` (``0``/``1``, also
``true``/``false``), ``merged_into_id`` (the taxon a merged one went to) and
``display_name`` (the unique label users see; empty: computed here). The
columns may come in any order; ``id``, ``parent_id`` and ``name`` are
required, unknown columns are refused. An export writes parents before
children (each level by id), so two instances with the same tree write the
same bytes.

Importing keeps the file's ids: a taxon whose id exists here is updated
(renamed, moved ...) to the file's values; a new id is created. The file wins
for the taxa it lists, display names included; taxa that exist only here keep
theirs unless the file makes them wrong (then they are recomputed). Every
problem is reported with its line before anything is written: bad values,
duplicate ids, two taxa with one name under the same parent, unknown parents,
cycles, and a file taxon that exists here under another id (a taxon cannot
have two ids).

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "taxa.tsv"
>>> _ = p.write_text("id\\tparent_id\\tname\\n1\\t\\tBiota\\n2\\t1\\tegg\\n2\\t1\\tlarva\\n")
>>> rows = read_taxonomy_file(p)
Traceback (most recent call last):
...
ecotaxa_core.taxonomy_file.TaxonomyFileError: 1 problem in taxa.tsv:
  taxa.tsv line 4, column id: id 2 is already on line 3
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import insert, select, text, update
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import Taxon
from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.taxonomy_edit import (TaxonNode, expire_taxa, load_tree, lock_taxa,
                                        require_taxonomy_admin, stale_display_names,
                                        taxon_name_problem)
from ecotaxa_core.tsv.issues import ImportReport, TsvFormatError

__all__ = [
    "COLUMNS",
    "TaxonomyRow",
    "TaxonomyImportResult",
    "TaxonomyFileError",
    "read_taxonomy_file",
    "export_taxonomy",
    "import_taxonomy",
]

COLUMNS = ("id", "parent_id", "name", "rank", "aphia_id", "deprecated", "merged_into_id",
           "display_name")
_REQUIRED = ("id", "parent_id", "name")
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"", "0", "false", "no", "n", "f"}
MAX_RANK_LENGTH = 32
MAX_DISPLAY_LENGTH = 512


class TaxonomyFileError(TsvFormatError):
    """A taxonomy file that cannot be imported; ``issues`` lists every problem with its line."""


@dataclass(frozen=True)
class TaxonomyRow:
    """One taxon of a taxonomy file, and the line it is on."""

    line: int
    id: int
    parent_id: int | None
    name: str
    rank: str | None = None
    aphia_id: int | None = None
    deprecated: bool = False
    merged_into_id: int | None = None
    display_name: str | None = None


@dataclass(frozen=True)
class TaxonomyImportResult:
    """Taxa of the file created, updated and already identical; ``relabelled``: other taxa
    whose display name changed because of the file."""

    created: int
    updated: int
    unchanged: int
    relabelled: int = 0
    dry_run: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- export

def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def export_taxonomy(session: Session, path: str | Path) -> int:
    """Write every taxon to ``path`` (parents first); returns how many.

    The file is written beside ``path`` then renamed, so a reader never sees
    half a file.
    """
    path = Path(path)
    rows = {r.id: r for r in session.execute(select(
        Taxon.id, Taxon.parent_id, Taxon.name, Taxon.rank, Taxon.aphia_id, Taxon.deprecated,
        Taxon.merged_into_id, Taxon.display_name))}
    kids: dict[int | None, list[int]] = defaultdict(list)
    for r in rows.values():
        kids[r.parent_id if r.parent_id in rows else None].append(r.id)
    lines = ["\t".join(COLUMNS)]
    todo = sorted(kids[None], reverse=True)
    while todo:  # depth first, children by id: parents always come before their children
        r = rows[todo.pop()]
        cells = [_cell(getattr(r, c)) for c in COLUMNS]
        if any(ch in cell for cell in cells for ch in "\t\r\n"):
            raise EcoTaxaError(f"taxon {r.id} has a tab or a line break in its name or display name; "
                               "rename it before exporting")
        lines.append("\t".join(cells))
        todo.extend(sorted(kids.get(r.id, ()), reverse=True))
    if len(lines) - 1 != len(rows):
        raise EcoTaxaError("the taxonomy has a cycle (a taxon is its own ancestor); cannot export it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="")
    os.replace(tmp, path)
    return len(rows)


# ---------------------------------------------------------------- reading

def _int(report: ImportReport, where: str, line: int, column: str, value: str,
         required: bool = False) -> int | None:
    if value == "":
        if required:
            report.add(where, line, column, value, "missing_value", f"{column} is required")
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        report.add(where, line, column, value, "bad_id", f"{column} must be a positive whole number, "
                                                        f"not {value!r}")
        return None
    return number


def _parse_row(report: ImportReport, where: str, line: int, cells: dict[str, str]) -> TaxonomyRow | None:
    before = report.n_issues
    tid = _int(report, where, line, "id", cells["id"], required=True)
    parent = _int(report, where, line, "parent_id", cells["parent_id"])
    name = cells["name"].strip()
    problem = taxon_name_problem(name)
    if problem:
        report.add(where, line, "name", cells["name"], "bad_name", problem)
    rank = cells.get("rank", "").strip() or None
    if rank is not None and len(rank) > MAX_RANK_LENGTH:
        report.add(where, line, "rank", rank, "bad_rank", f"a rank has at most {MAX_RANK_LENGTH} characters")
    aphia = _int(report, where, line, "aphia_id", cells.get("aphia_id", "").strip())
    flag = cells.get("deprecated", "").strip().lower()
    if flag not in _TRUE | _FALSE:
        report.add(where, line, "deprecated", flag, "bad_flag", "deprecated must be 0 or 1")
    merged = _int(report, where, line, "merged_into_id", cells.get("merged_into_id", "").strip())
    display = cells.get("display_name", "").strip() or None
    if display is not None:
        if len(display) > MAX_DISPLAY_LENGTH:
            report.add(where, line, "display_name", display, "bad_display_name",
                       f"a display name has at most {MAX_DISPLAY_LENGTH} characters")
        elif not problem and not display.lower().startswith(name.lower()):
            report.add(where, line, "display_name", display, "bad_display_name",
                       f"the display name must start with the name {name!r}")
    if tid is not None and tid == parent:
        report.add(where, line, "parent_id", cells["parent_id"], "cycle", "a taxon cannot be its own parent")
    if tid is not None and tid == merged:
        report.add(where, line, "merged_into_id", cells["merged_into_id"], "cycle",
                   "a taxon cannot be merged into itself")
    if report.n_issues > before:
        return None
    return TaxonomyRow(line, tid, parent, name, rank, aphia, flag in _TRUE, merged, display)


def _first_lines(rows: list[TaxonomyRow], key, report: ImportReport, where: str, column: str,
                 what) -> None:
    """Report every row whose ``key`` an earlier row already has."""
    seen: dict = {}
    for r in rows:
        k = key(r)
        if k is None:
            continue
        if k in seen:
            report.add(where, r.line, column, str(getattr(r, column)), "duplicate",
                       f"{what(r)} is already on line {seen[k]}")
        else:
            seen[k] = r.line


def read_taxonomy_file(path: str | Path) -> list[TaxonomyRow]:
    """The rows of a taxonomy file, checked on their own (not against a database).

    Raises :class:`TaxonomyFileError` listing every bad value and every
    duplicate id, (parent, name) pair and display name, with its line.
    """
    path = Path(path)
    where = path.name
    report = ImportReport(str(path.name))
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise EcoTaxaError(f"cannot read the taxonomy file {path}: {exc.strerror}") from exc
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        report.add(where, line, None, None, "bad_encoding", "the file is not UTF-8 text")
        raise TaxonomyFileError(report) from None
    lines = content.split("\n")
    header = [c.strip().lower() for c in lines[0].rstrip("\r").split("\t")]
    for i, col in enumerate(header):
        if col not in COLUMNS:
            report.add(where, 1, col or f"#{i + 1}", col, "unknown_column",
                       f"unknown column {col!r}; the columns are {', '.join(COLUMNS)}")
        elif header.index(col) != i:
            report.add(where, 1, col, col, "duplicate_column", f"column {col!r} appears twice")
    for col in _REQUIRED:
        if col not in header:
            report.add(where, 1, col, None, "missing_column", f"the required column {col!r} is missing")
    if report.n_issues:
        raise TaxonomyFileError(report)
    rows: list[TaxonomyRow] = []
    for number, text_line in enumerate(lines[1:], start=2):
        text_line = text_line.rstrip("\r")
        if not text_line.strip():
            continue
        cells = text_line.split("\t")
        if len(cells) != len(header):
            report.add(where, number, None, None, "bad_line",
                       f"{len(cells)} cells where the header has {len(header)} columns")
            continue
        row = _parse_row(report, where, number, dict(zip(header, cells)))
        if row is not None:
            rows.append(row)
    _first_lines(rows, lambda r: r.id, report, where, "id", lambda r: f"id {r.id}")
    _first_lines(rows, lambda r: (r.parent_id, r.name.lower()), report, where, "name",
                 lambda r: f"taxon {r.name!r} under parent {r.parent_id or 'none (root)'}")
    _first_lines(rows, lambda r: r.display_name.lower() if r.display_name else None, report, where,
                 "display_name", lambda r: f"display name {r.display_name!r}")
    if report.n_issues:
        raise TaxonomyFileError(report)
    return rows


# ---------------------------------------------------------------- import

def _depths(final: dict[int, TaxonNode]) -> tuple[dict[int, int], set[int]]:
    """Depth of each taxon not on or under a cycle, and the taxa on a cycle."""
    depth: dict[int, int] = {}
    on_cycle: set[int] = set()
    lost: set[int] = set()  # on a cycle or under one
    for start in final:
        chain: list[int] = []
        t: int | None = start
        while t is not None and t not in depth and t not in lost and t not in chain:
            chain.append(t)
            t = final[t].parent_id
        if t is not None and t in chain:
            on_cycle.update(chain[chain.index(t):])
        if t is not None and t not in depth:
            lost.update(chain)
            continue
        base = -1 if t is None else depth[t]
        for c in reversed(chain):
            base += 1
            depth[c] = base
    return depth, on_cycle


def _check_against_database(rows: list[TaxonomyRow], db: dict[int, TaxonNode],
                            final: dict[int, TaxonNode], report: ImportReport, where: str) -> None:
    by_id = {r.id: r for r in rows}
    for r in rows:
        if r.parent_id is not None and r.parent_id not in final:
            report.add(where, r.line, "parent_id", str(r.parent_id), "unknown_parent",
                       f"parent {r.parent_id} is neither in the file nor in this instance")
        if r.merged_into_id is not None and r.merged_into_id not in final:
            report.add(where, r.line, "merged_into_id", str(r.merged_into_id), "unknown_taxon",
                       f"taxon {r.merged_into_id} is neither in the file nor in this instance")
    if report.n_issues:
        return
    _, cyclic = _depths(final)
    for t in sorted(cyclic):
        if t in by_id:
            report.add(where, by_id[t].line, "parent_id", str(by_id[t].parent_id), "cycle",
                       f"taxon {t} would be its own ancestor (cycle through taxa "
                       f"{', '.join(map(str, sorted(cyclic)[:10]))})")
    siblings: dict[tuple, list[int]] = defaultdict(list)
    for t, node in final.items():
        siblings[(node.parent_id, node.name.lower())].append(t)
    for ids in siblings.values():
        if len(ids) < 2:
            continue
        here = [t for t in ids if t not in by_id]
        for t in ids:
            if t not in by_id or not here:
                continue
            other = here[0]
            report.add(where, by_id[t].line, "id", str(t), "two_ids",
                       f"taxon {final[t].name!r} (id {t} in the file) already exists here with id "
                       f"{other} ({db[other].display_name!r}); a taxon cannot have two ids: "
                       f"import into an instance without it, or rename it here first")


def _write(session: Session, rows: list[TaxonomyRow], db: dict[int, TaxonNode],
           final: dict[int, TaxonNode], changed: list[TaxonomyRow], relabel: dict[int, str],
           extra_fields: dict[int, tuple]) -> None:
    """Write the checked file: temporary names first, so names may move between taxa."""
    depth, _ = _depths(final)
    new_rows = sorted((r for r in rows if r.id not in db), key=lambda r: (depth[r.id], r.id))
    moving = [r for r in changed if (db[r.id].parent_id, db[r.id].name) != (r.parent_id, r.name)]
    relabelled = {r.id for r in changed if db[r.id].display_name != final[r.id].display_name}
    relabelled |= set(relabel)
    if moving:
        session.execute(update(Taxon), [dict(id=r.id, name=f"\x01{r.id}") for r in moving])
    if relabelled:
        session.execute(update(Taxon), [dict(id=t, display_name=f"\x01relabel {t}") for t in relabelled])
    if new_rows:
        session.execute(insert(Taxon), [
            dict(id=r.id, parent_id=r.parent_id, name=r.name, rank=r.rank, aphia_id=r.aphia_id,
                 deprecated=r.deprecated, merged_into_id=None, display_name=final[r.id].display_name)
            for r in new_rows])
    if changed:
        session.execute(update(Taxon), [
            dict(id=r.id, parent_id=r.parent_id, name=r.name, rank=r.rank, aphia_id=r.aphia_id,
                 deprecated=r.deprecated, display_name=final[r.id].display_name)
            for r in sorted(changed, key=lambda r: (depth[r.id], r.id))])
    merges = [dict(id=r.id, merged_into_id=r.merged_into_id) for r in rows
              if r.merged_into_id != (extra_fields[r.id][2] if r.id in extra_fields else None)]
    if merges:
        session.execute(update(Taxon), merges)
    if relabel:
        session.execute(update(Taxon), [dict(id=t, display_name=lb) for t, lb in relabel.items()])
    if new_rows and session.get_bind().dialect.name == "postgresql":
        # Explicit ids do not move PostgreSQL's sequence: move it past the ids in use.
        session.execute(text("SELECT setval(pg_get_serial_sequence('taxa', 'id'), "
                             "(SELECT max(id) FROM taxa))"))
    expire_taxa(session)


def import_taxonomy(session: Session, path: str | Path, user_id: int,
                    dry_run: bool = False) -> TaxonomyImportResult:
    """Make this instance's taxa those of a taxonomy file, with the same ids.

    Parameters
    ----------
    session : an open session; the caller's transaction commits (or rolls back) the import.
    path : a file written by :func:`export_taxonomy` (or by hand, see the module doc).
    user_id : who imports; must be an administrator.
    dry_run : check everything and count, but write nothing.

    Raises
    ------
    TaxonomyFileError : every problem of the file, each with its line; nothing is written.
    PermissionDenied : ``user_id`` is not an administrator.
    """
    require_taxonomy_admin(session, user_id)
    rows = read_taxonomy_file(path)
    where = Path(path).name
    lock_taxa(session)
    db = load_tree(session)
    extra_fields = {t: (rank, aphia, merged) for t, rank, aphia, merged in session.execute(
        select(Taxon.id, Taxon.rank, Taxon.aphia_id, Taxon.merged_into_id))}
    final = dict(db)
    for r in rows:
        # A file row without display name keeps the one it has here, if the rule still allows it.
        label = r.display_name or (db[r.id].display_name if r.id in db else None)
        final[r.id] = TaxonNode(r.parent_id, r.name, label, r.deprecated, r.merged_into_id)
    report = ImportReport(where)
    _check_against_database(rows, db, final, report, where)
    if report.n_issues:
        raise TaxonomyFileError(report)
    fixed = {r.id for r in rows if r.display_name}
    relabel = stale_display_names(final, final.keys(), fixed)
    for t, lb in relabel.items():
        final[t] = final[t]._replace(display_name=lb)
    file_ids = {r.id for r in rows}
    changed = [r for r in rows if r.id in db and (
        db[r.id][:4] != final[r.id][:4]
        or extra_fields[r.id] != (r.rank, r.aphia_id, r.merged_into_id))]
    result = TaxonomyImportResult(
        created=sum(r.id not in db for r in rows), updated=len(changed),
        unchanged=sum(r.id in db for r in rows) - len(changed),
        relabelled=sum(t not in file_ids for t in relabel), dry_run=dry_run)
    if not dry_run:
        _write(session, rows, db, final, changed, {t: lb for t, lb in relabel.items() if t not in file_ids},
               extra_fields)
    return result
