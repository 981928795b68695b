"""``ecotaxa init`` and ``ecotaxa project ...``: projects and the operations on their objects."""

from __future__ import annotations

import secrets
from enum import Enum
from typing import Any, Optional

import typer

from ecotaxa_cli.common import (
    JsonOpt,
    UserOpt,
    app,
    fail,
    load_settings,
    project_app,
    run_command,
    run_flow,
    with_object_filter,
)
from ecotaxa_core.errors import EcoTaxaError


@app.command()
def init(
    admin_email: str = typer.Option("admin@localhost", help="E-mail of the administrator."),
    admin_password: Optional[str] = typer.Option(
        None, envvar="ECOTAXA_ADMIN_PASSWORD",
        help="Password of the administrator (default: a random one, printed once)."),
    admin_name: str = typer.Option("Administrator", help="Display name of the administrator."),
    as_json: bool = JsonOpt,
) -> None:
    """Create the instance (data folder, database schema) and an administrator."""
    from ecotaxa_core.instance import init_instance

    settings = load_settings()
    generated = admin_password is None
    password = admin_password or secrets.token_urlsafe(12)

    def go() -> dict[str, Any]:
        from sqlalchemy import select

        from ecotaxa_core.db.models import User

        inst = init_instance(settings, admin_email, password)
        with inst.sessions() as s:
            user = s.scalar(select(User).where(User.email == admin_email.strip().lower()))
            # An existing administrator keeps the password it had.
            from ecotaxa_core.users import authenticate
            fresh = authenticate(s, admin_email, password) is not None
        inst.close()
        return {"home": str(settings.home.resolve()), "database_url": settings.database_url,
                "admin_email": user.email,
                "admin_password": password if (generated and fresh) else None}

    run_command(as_json, go, lambda r: (
        f"Instance ready in {r['home']} ({r['database_url']}).\n"
        f"Administrator: {r['admin_email']}"
        + (f" / password: {r['admin_password']}" if r["admin_password"] else "")))


@project_app.command("create")
def project_create(
    title: str = typer.Argument(..., help="Project title."),
    instrument: Optional[str] = typer.Option(None, help="Instrument (zooscan, uvp6, isiis, ...)."),
    pixel_size_um: Optional[float] = typer.Option(None, help="Pixel size in micrometres."),
    as_json: bool = JsonOpt,
) -> None:
    """Create a project; prints its id."""
    from ecotaxa_core.instance import Instance
    from ecotaxa_core.projects import create_project
    from ecotaxa_core.users import first_admin

    def go() -> dict[str, Any]:
        inst = Instance.open(load_settings())
        try:
            with inst.sessions.begin() as s:
                p = create_project(s, title, instrument=instrument, owner=first_admin(s),
                                   pixel_size_um=pixel_size_um)
                return {"id": p.id, "title": p.title, "instrument": p.instrument}
        finally:
            inst.close()

    run_command(as_json, go, lambda r: str(r["id"]))


@project_app.command("list")
def project_list(as_json: bool = JsonOpt) -> None:
    """List projects with their object counts."""
    from ecotaxa_core.instance import Instance
    from ecotaxa_core.projects import list_projects, project_counts

    def go() -> dict[str, Any]:
        inst = Instance.open(load_settings())
        try:
            with inst.sessions() as s:
                return {"projects": [{"id": p.id, "title": p.title, "instrument": p.instrument,
                                      "counts": project_counts(s, p.id)}
                                     for p in list_projects(s)]}
        finally:
            inst.close()

    run_command(as_json, go, lambda r: "\n".join(
        f"{p['id']:>5}  {p['title']}  ({p['counts']['total']} objects, "
        f"{p['counts']['validated']} validated, {p['counts']['predicted']} predicted)"
        for p in r["projects"]) or "no projects")


@project_app.command("reset-predicted")
@with_object_filter
def project_reset_predicted(project: int, user: Optional[str] = UserOpt,
                            as_json: bool = JsonOpt, object_filter: Any = None) -> None:
    """Put validated objects (those the filter options keep) back to predicted (history kept;
    managers)."""
    from flows.project_ops import reset_to_predicted_flow

    run_flow(as_json, lambda: reset_to_predicted_flow(project_id=project, filter=object_filter,
                                                   user_email=user),
          lambda r: f"{r['n_changed']} objects back to predicted")


@project_app.command("replace-category")
@with_object_filter
def project_replace_category(project: int, from_taxon: int, to_taxon: int,
                             user: Optional[str] = UserOpt, as_json: bool = JsonOpt,
                             object_filter: Any = None) -> None:
    """Move the objects of one category (those the filter options keep) to another (history
    kept; managers)."""
    from flows.project_ops import replace_category_flow

    run_flow(as_json, lambda: replace_category_flow(project_id=project, from_taxon_id=from_taxon,
                                                 to_taxon_id=to_taxon, filter=object_filter,
                                                 user_email=user),
          lambda r: f"{r['n_changed']} objects moved")


class MetadataLevel(str, Enum):
    sample = "sample"
    acquisition = "acquisition"
    process = "process"


@project_app.command("edit-metadata")
def project_edit_metadata(
    project: int,
    level: MetadataLevel = typer.Option(..., help="Which rows to edit."),
    field: str = typer.Option(..., help="Column (e.g. lat, lon, tot_vol)."),
    value: str = typer.Option(..., help="New value (numbers are stored as numbers)."),
    orig_id: Optional[list[str]] = typer.Option(None, "--orig-id", help="Only these ids."),
    user: Optional[str] = UserOpt, as_json: bool = JsonOpt) -> None:
    """Set one metadata field on many samples/acquisitions/processes (old values reported)."""
    from flows.project_ops import edit_metadata_flow

    try:
        typed: float | str = float(value)
    except ValueError:
        typed = value
    run_flow(as_json, lambda: edit_metadata_flow(project_id=project, level=level.value, field=field,
                                              value=typed, orig_ids=orig_id or None,
                                              user_email=user),
          lambda r: f"{r['n_changed']} {level.value}s changed")


@project_app.command("delete-objects")
@with_object_filter
def project_delete_objects(
    project: int, object_id: Optional[list[int]] = typer.Option(
        None, "--object-id", help="Delete this object (database id; repeatable)."),
    user: Optional[str] = UserOpt, as_json: bool = JsonOpt, object_filter: Any = None) -> None:
    """Delete objects (given ids, or those the filter options keep) with their images and
    feature rows (managers)."""
    from flows.project_ops import delete_objects_flow

    run_flow(as_json, lambda: delete_objects_flow(project_id=project, object_ids=object_id or None,
                                               filter=object_filter, user_email=user),
          lambda r: f"{r['n_deleted']} objects deleted")


@project_app.command("delete")
def project_delete(
    project: int, yes: bool = typer.Option(False, "--yes", help="Confirm the deletion."),
    user: Optional[str] = UserOpt, as_json: bool = JsonOpt) -> None:
    """Delete a whole project: objects, images, features, models (asks for --yes)."""
    from flows.project_ops import delete_project_flow

    if not yes:
        fail(EcoTaxaError(f"deleting project {project} cannot be undone; pass --yes"), as_json)
    run_flow(as_json, lambda: delete_project_flow(project_id=project, user_email=user),
          lambda r: f"project {project} deleted")


@project_app.command("subset")
@with_object_filter
def project_subset(
    project: int, title: str = typer.Option(..., help="Title of the new project."),
    fraction: Optional[float] = typer.Option(
        None, help="Fraction kept per category (0-1] of what the filter options keep."),
    object_id: Optional[list[int]] = typer.Option(None, "--object-id"),
    seed: int = typer.Option(0, help="Seed of the stable pseudo-random choice."),
    user: Optional[str] = UserOpt, as_json: bool = JsonOpt, object_filter: Any = None) -> None:
    """Copy a subset of a project (what the filter options keep, a fraction per category of
    it, or given objects) into a new one."""
    from flows.project_ops import subset_flow

    run_flow(as_json, lambda: subset_flow(project_id=project, title=title,
                                       fraction_per_category=fraction,
                                       object_ids=object_id or None, seed=seed,
                                       filter=object_filter, user_email=user),
          lambda r: f"new project {r['new_project_id']} ({r['n_objects']} objects)")


@project_app.command("merge")
def project_merge(target: int, source: int, user: Optional[str] = UserOpt,
                  as_json: bool = JsonOpt) -> None:
    """Move every object of SOURCE into TARGET, then delete SOURCE (managers of both)."""
    from flows.project_ops import merge_flow

    run_flow(as_json, lambda: merge_flow(target_id=target, source_id=source, user_email=user),
          lambda r: f"project {source} merged into {target}")
