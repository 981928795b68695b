"""``ecotaxa import``, ``jobs``, ``import-recover`` and ``ingest``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer

from ecotaxa_cli.common import JsonOpt, UserOpt, app, load_settings, run_command, run_flow


class ImportMode(str, Enum):
    add = "add"
    update_metadata = "update_metadata"
    update_all = "update_all"


@app.command("import")
def import_(
    project: int = typer.Argument(..., help="Project id."),
    path: Path = typer.Argument(..., exists=True, help="EcoTaxa bundle (folder or zip) or a "
                                "folder/zip of class sub-folders of images."),
    create_missing_taxa: bool = typer.Option(
        False, "--create-missing-taxa", help="Create unknown categories (under the parent "
        "their label names: 'a<b' or 'a (b)') instead of refusing the import."),
    taxa_map: Optional[Path] = typer.Option(
        None, exists=True, help="Two-column file (name, existing category or id) answering "
        "unknown categories."),
    users_map: Optional[Path] = typer.Option(
        None, exists=True, help="Two-column file (annotator name or e-mail, existing user "
        "e-mail) answering unknown annotators."),
    create_missing_users: bool = typer.Option(
        False, "--create-missing-users", help="Create unknown annotators as users who cannot "
        "sign in, instead of refusing the import."),
    mode: ImportMode = typer.Option(
        ImportMode.add, help="add: new files, objects and images only (files and objects "
        "already loaded are skipped); update_metadata: update metadata of existing objects; "
        "update_all: metadata and classification (old state to history)."),
    user: Optional[str] = UserOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Import images and metadata into a project (runs the import flow); all or nothing."""
    from flows.import_bundle import import_flow

    run_flow(as_json, lambda: import_flow(
        project_id=project, path=str(path.resolve()), create_missing_taxa=create_missing_taxa,
        user_email=user, taxa_map=str(taxa_map.resolve()) if taxa_map else None,
        users_map=str(users_map.resolve()) if users_map else None,
        create_missing_users=create_missing_users, mode=mode.value), _human_import)


def _human_import(r: dict[str, Any]) -> str:
    parts = [f"Imported {r['n_objects']} objects ({r['n_images']} images, "
             f"{r['n_samples']} samples) in {r['seconds']:.1f} s"]
    for key, label in (("n_objects_skipped", "objects already present skipped"),
                       ("files_skipped", "files already loaded skipped"),
                       ("n_objects_updated", "objects updated"),
                       ("n_objects_not_found", "objects not found"),
                       ("taxa_created", "categories created"),
                       ("users_created", "annotators created")):
        value = r.get(key)
        if value:
            parts.append(f"{label}: {', '.join(map(str, value)) if isinstance(value, list) else value}")
    if r.get("pixel_size_um_set"):
        parts.append(f"project pixel size set to {r['pixel_size_um_set']:g} µm")
    return "; ".join(parts + list(r.get("notes") or []))


@app.command()
def jobs(project: Optional[int] = typer.Option(None, help="Only this project's jobs."),
         limit: int = typer.Option(20, min=1, help="How many, newest first."),
         as_json: bool = JsonOpt) -> None:
    """The latest jobs (imports, features, training ...): state, result or error."""
    from ecotaxa_core.instance import Instance
    from ecotaxa_core.jobs import list_jobs, reap_dead_jobs

    def go() -> dict[str, Any]:
        inst = Instance.open(load_settings())
        try:
            reap_dead_jobs(inst)
            with inst.sessions() as s:
                return {"jobs": [dict(id=j.id, kind=j.kind, state=j.state,
                                      project_id=j.project_ref, created_at=j.created_at,
                                      finished_at=j.finished_at, error=j.error,
                                      result=j.result, params=j.params)
                                 for j in list_jobs(s, project, limit)]}
        finally:
            inst.close()

    def human(r: dict[str, Any]) -> str:
        return "\n".join(f"{j['id']:>5} {j['kind']:<16} {j['state']:<8} project "
                         f"{j['project_id']}  {j['created_at']:%Y-%m-%d %H:%M}"
                         + (f"  {j['error']}" if j["error"] else "")
                         for j in r["jobs"]) or "no jobs"

    run_command(as_json, go, human)


@app.command("import-recover")
def import_recover(project: Optional[int] = typer.Option(None, help="Only this project."),
                   as_json: bool = JsonOpt) -> None:
    """Undo (or finish) imports that a killed process left half way."""
    from flows.import_bundle import import_recover_flow

    run_flow(as_json, lambda: import_recover_flow(project_id=project),
          lambda r: f"{r['undone']} import(s) undone, {r['finished']} finished, "
                    f"{r['vault_files_removed']} vault files removed")


@app.command()
def ingest(
    drop_folder: Path = typer.Argument(..., exists=True, file_okay=False,
                                       help="Watched folder receiving bundles."),
    project: int = typer.Argument(..., help="Project the bundles go to."),
    create_missing_taxa: bool = typer.Option(False, "--create-missing-taxa"),
    create_missing_users: bool = typer.Option(False, "--create-missing-users"),
    settle_seconds: float = typer.Option(10.0, help="A bundle must stay unchanged this long."),
    require_ready_marker: bool = typer.Option(
        False, help="Only take bundles with a NAME.ready marker file."),
    user: Optional[str] = UserOpt,
    as_json: bool = JsonOpt,
) -> None:
    """One ingest pass over a drop folder: import new bundles, move them to done/ or quarantine/.

    For a schedule, serve the ingest deployments: python -m deployments.serve --ingest-config FILE
    """
    from flows.ingest import ingest_flow

    run_flow(as_json, lambda: ingest_flow(
        drop_folder=str(drop_folder.resolve()), project_id=project,
        create_missing_taxa=create_missing_taxa, create_missing_users=create_missing_users,
        settle_seconds=settle_seconds, require_ready_marker=require_ready_marker,
        user_email=user),
          lambda r: f"{r['imported']} imported, {r['quarantined']} quarantined, "
                    f"{r['not_ready']} not ready" + (" (another pass holds the folder)"
                                                     if r.get("busy") else ""))
