"""``ecotaxa taxonomy ...``: the category tree."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import typer

from ecotaxa_cli.common import JsonOpt, UserOpt, load_settings, run_command, run_flow, taxonomy_app


@taxonomy_app.command("export")
def taxonomy_export(path: Path = typer.Argument(..., help="TSV file to write."),
                    as_json: bool = JsonOpt) -> None:
    """Write the whole tree (ids, parents, names, ranks, AphiaIDs) to a portable file."""
    from flows.taxonomy import export_taxonomy_flow

    run_flow(as_json, lambda: export_taxonomy_flow(path=str(path.resolve())),
          lambda r: f"{r['n_taxa']} taxa written to {r['path']}")


@taxonomy_app.command("import")
def taxonomy_import(path: Path = typer.Argument(..., exists=True, help="Portable taxonomy file."),
                    dry_run: bool = typer.Option(False, "--dry-run", help="Check only."),
                    user: Optional[str] = UserOpt, as_json: bool = JsonOpt) -> None:
    """Load a portable taxonomy file, keeping its ids (administrators only)."""
    from flows.taxonomy import import_taxonomy_flow

    run_flow(as_json, lambda: import_taxonomy_flow(path=str(path.resolve()), user_email=user,
                                                dry_run=dry_run),
          lambda r: ("checked: " if r["dry_run"] else "")
          + f"{r['created']} created, {r['updated']} updated, {r['unchanged']} unchanged")


def _taxon_edit(as_json: bool, user: Optional[str], edit: Callable[..., Any]) -> None:
    from ecotaxa_core.instance import Instance
    from ecotaxa_core.users import user_for_cli

    def go() -> dict[str, Any]:
        inst = Instance.open(load_settings())
        try:
            with inst.sessions.begin() as s:
                return edit(s, user_for_cli(s, user).id).to_dict()
        finally:
            inst.close()

    run_command(as_json, go, lambda r: f"taxon {r['taxon_id']}: {r['display_name']}"
         + (f" ({r['objects_moved']} objects moved)" if r.get("objects_moved") else ""))


@taxonomy_app.command("rename")
def taxonomy_rename(taxon_id: int, new_name: str, user: Optional[str] = UserOpt,
                    as_json: bool = JsonOpt) -> None:
    """Rename a taxon; its objects and history keep pointing at it."""
    from ecotaxa_core.taxonomy_edit import rename_taxon

    _taxon_edit(as_json, user, lambda s, uid: rename_taxon(s, taxon_id, new_name, uid))


@taxonomy_app.command("merge")
def taxonomy_merge(source_id: int, target_id: int, user: Optional[str] = UserOpt,
                   as_json: bool = JsonOpt) -> None:
    """Move every object of SOURCE to TARGET (history kept) and deprecate SOURCE."""
    from flows.taxonomy import merge_taxa_flow

    run_flow(as_json, lambda: merge_taxa_flow(source_id=source_id, target_id=target_id,
                                           user_email=user),
          lambda r: f"taxon {r['taxon_id']} merged: {r['objects_moved']} objects moved")


@taxonomy_app.command("deprecate")
def taxonomy_deprecate(taxon_id: int, user: Optional[str] = UserOpt,
                       as_json: bool = JsonOpt) -> None:
    """Stop offering a taxon; objects keep it."""
    from ecotaxa_core.taxonomy_edit import deprecate_taxon

    _taxon_edit(as_json, user, lambda s, uid: deprecate_taxon(s, taxon_id, uid))


@taxonomy_app.command("restore")
def taxonomy_restore(taxon_id: int, user: Optional[str] = UserOpt,
                     as_json: bool = JsonOpt) -> None:
    """Offer a deprecated taxon again."""
    from ecotaxa_core.taxonomy_edit import restore_taxon

    _taxon_edit(as_json, user, lambda s, uid: restore_taxon(s, taxon_id, uid))
