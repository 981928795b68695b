"""One settings object, read from ``ECOTAXA_*`` environment variables.

Flows, the command line and the dashboard build a :class:`Settings` once and
pass plain values down; core functions never read ``os.environ`` themselves.

>>> s = Settings(home="/tmp/eco")
>>> s.database_url
'sqlite:////tmp/eco/ecotaxa.db'
>>> s.vault_location, s.feature_store_location
('/tmp/eco/vault', '/tmp/eco/features')
>>> Settings(home="/tmp/eco", vault_url="s3://lab-bucket/ecotaxa/vault").vault_location
's3://lab-bucket/ecotaxa/vault'
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Where the instance lives and how it runs its heavy work."""

    model_config = SettingsConfigDict(env_prefix="ECOTAXA_", extra="ignore")

    home: Path = Field(
        default=Path("ecotaxa_data"),
        description="Data folder holding the SQLite file, the image vault, "
        "the Zarr feature store, the model registry and exports.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the metadata database; empty means a "
        "SQLite file `ecotaxa.db` in `home`.",
    )
    vault_url: str = Field(
        default="",
        description="Where the image vault lives: a local folder or an fsspec URL "
        "(s3://bucket/prefix/vault; see docs/object-storage.md); empty: `vault` in `home`.",
    )
    feature_store_url: str = Field(
        default="",
        description="Where the Zarr feature store lives: a local folder or an fsspec URL "
        "(s3://bucket/prefix/features); empty: `features` in `home`.",
    )
    dask_scheduler_address: str = Field(
        default="",
        description="Address of an existing `dask scheduler` (tcp://host:8786); "
        "empty starts an embedded LocalCluster per flow run.",
    )
    dask_n_workers: int = Field(default=1, ge=1, description="Workers of the embedded LocalCluster.")
    dask_threads_per_worker: int = Field(default=2, ge=1, description="Threads per embedded worker.")
    chunk_size: int = Field(
        default=2048, ge=1, description="Objects per feature-extraction task."
    )
    predict_chunk_size: int = Field(
        default=16384, ge=1, description="Objects per prediction task and per database "
        "transaction of its results (larger chunks: fewer store opens and statements; "
        "about 90 MB of features per chunk at 1,321 features)."
    )
    deep_input_size: int = Field(
        default=128, ge=32, description="Input size in pixels of the deep feature extractor "
        "(128 with 4 views: about the work of 224 with one, and more accurate)."
    )
    deep_batch_size: int = Field(default=64, ge=1, description="Images per forward pass.")
    deep_views: int = Field(
        default=4, description="Flips averaged into each deep vector: 1, 2, 4 (the 4 flips; "
        "3.6 points more accurate on NDSB, 4 times the work) or 8 (flips and quarter turns).")
    deep_device: str = Field(
        default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="Where deep networks run: auto (a CUDA GPU when torch sees one), cpu, "
        "cuda, cuda:N.")
    import_max_unzipped_gib: float = Field(
        default=20.0, gt=0, description="Refuse an import whose zips expand beyond this (GiB).")
    import_max_compression_ratio: float = Field(
        default=200.0, gt=1, description="Refuse zip entries compressed more than this (zip bombs).")
    import_max_zip_entries: int = Field(default=1_000_000, ge=1,
                                        description="Refuse zips with more entries.")
    import_max_image_megapixels: float = Field(
        default=100.0, gt=0, description="Refuse images larger than this (decompression bombs).")
    backbones_file: Path | None = Field(
        default=None,
        description="TOML list of extra timm backbones for deep features "
        "(`ecotaxa backbone add`); default `backbones.toml` in `home`.",
    )
    dashboard_port: int = Field(default=5006, ge=1, le=65535)
    dashboard_address: str = Field(default="127.0.0.1")
    repredict_cron: str = Field(
        default="0 2 * * *", description="When the nightly re-prediction runs (cron, the "
                                         "runner's time zone); empty: never on its own.")
    dashboard_session_minutes: float = Field(
        default=720.0, gt=0, description="A dashboard sign-in lasts this long; then the page "
                                         "asks for the password again.")
    # `ecotaxa up`: the services it starts on this machine (bound to 127.0.0.1).
    prefect_port: int = Field(default=4200, ge=1, le=65535,
                              description="Port of the Prefect server `ecotaxa up` starts.")
    prefect_address: str = Field(
        default="127.0.0.1", description="Address that Prefect server binds to; any other than "
                                         "the loopback needs PREFECT_SERVER_API_AUTH_STRING.")
    dask_scheduler_port: int = Field(default=8786, ge=1, le=65535,
                                     description="Port of the Dask scheduler `ecotaxa up` starts.")
    dask_dashboard_port: int = Field(default=8787, ge=1, le=65535,
                                     description="Port of that scheduler's diagnostics page.")

    @field_validator("deep_views")
    @classmethod
    def _known_views(cls, value: int) -> int:
        if value not in (1, 2, 4, 8):
            raise ValueError(f"deep_views must be 1, 2, 4 or 8, got {value}")
        return value

    @model_validator(mode="after")
    def _default_database(self) -> "Settings":
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home.resolve() / 'ecotaxa.db'}"
        return self

    @property
    def vault_location(self) -> str:
        """The vault's folder or URL (see :mod:`~ecotaxa_core.storage`)."""
        return self.vault_url or str(self.home / "vault")

    @property
    def feature_store_location(self) -> str:
        """The feature store's folder or URL."""
        return self.feature_store_url or str(self.home / "features")

    @property
    def backbones_path(self) -> Path:
        return self.backbones_file or self.home / "backbones.toml"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def exports_dir(self) -> Path:
        return self.home / "exports"

    @property
    def imports_dir(self) -> Path:
        """The import inbox: folders and zip files put here can be imported from the dashboard."""
        return self.home / "imports"

    @property
    def logs_dir(self) -> Path:
        """Logs of the services `ecotaxa up` starts, one file each."""
        return self.home / "logs"

    @property
    def work_dir(self) -> Path:
        """Scratch space for imports (unzipped bundles) and staging."""
        return self.home / "work"

    def ensure_dirs(self) -> None:
        from ecotaxa_core.storage import Location

        for d in (self.home, self.models_dir, self.exports_dir, self.imports_dir,
                  self.work_dir):
            d.mkdir(parents=True, exist_ok=True)
        for where in (self.vault_location, self.feature_store_location):
            Location(where).make_folder()
