"""The ``ecotaxa`` command line.

Every stage command runs its Prefect flow (Prefect starts a temporary API
server when none is configured). Human output goes to stdout, progress and
logs to stderr; with ``--json`` stdout holds exactly one JSON document.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.settings import Settings

app = typer.Typer(help=__doc__.split("\n\n")[0] + "\n\nSettings come from ECOTAXA_* "
                  "environment variables (ECOTAXA_HOME, ECOTAXA_DATABASE_URL, "
                  "ECOTAXA_DASK_SCHEDULER_ADDRESS ...).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
project_app = typer.Typer(help="Create and list projects.", no_args_is_help=True)
app.add_typer(project_app, name="project")
taxonomy_app = typer.Typer(help="The category tree: portable file, rename, merge, deprecate.",
                           no_args_is_help=True)
app.add_typer(taxonomy_app, name="taxonomy")
backbone_app = typer.Typer(help="Timm backbones for deep features, weights from local files.",
                           no_args_is_help=True)
app.add_typer(backbone_app, name="backbone")
models_app = typer.Typer(help="Trained models: list, show and compare their held-out quality.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")
UserOpt = typer.Option(None, "--user", help="Act as this user (e-mail; default: the first "
                       "administrator).")

JsonOpt = typer.Option(False, "--json", help="Print one machine-readable JSON result on stdout.")


def _settings() -> Settings:
    settings = Settings()
    # Keep Prefect's own state with the instance unless the user points elsewhere.
    if "PREFECT_HOME" not in os.environ:
        prefect_home = (settings.home / "prefect").resolve()
        prefect_home.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(prefect_home)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A flow run without a Prefect server starts a temporary one; Prefect gives it 20 s,
    # which a busy laptop (or a first start, creating its database) can exceed.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    return settings


def _emit(as_json: bool, result: dict[str, Any], human: Callable[[dict[str, Any]], str]) -> None:
    if as_json:
        typer.echo(json.dumps(result, default=str))
    else:
        typer.echo(human(result))


def _fail(exc: Exception, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
    typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code=1)


def _run(as_json: bool, fn: Callable[[], dict[str, Any]], human: Callable[[dict[str, Any]], str]):
    try:
        result = fn()
    except EcoTaxaError as exc:
        _fail(exc, as_json)
    else:
        _emit(as_json, result, human)


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

    settings = _settings()
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

    _run(as_json, go, lambda r: (
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
        inst = Instance.open(_settings())
        try:
            with inst.sessions.begin() as s:
                p = create_project(s, title, instrument=instrument, owner=first_admin(s),
                                   pixel_size_um=pixel_size_um)
                return {"id": p.id, "title": p.title, "instrument": p.instrument}
        finally:
            inst.close()

    _run(as_json, go, lambda r: str(r["id"]))


@project_app.command("list")
def project_list(as_json: bool = JsonOpt) -> None:
    """List projects with their object counts."""
    from ecotaxa_core.instance import Instance
    from ecotaxa_core.projects import list_projects, project_counts

    def go() -> dict[str, Any]:
        inst = Instance.open(_settings())
        try:
            with inst.sessions() as s:
                return {"projects": [{"id": p.id, "title": p.title, "instrument": p.instrument,
                                      "counts": project_counts(s, p.id)}
                                     for p in list_projects(s)]}
        finally:
            inst.close()

    _run(as_json, go, lambda r: "\n".join(
        f"{p['id']:>5}  {p['title']}  ({p['counts']['total']} objects, "
        f"{p['counts']['validated']} validated, {p['counts']['predicted']} predicted)"
        for p in r["projects"]) or "no projects")


def _flow(as_json: bool, call: Callable[[], dict[str, Any]], human: Callable[[dict[str, Any]], str]):
    """Run a flow; a domain error inside it is reported like any other."""
    _settings()
    _run(as_json, call, human)


# Options of the commands that work on the objects an ObjectFilter keeps (name, type, option).
_FILTER_OPTIONS: list[tuple[str, Any, Any]] = [
    ("taxon_ids", Optional[list[int]], typer.Option(
        None, "--taxon", help="Only objects of this category (taxon id; repeat for more).")),
    ("with_children", bool, typer.Option(
        False, "--with-children", help="With --taxon: also the categories below them.")),
    ("statuses", Optional[list[str]], typer.Option(
        None, "--status", help="Only this status: unclassified, predicted, validated, dubious.")),
    ("samples", Optional[list[str]], typer.Option(
        None, "--sample", help="Only objects of this sample (orig id; repeatable).")),
    ("acquisitions", Optional[list[str]], typer.Option(
        None, "--acquisition", help="Only objects of this acquisition (orig id; repeatable).")),
    ("instruments", Optional[list[str]], typer.Option(
        None, "--instrument", help="Only objects acquired with this instrument.")),
    ("date_from", Optional[str], typer.Option(
        None, "--date-from", help="Object date from (YYYY-MM-DD).")),
    ("date_to", Optional[str], typer.Option(
        None, "--date-to", help="Object date to, included.")),
    ("depth_min", Optional[float], typer.Option(
        None, "--depth-min", help="Objects at least this deep (m).")),
    ("depth_max", Optional[float], typer.Option(
        None, "--depth-max", help="Objects at most this deep (m).")),
    ("lat_min", Optional[float], typer.Option(None, "--lat-min", help="Box: south latitude.")),
    ("lat_max", Optional[float], typer.Option(None, "--lat-max", help="Box: north latitude.")),
    ("lon_min", Optional[float], typer.Option(None, "--lon-min", help="Box: west longitude.")),
    ("lon_max", Optional[float], typer.Option(
        None, "--lon-max", help="Box: east longitude (below west: across the antimeridian).")),
    ("annotators", Optional[list[int]], typer.Option(
        None, "--annotator", help="Last annotated by this user (id; repeatable).")),
    ("annotated_from", Optional[str], typer.Option(
        None, "--annotated-from", help="Last annotated from (YYYY-MM-DD[ HH:MM], UTC).")),
    ("annotated_to", Optional[str], typer.Option(
        None, "--annotated-to", help="Last annotated until, included.")),
    ("score_min", Optional[float], typer.Option(
        None, "--score-min", help="Prediction score at least.")),
    ("score_max", Optional[float], typer.Option(
        None, "--score-max", help="Prediction score at most.")),
    ("conditions", Optional[list[str]], typer.Option(
        None, "--where", help="Free object column condition, e.g. 'object_area>100' or "
        "'sex=F' (= != < <= > >=; repeatable).")),
    ("orig_id_prefix", Optional[str], typer.Option(
        None, "--orig-id-prefix", help="Only objects whose orig id starts so.")),
    ("orig_ids", Optional[list[str]], typer.Option(
        None, "--orig-id", help="Only this object (orig id; repeatable).")),
]


def _with_object_filter(command: Callable) -> Callable:
    """Give ``command`` the object filter options; it gets them as ``object_filter``, a
    plain-JSON mapping of the criteria given (None when none is)."""
    import functools
    import inspect

    names = [name for name, _, _ in _FILTER_OPTIONS]
    own = [p for p in inspect.signature(command).parameters.values() if p.name != "object_filter"]
    added = [inspect.Parameter(f"filter_{name}", inspect.Parameter.KEYWORD_ONLY, default=option,
                               annotation=kind) for name, kind, option in _FILTER_OPTIONS]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(f"filter_{name}") for name in names}
        criteria = {k: v for k, v in given.items() if v is not None and v is not False and v != []}
        return command(*args, object_filter=criteria or None, **kwargs)

    wrapper.__signature__ = inspect.Signature(own + added)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {k: v for k, v in command.__annotations__.items()
                               if k != "object_filter"}
    wrapper.__annotations__.update({p.name: p.annotation for p in added})
    return wrapper


@project_app.command("reset-predicted")
@_with_object_filter
def project_reset_predicted(project: int, user: Optional[str] = UserOpt,
                            as_json: bool = JsonOpt, object_filter: Any = None) -> None:
    """Put validated objects (those the filter options keep) back to predicted (history kept;
    managers)."""
    from flows.project_ops import reset_to_predicted_flow

    _flow(as_json, lambda: reset_to_predicted_flow(project_id=project, filter=object_filter,
                                                   user_email=user),
          lambda r: f"{r['n_changed']} objects back to predicted")


@project_app.command("replace-category")
@_with_object_filter
def project_replace_category(project: int, from_taxon: int, to_taxon: int,
                             user: Optional[str] = UserOpt, as_json: bool = JsonOpt,
                             object_filter: Any = None) -> None:
    """Move the objects of one category (those the filter options keep) to another (history
    kept; managers)."""
    from flows.project_ops import replace_category_flow

    _flow(as_json, lambda: replace_category_flow(project_id=project, from_taxon_id=from_taxon,
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
    _flow(as_json, lambda: edit_metadata_flow(project_id=project, level=level.value, field=field,
                                              value=typed, orig_ids=orig_id or None,
                                              user_email=user),
          lambda r: f"{r['n_changed']} {level.value}s changed")


@project_app.command("delete-objects")
@_with_object_filter
def project_delete_objects(
    project: int, object_id: Optional[list[int]] = typer.Option(
        None, "--object-id", help="Delete this object (database id; repeatable)."),
    user: Optional[str] = UserOpt, as_json: bool = JsonOpt, object_filter: Any = None) -> None:
    """Delete objects (given ids, or those the filter options keep) with their images and
    feature rows (managers)."""
    from flows.project_ops import delete_objects_flow

    _flow(as_json, lambda: delete_objects_flow(project_id=project, object_ids=object_id or None,
                                               filter=object_filter, user_email=user),
          lambda r: f"{r['n_deleted']} objects deleted")


@project_app.command("delete")
def project_delete(
    project: int, yes: bool = typer.Option(False, "--yes", help="Confirm the deletion."),
    user: Optional[str] = UserOpt, as_json: bool = JsonOpt) -> None:
    """Delete a whole project: objects, images, features, models (asks for --yes)."""
    from flows.project_ops import delete_project_flow

    if not yes:
        _fail(EcoTaxaError(f"deleting project {project} cannot be undone; pass --yes"), as_json)
    _flow(as_json, lambda: delete_project_flow(project_id=project, user_email=user),
          lambda r: f"project {project} deleted")


@project_app.command("subset")
@_with_object_filter
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

    _flow(as_json, lambda: subset_flow(project_id=project, title=title,
                                       fraction_per_category=fraction,
                                       object_ids=object_id or None, seed=seed,
                                       filter=object_filter, user_email=user),
          lambda r: f"new project {r['new_project_id']} ({r['n_objects']} objects)")


@project_app.command("merge")
def project_merge(target: int, source: int, user: Optional[str] = UserOpt,
                  as_json: bool = JsonOpt) -> None:
    """Move every object of SOURCE into TARGET, then delete SOURCE (managers of both)."""
    from flows.project_ops import merge_flow

    _flow(as_json, lambda: merge_flow(target_id=target, source_id=source, user_email=user),
          lambda r: f"project {source} merged into {target}")


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

    _flow(as_json, lambda: import_flow(
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
        inst = Instance.open(_settings())
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

    _run(as_json, go, human)


@app.command("import-recover")
def import_recover(project: Optional[int] = typer.Option(None, help="Only this project."),
                   as_json: bool = JsonOpt) -> None:
    """Undo (or finish) imports that a killed process left half way."""
    from flows.import_bundle import import_recover_flow

    _flow(as_json, lambda: import_recover_flow(project_id=project),
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

    _flow(as_json, lambda: ingest_flow(
        drop_folder=str(drop_folder.resolve()), project_id=project,
        create_missing_taxa=create_missing_taxa, create_missing_users=create_missing_users,
        settle_seconds=settle_seconds, require_ready_marker=require_ready_marker,
        user_email=user),
          lambda r: f"{r['imported']} imported, {r['quarantined']} quarantined, "
                    f"{r['not_ready']} not ready" + (" (another pass holds the folder)"
                                                     if r.get("busy") else ""))


@app.command()
def features(
    project: int = typer.Argument(..., help="Project id."),
    feature_set: Optional[list[str]] = typer.Option(
        None, "--set", help="Feature set to compute (repeatable): morpho, deep_effnetlite0, "
        "deep_NAME of a registered backbone (ecotaxa backbone list)."),
    recompute: bool = typer.Option(
        False, "--recompute", help="Delete the project's rows of these sets first and compute "
        "them again (after a change of extractor version or settings)."),
    as_json: bool = JsonOpt,
) -> None:
    """Compute the feature sets objects lack (runs the features flow on Dask)."""
    from flows.features import features_flow

    kwargs: dict[str, Any] = {"project_id": project, "recompute": recompute}
    if feature_set:
        kwargs["feature_sets"] = list(feature_set)
    _flow(as_json, lambda: features_flow(**kwargs), _human_features)


def _human_features(r: dict[str, Any]) -> str:
    lines = []
    for name, s in (r.get("feature_sets") or {}).items():
        lines.append(f"{name}: {s.get('objects', 0)} objects in {s.get('seconds', 0):.1f} s"
                     + (f" ({s['images_per_s']:.0f} images/s)" if s.get("images_per_s") else ""))
    return "\n".join(lines) or "nothing to compute: every object has its features"


@backbone_app.command("add")
def backbone_add(
    name: str = typer.Argument(..., help="Backbone name: its feature set is deep_NAME."),
    model: str = typer.Option(..., "--model", help="timm model name (e.g. convnext_nano)."),
    weights: Path = typer.Option(..., "--weights", help="Weights file: .safetensors, .pth, "
                                 ".bin (a state dict; the classifier's weights are dropped)."),
    mean: Optional[str] = typer.Option(None, help="Normalisation mean, three numbers "
                                       "'r,g,b' on 0-1 pixels (default: timm's for the model)."),
    std: Optional[str] = typer.Option(None, help="Normalisation std, 'r,g,b' (default: timm's)."),
    replace: bool = typer.Option(False, "--replace", help="Replace a backbone of that name."),
    as_json: bool = JsonOpt,
) -> None:
    """Register a timm backbone after loading its weights once (strictly)."""
    from ecotaxa_core.features.backbones import BackboneError, register_backbone

    settings = _settings()

    def triple(text: Optional[str], what: str):
        if text is None:
            return None
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != 3:
            raise BackboneError(f"--{what} must be three numbers 'r,g,b', got {text!r}")
        return values

    def go() -> dict[str, Any]:
        spec = register_backbone(settings.backbones_path, name, model, weights,
                                 mean=triple(mean, "mean"), std=triple(std, "std"),
                                 replace=replace)
        return {"feature_set": spec.feature_set, **spec.to_dict(),
                "file": str(settings.backbones_path)}

    _run(as_json, go, lambda r: f"{r['feature_set']}: timm {r['model']}, {r['n_features']} "
         f"features, weights {r['weights']} (listed in {r['file']})")


@backbone_app.command("list")
def backbone_list(as_json: bool = JsonOpt) -> None:
    """The registered backbones and their feature sets."""
    from ecotaxa_core.features.backbones import read_backbones

    settings = _settings()
    _run(as_json, lambda: {"backbones": [
        {"feature_set": fs, **spec.to_dict()}
        for fs, spec in read_backbones(settings.backbones_path).items()]},
         lambda r: "\n".join(f"{b['feature_set']}: timm {b['model']}, {b['n_features']} "
                             f"features, {b['weights']}" for b in r["backbones"])
         or "no backbone registered (ecotaxa backbone add)")


def _models_query(fn: Callable[[Any, Any], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """A ``_run`` body calling ``fn(instance, session)`` on the configured instance."""
    from ecotaxa_core.instance import Instance

    def go() -> dict[str, Any]:
        inst = Instance.open(_settings())
        try:
            with inst.sessions() as session:
                return fn(inst, session)
        finally:
            inst.close()

    return go


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


_MODEL_COLUMNS = (("id", ">4", "id", "d"), ("kind", "<12", "kind", ""),
                  ("n_categories", ">5", "cats", "d"), ("n_objects", ">7", "objects", "d"),
                  ("accuracy", ">6", "acc", ".3f"), ("balanced_accuracy", ">6", "bal", ".3f"),
                  ("log_loss", ">6", "loss", ".3f"), ("plankton_precision", ">6", "pl.P", ".3f"),
                  ("plankton_recall", ">6", "pl.R", ".3f"), ("coverage", ">6", "cover", ".1%"),
                  ("fit_seconds", ">7", "fit s", ".1f"))


def _model_table(models: list[dict[str, Any]]) -> str:
    head = " ".join(format(title, width) for _, width, title, _ in _MODEL_COLUMNS) + "  name"
    rows = [" ".join(format(_fmt(m[key], spec), width) for key, width, _, spec in _MODEL_COLUMNS)
            + f"  {m['name']}" for m in models]
    return "\n".join([head, *rows])


@models_app.command("list")
def models_list(project: int = typer.Argument(..., help="Project id."),
                as_json: bool = JsonOpt) -> None:
    """The project's trained models, newest first, with their held-out quality.

    acc: accuracy, bal: balanced accuracy, loss: log loss, pl.P / pl.R: precision and
    recall weighted over plankton categories, cover: held-out objects above their
    category's score threshold.
    """
    from ecotaxa_core.learn.registry import list_model_summaries

    _run(as_json, _models_query(lambda inst, s: {
        "project_id": project, "models": list_model_summaries(s, project)}),
         lambda r: _model_table(r["models"]) if r["models"]
         else f"project {r['project_id']} has no trained model (ecotaxa train {r['project_id']})")


@models_app.command("compare")
def models_compare(model_ids: list[int] = typer.Argument(..., help="Ids of the models to compare."),
                   as_json: bool = JsonOpt) -> None:
    """One row per model: accuracy, balanced accuracy, log loss, plankton precision/recall ..."""
    from ecotaxa_core.learn.registry import compare_models

    def human(r: dict[str, Any]) -> str:
        best = ", ".join(f"{k} {v}" for k, v in r["best"].items() if v is not None)
        note = ("\nmodels of different projects: their held-out parts differ"
                if len(r["projects"]) > 1 else "")
        return _model_table(r["models"]) + (f"\nbest: {best}" if best else "") + note

    _run(as_json, _models_query(lambda inst, s: compare_models(s, model_ids)), human)


def _human_model_report(r: dict[str, Any]) -> str:
    m, t = r["summary"], r["thresholds"]
    lines = [f"model {m['id']} of project {m['project_id']}: {m['name']}",
             f"kind {m['kind']} on {', '.join(m['feature_sets'])}; {m['n_objects']} objects, "
             f"{m['n_categories']} categories; created {m['created_at'][:16].replace('T', ' ')}"
             + (f" by {m['created_by']}" if m["created_by"] else ""),
             f"file: {r['path']}"]
    if m["accuracy"] is None:
        lines.append(f"no held-out evaluation: {r['metrics'].get('reason', 'unknown')}")
        return "\n".join(lines)
    met = r["metrics"]
    lines.append(f"held-out ({met.get('n_test')} objects): accuracy {_fmt(m['accuracy'])}, "
                 f"balanced accuracy {_fmt(m['balanced_accuracy'])}, log loss "
                 f"{_fmt(m['log_loss'])}")
    lines.append(f"weighted precision / recall / F1: {_fmt(met.get('weighted_precision'))} / "
                 f"{_fmt(met.get('weighted_recall'))} / {_fmt(met.get('weighted_f1'))}; "
                 f"plankton only: {_fmt(met.get('plankton_weighted_precision'))} / "
                 f"{_fmt(met.get('plankton_weighted_recall'))} / "
                 f"{_fmt(met.get('plankton_weighted_f1'))}")
    lines.append(f"macro precision / recall: {_fmt(met.get('macro_precision'))} / "
                 f"{_fmt(met.get('macro_recall'))}; plankton only: "
                 f"{_fmt(met.get('plankton_macro_precision'))} / "
                 f"{_fmt(met.get('plankton_macro_recall'))}")
    if t:
        lines.append(f"score thresholds for precision {t['target_precision']:g}: "
                     f"{t['n_categories_with_threshold']} categories; "
                     f"{_fmt(t['fraction_bulk_validatable'], '.1%')} of held-out objects above "
                     f"them, expected error rate {_fmt(t['expected_error_rate'], '.1%')}")
    lines.append(f"{'category':<32} {'support':>7} {'prec':>6} {'recall':>6} {'f1':>6} "
                 f"{'threshold':>9} {'cover':>6}")
    for c in r["per_class"]:
        lines.append(f"{c['category'][:32]:<32} {c['support']:>7} {_fmt(c['precision']):>6} "
                     f"{_fmt(c['recall']):>6} {_fmt(c['f1']):>6} {_fmt(c['threshold']):>9} "
                     f"{_fmt(c['threshold_coverage'], '.0%'):>6}")
    if any(c["threshold"] is None for c in r["per_class"]):
        lines.append("threshold -: none reaches the target precision with enough held-out "
                     "objects (--json gives each reason)")
    lines.append(f"confusion matrix plot: {r['confusion_matrix_png'] or 'none'}")
    return "\n".join(lines)


@models_app.command("show")
def models_show(model_id: int = typer.Argument(..., help="Model id."),
                as_json: bool = JsonOpt) -> None:
    """All held-out metrics of a model, its categories by support, thresholds, plot path."""
    from ecotaxa_core.learn.registry import model_report

    _run(as_json, _models_query(lambda inst, s: model_report(s, inst.models_dir, model_id)),
         _human_model_report)


def _learning_categories(category: Optional[list[str]], appear_as: Optional[list[str]]
                         ) -> tuple[Optional[list[int]], Optional[dict[int, int]]]:
    """``--category`` and ``--appear-as`` values (ids or names) as taxon ids."""
    if not category and not appear_as:
        return None, None
    from ecotaxa_core.instance import Instance
    from ecotaxa_core.taxonomy import taxon_by_id_or_name

    inst = Instance.open(_settings())
    try:
        with inst.sessions() as s:
            categories = [taxon_by_id_or_name(s, c).id for c in category] if category else None
            mapping: Optional[dict[int, int]] = {} if appear_as else None
            for pair in appear_as or []:
                source, sep, target = pair.partition("=")
                if not sep or not source.strip() or not target.strip():
                    raise EcoTaxaError(f"--appear-as needs CATEGORY=TARGET, got {pair!r}")
                mapping[taxon_by_id_or_name(s, source).id] = taxon_by_id_or_name(s, target).id
    finally:
        inst.close()
    return categories, mapping


@app.command("fine-tune")
def fine_tune(
    project: int = typer.Argument(..., help="Project id."),
    name: str = typer.Option(..., "--name", help="The new backbone: its feature set is "
                             "deep_NAME (lower-case letters, digits, _)."),
    epochs: int = typer.Option(10, help="Most epochs."),
    input_size: int = typer.Option(128, help="Network input side in pixels (also used when "
                                   "extracting deep_NAME)."),
    device: str = typer.Option("auto", help="auto (a CUDA GPU when present), cpu, cuda, cuda:N."),
    max_per_category: Optional[int] = typer.Option(None, help="Cap of objects per category."),
    time_budget: Optional[float] = typer.Option(
        None, help="Seconds; training stops after the last epoch that fits in them (the "
        "learning rate decays to it)."),
    patience: int = typer.Option(3, help="Epochs without a better validation loss before "
                                 "stopping."),
    batch_size: int = typer.Option(64, help="Images per training step."),
    other_project: Optional[list[int]] = typer.Option(
        None, "--other-project", help="Also learn from this project's validated objects."),
    category: Optional[list[str]] = typer.Option(
        None, "--category", help="Learn only this category (id or name; repeatable)."),
    appear_as: Optional[list[str]] = typer.Option(
        None, "--appear-as", help="CATEGORY=TARGET: learn CATEGORY's objects as TARGET "
        "(usually its parent; ids or names; repeatable)."),
    compute_features: bool = typer.Option(
        False, "--compute-features", help="Then compute deep_NAME for the project."),
    as_json: bool = JsonOpt,
) -> None:
    """Fine-tune EfficientNet-Lite0 + 600 bottleneck on the validated objects; register it
    as backbone NAME (feature set deep_NAME) for the features flow and the classifiers."""
    from flows.fine_tune import fine_tune_flow

    def go() -> dict[str, Any]:
        categories, mapping = _learning_categories(category, appear_as)
        return fine_tune_flow(
            project_id=project, name=name, epochs=epochs, input_size=input_size, device=device,
            max_per_category=max_per_category, time_budget_s=time_budget, patience=patience,
            batch_size=batch_size, other_project_ids=list(other_project or []),
            categories=categories, appear_as=mapping, compute_features=compute_features)

    _flow(as_json, go,
          lambda r: f"{r['feature_set']}: {r['epochs_run']} epochs on {r['device']} (best "
                    f"{r['best_epoch']}, stopped: {r['stopped']}), validation accuracy "
                    f"{r['validation']['accuracy']:.3f}, log loss "
                    f"{r['validation']['log_loss']:.3f}, {r['train_images_per_s']} images/s; "
                    f"weights {r['weights']}"
                    + (f"\n{_human_features(r['features'])}" if r.get("features") else ""))


@app.command()
def train(
    project: int = typer.Argument(..., help="Project id."),
    kind: Optional[list[str]] = typer.Option(
        None, "--kind", help="Model to train (repeatable): KIND or KIND:SET+SET, KIND among "
        "classic_rf, deep_logreg, deep_rf, deep_mlp, deep_logreg_rf (e.g. "
        "deep_logreg_rf:deep_effnetlite0+morpho). "
        "Default: the best model the features allow within --time-budget, and the baseline."),
    time_budget: Optional[float] = typer.Option(
        None, help="Minutes the training may take (the automatic choice fits within it)."),
    max_per_category: Optional[int] = typer.Option(None, help="Cap of objects per category."),
    other_project: Optional[list[int]] = typer.Option(
        None, "--other-project", help="Also learn from this project's validated objects."),
    category: Optional[list[str]] = typer.Option(
        None, "--category", help="Learn only this category (id or name; repeatable)."),
    appear_as: Optional[list[str]] = typer.Option(
        None, "--appear-as", help="CATEGORY=TARGET: learn CATEGORY's objects as TARGET "
        "(usually its parent; ids or names; repeatable)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the cap's choice and of the split."),
    test_size: Optional[float] = typer.Option(None, help="Held-out fraction of each category."),
    as_json: bool = JsonOpt,
) -> None:
    """Train classifiers on the validated objects (runs the training flow).

    Settings left out are those of the project's last training, else the defaults.
    """
    from flows.train import train_flow

    def go() -> dict[str, Any]:
        categories, mapping = _learning_categories(category, appear_as)
        return train_flow(project_id=project, candidates=list(kind) if kind else None,
                          time_budget_s=None if time_budget is None else time_budget * 60.0,
                          max_per_category=max_per_category,
                          other_project_ids=list(other_project) if other_project else None,
                          categories=categories, appear_as=mapping, seed=seed,
                          test_size=test_size)

    _flow(as_json, go, _human_train)


def _human_train(r: dict[str, Any]) -> str:
    lines = []
    for m in r.get("models", []):
        met = m.get("metrics", {})
        if met.get("accuracy") is None:
            lines.append(f"model {m['model_id']} {m['kind']}: no held-out evaluation "
                         "(too few categories with 5 or more objects)")
            continue
        lines.append(f"model {m['model_id']} {m.get('candidate', m['kind'])} "
                     f"({m.get('role', 'asked')}): accuracy {met['accuracy']:.3f}, "
                     f"balanced accuracy {met['balanced_accuracy']:.3f}, log loss "
                     f"{met['log_loss']:.3f} (held-out {met.get('n_test', '?')} objects, "
                     f"{met.get('total_seconds') or 0:.0f} s)")
    for s in r.get("skipped", []):
        lines.append(f"skipped {s}")
    for note in r.get("plan", {}).get("notes", []):
        lines.append(f"note: {note}")
    remembered = sorted(k for k, v in r.get("settings_origin", {}).items() if v == "remembered")
    if remembered:
        lines.append(f"from the last training: {', '.join(remembered)}")
    if r.get("best") is not None:
        lines.append(f"best model: {r['best']}")
    return "\n".join(lines)


@app.command()
def predict(
    project: int = typer.Argument(..., help="Project id."),
    model_id: Optional[int] = typer.Option(None, help="Model to use (default: the best one)."),
    as_json: bool = JsonOpt,
) -> None:
    """Predict unclassified and predicted objects (runs the prediction flow on Dask)."""
    from flows.predict import predict_flow

    _flow(as_json, lambda: predict_flow(project_id=project, model_id=model_id),
          lambda r: f"Predicted {r['n_predicted']} objects with model {r['model_id']} "
                    f"in {r['seconds']:.1f} s" + (
                        f"; {r['n_above_threshold']} above their category's score threshold "
                        "(ecotaxa models show)" if r.get("n_above_threshold") is not None
                        else ""))


@app.command()
def export(
    project: int = typer.Argument(..., help="Project id."),
    out: Path = typer.Argument(..., help="Folder receiving the bundle and the count table."),
    images: bool = typer.Option(True, "--images/--no-images", help="Put the images in the bundle."),
    split_by_sample: bool = typer.Option(False, "--split-by-sample",
                                         help="One TSV per sample, in a folder per sample."),
    as_json: bool = JsonOpt,
) -> None:
    """Export the project as a re-importable EcoTaxa TSV bundle plus per-sample category counts."""
    from flows.export import export_flow

    _flow(as_json, lambda: export_flow(project_id=project, out_dir=str(out.resolve()),
                                       with_images=images, split_by_sample=split_by_sample),
          lambda r: f"Exported {r['n_objects']} objects to {r['bundle']}\nCounts: {r['counts']}")


class SummaryUnit(str, Enum):
    sample = "sample"
    acquisition = "acquisition"


@app.command()
def summary(
    project: int = typer.Argument(..., help="Project id."),
    out: Path = typer.Argument(..., help="Folder receiving the summary TSV."),
    by: SummaryUnit = typer.Option(SummaryUnit.sample, help="One row per sample or acquisition "
                                   "and category."),
    with_predicted: bool = typer.Option(False, "--with-predicted",
                                        help="Count predicted objects too (validated always)."),
    formula: Optional[list[str]] = typer.Option(
        None, "--formula", help="NAME=EXPR replacing a formula for this run, e.g. "
        "total_water_volume=sam.tot_vol/1000 (repeatable)."),
    as_json: bool = JsonOpt,
) -> None:
    """Abundance, concentration (#/m3) and biovolume (mm3/m3) per sample and category."""
    from flows.summary import summary_flow

    formulas = None
    if formula:
        bad = [f for f in formula if "=" not in f]
        if bad:
            _fail(ValueError(f"--formula needs NAME=EXPR, got {bad[0]!r}"), as_json)
        formulas = dict(f.split("=", 1) for f in formula)
    _flow(as_json, lambda: summary_flow(project_id=project, out_dir=str(out.resolve()),
                                        by=by.value, with_predicted=with_predicted,
                                        formulas=formulas),
          lambda r: f"{r['n_rows']} rows ({r['n_units']} {r['by']}s x {r['n_categories']} "
                    f"categories) written to {r['path']}"
                    + "".join(f"\nwarning: {w}" for w in r.get("warnings", [])))


@app.command()
def dwca(
    project: int = typer.Argument(..., help="Project id."),
    out: Path = typer.Argument(..., help="Folder receiving the archive."),
    contact_email: Optional[str] = typer.Option(None, help="Contact e-mail (required unless "
                                                "stored in the project)."),
    license: Optional[str] = typer.Option(None, help="CC0-1.0, CC-BY-4.0 or CC-BY-NC-4.0."),
    contact_name: Optional[str] = typer.Option(None),
    organization: Optional[str] = typer.Option(None),
    title: Optional[str] = typer.Option(None),
    abstract: Optional[str] = typer.Option(None),
    citation: Optional[str] = typer.Option(None),
    with_predicted: bool = typer.Option(False, "--with-predicted"),
    as_json: bool = JsonOpt,
) -> None:
    """Darwin Core Archive for GBIF/OBIS: events, occurrences, counts/concentrations/biovolumes."""
    from flows.dwca import dwca_flow

    _flow(as_json, lambda: dwca_flow(project_id=project, out_dir=str(out.resolve()), title=title,
                                     contact_name=contact_name, contact_email=contact_email,
                                     organization=organization, license=license,
                                     abstract=abstract, citation=citation,
                                     with_predicted=with_predicted),
          lambda r: f"{r['n_events']} events, {r['n_occurrences']} occurrences, "
                    f"{r['n_measurements']} measurements in {r['path']}"
                    + "".join(f"\nwarning: {w}" for w in r.get("warnings", [])))


@app.command()
def serve(
    port: int = typer.Option(None, help="Port (default ECOTAXA_DASHBOARD_PORT or 5006)."),
    address: Optional[str] = typer.Option(None, help="Address to bind (default 127.0.0.1)."),
    show: bool = typer.Option(False, help="Open a browser."),
) -> None:
    """Serve the validation dashboard."""
    from dashboards.app import serve_dashboard

    settings = _settings()
    serve_dashboard(settings, port=port or settings.dashboard_port,
                    address=address or settings.dashboard_address, show=show)


@app.command()
def demo(as_json: bool = JsonOpt) -> None:
    """Run the whole loop on the bundled sample of real plankton images.

    Creates the instance if needed, imports 1,200 NDSB images (70 % validated),
    computes features, trains both classifiers, predicts the rest, exports, and
    prints where everything is and how good the model is.
    """
    from flows.demo import demo_run

    settings = _settings()
    try:
        result = demo_run(settings)
    except EcoTaxaError as exc:
        _fail(exc, as_json)
        return
    _emit(as_json, result, _human_demo)


def _human_demo(r: dict[str, Any]) -> str:
    lines = ["", "EcoTaxa demo finished in %.0f s" % r["seconds"],
             f"  project {r['project_id']}: {r['n_objects']} objects imported"]
    for m in r["models"]:
        lines.append(f"  model {m['model_id']} ({m['kind']}): held-out accuracy "
                     f"{m['accuracy']:.3f}, balanced accuracy {m['balanced_accuracy']:.3f}")
    lines.append(f"  predictions on the {r['n_unvalidated']} unvalidated objects: accuracy "
                 f"{r['prediction_accuracy']:.3f} against their true categories "
                 f"(model {r['prediction_model_id']})")
    lines.append(f"  export bundle: {r['export_bundle']}")
    lines.append(f"  counts per sample and category: {r['export_counts']}")
    lines.append("  open the dashboard: "
                 f"ECOTAXA_HOME={r['home']} .venv/bin/ecotaxa serve  ->  {r['dashboard_url']}")
    lines.append(f"  sign in as {r['admin_email']}"
                 + (f" / {r['admin_password']}" if r.get("admin_password") else ""))
    return "\n".join(lines)


@taxonomy_app.command("export")
def taxonomy_export(path: Path = typer.Argument(..., help="TSV file to write."),
                    as_json: bool = JsonOpt) -> None:
    """Write the whole tree (ids, parents, names, ranks, AphiaIDs) to a portable file."""
    from flows.taxonomy import export_taxonomy_flow

    _flow(as_json, lambda: export_taxonomy_flow(path=str(path.resolve())),
          lambda r: f"{r['n_taxa']} taxa written to {r['path']}")


@taxonomy_app.command("import")
def taxonomy_import(path: Path = typer.Argument(..., exists=True, help="Portable taxonomy file."),
                    dry_run: bool = typer.Option(False, "--dry-run", help="Check only."),
                    user: Optional[str] = UserOpt, as_json: bool = JsonOpt) -> None:
    """Load a portable taxonomy file, keeping its ids (administrators only)."""
    from flows.taxonomy import import_taxonomy_flow

    _flow(as_json, lambda: import_taxonomy_flow(path=str(path.resolve()), user_email=user,
                                                dry_run=dry_run),
          lambda r: ("checked: " if r["dry_run"] else "")
          + f"{r['created']} created, {r['updated']} updated, {r['unchanged']} unchanged")


def _taxon_edit(as_json: bool, user: Optional[str], edit: Callable[..., Any]) -> None:
    from ecotaxa_core.instance import Instance
    from ecotaxa_core.users import user_for_cli

    def go() -> dict[str, Any]:
        inst = Instance.open(_settings())
        try:
            with inst.sessions.begin() as s:
                return edit(s, user_for_cli(s, user).id).to_dict()
        finally:
            inst.close()

    _run(as_json, go, lambda r: f"taxon {r['taxon_id']}: {r['display_name']}"
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

    _flow(as_json, lambda: merge_taxa_flow(source_id=source_id, target_id=target_id,
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


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
