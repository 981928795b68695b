"""What the ``ecotaxa`` commands share: the Typer apps, settings from the
environment, human or ``--json`` output, errors, running flows, the object-filter
options."""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Optional

import typer

from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.settings import Settings

app = typer.Typer(help="The ``ecotaxa`` command line.\n\nSettings come from ECOTAXA_* "
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


def load_settings() -> Settings:
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


def emit(as_json: bool, result: dict[str, Any], human: Callable[[dict[str, Any]], str]) -> None:
    if as_json:
        typer.echo(json.dumps(result, default=str))
    else:
        typer.echo(human(result))


def fail(exc: Exception, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
    typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code=1)


def run_command(as_json: bool, fn: Callable[[], dict[str, Any]],
                human: Callable[[dict[str, Any]], str]):
    try:
        result = fn()
    except EcoTaxaError as exc:
        fail(exc, as_json)
    else:
        emit(as_json, result, human)


def run_flow(as_json: bool, call: Callable[[], dict[str, Any]],
             human: Callable[[dict[str, Any]], str]):
    """Run a flow; a domain error inside it is reported like any other."""
    load_settings()
    run_command(as_json, call, human)


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


def with_object_filter(command: Callable) -> Callable:
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
