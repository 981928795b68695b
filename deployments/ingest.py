"""Ingest deployments: one scheduled ``ingest`` deployment per configured drop folder.

The configuration is a TOML file (or JSON with the same structure)::

    [defaults]                      # optional; applies to every drop folder
    interval_seconds = 60
    settle_seconds = 10

    [[drop_folder]]
    name = "uvp6-cruise42"          # the deployment "ingest/uvp6-cruise42" (default: folder name)
    path = "/data/drops/uvp6"       # relative paths start at the configuration file's folder
    project_id = 3
    cron = "*/5 * * * *"            # or interval_seconds (60 s when neither is given)
    create_missing_taxa = true
    require_ready_marker = false
    user_email = "ops@example.org"  # the importing user (default: the first administrator)

Serve them with the stage deployments::

    PREFECT_API_URL=http://127.0.0.1:4200/api \\
        .venv/bin/python -m deployments.serve --ingest-config ingest.toml
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ecotaxa_core.errors import EcoTaxaError

__all__ = ["IngestConfigError", "DropFolderConfig", "load_ingest_config", "ingest_deployments"]

DEFAULT_INTERVAL_SECONDS = 60.0


class IngestConfigError(EcoTaxaError, ValueError):
    """An ingest configuration file that cannot be used; the message names the file and key."""


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interval_seconds: Optional[float] = Field(None, gt=0)
    cron: Optional[str] = None
    create_missing_taxa: Optional[bool] = None
    create_missing_users: Optional[bool] = None
    settle_seconds: Optional[float] = Field(None, ge=0)
    require_ready_marker: Optional[bool] = None
    user_email: Optional[str] = None

    @model_validator(mode="after")
    def _one_schedule(self) -> "_Options":
        if self.interval_seconds is not None and self.cron is not None:
            raise ValueError("give either interval_seconds or cron, not both")
        return self


class _DropFolderEntry(_Options):
    name: Optional[str] = Field(None, min_length=1, pattern=r"^[\w.-]+$")
    path: str = Field(min_length=1)
    project_id: int = Field(ge=1)


class _IngestFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaults: _Options = _Options()
    drop_folder: list[_DropFolderEntry] = Field(min_length=1)


@dataclass(frozen=True)
class DropFolderConfig:
    """One watched folder: where, into which project, how often, with which options."""

    name: str
    drop_folder: str
    project_id: int
    interval_seconds: float | None
    cron: str | None
    create_missing_taxa: bool = False
    create_missing_users: bool = False
    settle_seconds: float = 10.0
    require_ready_marker: bool = False
    user_email: str | None = None

    def flow_parameters(self) -> dict[str, Any]:
        """The ``ingest_flow`` parameters of this folder's deployment."""
        return {"drop_folder": self.drop_folder, "project_id": self.project_id,
                "create_missing_taxa": self.create_missing_taxa,
                "create_missing_users": self.create_missing_users,
                "settle_seconds": self.settle_seconds,
                "require_ready_marker": self.require_ready_marker, "user_email": self.user_email}


def _where(loc: tuple, raw: dict) -> str:
    if loc[:1] == ("drop_folder",) and len(loc) > 1 and isinstance(loc[1], int):
        entry = raw.get("drop_folder", [])[loc[1]]
        label = entry.get("name") or entry.get("path") if isinstance(entry, dict) else None
        rest = ".".join(str(p) for p in loc[2:])
        return (f"[[drop_folder]] #{loc[1] + 1}" + (f" ({label})" if label else "")
                + (f", key {rest!r}" if rest else ""))
    return "key " + repr(".".join(str(p) for p in loc)) if loc else "top level"


def _read(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise IngestConfigError(f"{path}: cannot read the ingest configuration ({e})") from e
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except json.JSONDecodeError as e:
        raise IngestConfigError(f"{path} line {e.lineno}, column {e.colno}: {e.msg}") from e
    except tomllib.TOMLDecodeError as e:
        raise IngestConfigError(f"{path}: {e}") from e


def load_ingest_config(config_path: str | Path) -> list[DropFolderConfig]:
    """The drop folders configured in ``config_path`` (TOML, or JSON by its suffix).

    Raises
    ------
    IngestConfigError : unreadable file, unknown or invalid key (named with its
        entry), two entries with the same name.
    """
    path = Path(config_path)
    raw = _read(path)
    try:
        parsed = _IngestFile.model_validate(raw)
    except ValidationError as e:
        problems = [f"  {_where(tuple(err['loc']), raw)}: {err['msg']}" for err in e.errors()]
        raise IngestConfigError(f"{path}: invalid ingest configuration:\n" + "\n".join(problems))
    configs, defaults = [], parsed.defaults.model_dump(exclude_none=True)
    for entry in parsed.drop_folder:
        given = entry.model_dump(exclude_none=True)
        opts = dict(defaults)
        if "cron" in given or "interval_seconds" in given:  # its own schedule replaces the default
            opts.pop("cron", None), opts.pop("interval_seconds", None)
        opts.update(given)
        folder = Path(opts.pop("path")).expanduser()
        folder = folder if folder.is_absolute() else (path.parent / folder).absolute()
        cron = opts.pop("cron", None)
        interval = opts.pop("interval_seconds", None if cron else DEFAULT_INTERVAL_SECONDS)
        configs.append(DropFolderConfig(name=opts.pop("name", None) or folder.name,
                                        drop_folder=str(folder), interval_seconds=interval,
                                        cron=cron, **opts))
    names = [c.name for c in configs]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise IngestConfigError(f"{path}: several drop folders are named {', '.join(dupes)}; "
                                "give each a distinct 'name'")
    return configs


def ingest_deployments(config_path: str | Path, **options) -> list:
    """One ``ingest`` deployment per drop folder of ``config_path``, with its schedule;
    ``options`` go to each ``to_deployment``."""
    from flows.ingest import ingest_flow

    deployments = []
    for cfg in load_ingest_config(config_path):
        schedule = ({"cron": cfg.cron} if cfg.cron is not None
                    else {"interval": cfg.interval_seconds})
        try:
            deployments.append(ingest_flow.to_deployment(
                name=cfg.name, parameters=cfg.flow_parameters(), tags=["ecotaxa", "ingest"],
                description=f"Import the bundles dropped in {cfg.drop_folder} into project "
                            f"{cfg.project_id}", **schedule, **options))
        except ValueError as e:  # an invalid cron expression
            raise IngestConfigError(f"{config_path}: drop folder {cfg.name!r}: {e}") from e
    return deployments
