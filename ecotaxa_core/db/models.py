"""The metadata database schema (SQLAlchemy 2 declarative models).

The same models run on SQLite (the embedded default) and PostgreSQL. The
schema itself is created and upgraded by Alembic (``ecotaxa_core/db/migrations``);
tests compare the two so they cannot drift apart.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "Base",
    "ObjectStatus",
    "Role",
    "User",
    "Project",
    "Membership",
    "SavedView",
    "Taxon",
    "Sample",
    "Acquisition",
    "Process",
    "Object",
    "Image",
    "AnnotationHistory",
    "TrainedModel",
    "ImportRun",
    "ImportedFile",
    "Job",
    "utcnow",
]

# Aliases that say which kind of id a value is.
ProjectIDT = int
ObjectIDT = int
TaxonIDT = int
UserIDT = int


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# BigInteger ids on PostgreSQL (projects reach tens of millions of objects),
# plain INTEGER on SQLite where only INTEGER PRIMARY KEY is an auto rowid.
BigID = BigInteger().with_variant(Integer(), "sqlite")


class ObjectStatus(str, enum.Enum):
    """Annotation status of an object, as in EcoTaxa."""

    UNCLASSIFIED = "unclassified"
    PREDICTED = "predicted"
    DUBIOUS = "dubious"
    VALIDATED = "validated"


class Role(str, enum.Enum):
    """Role of a user in a project (the administrator is a user flag)."""

    VISITOR = "visitor"
    ANNOTATOR = "annotator"
    MANAGER = "manager"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class User(Base):
    __tablename__ = "users"

    id: Mapped[UserIDT] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    password_hash: Mapped[Optional[str]] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(default=False)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[ProjectIDT] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(255))
    instrument: Mapped[Optional[str]] = mapped_column(String(64))
    # Size of one pixel in micrometres, when the instrument gives it.
    pixel_size_um: Mapped[Optional[float]] = mapped_column(Float)
    # Free columns seen at import, per prefix: {"object": {"area": "f"}, "sample": {...}}
    # so an export writes every column back with its type.
    free_columns: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Per-project settings: summary formulas, last training choices ...
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    members: Mapped[list["Membership"]] = relationship(back_populates="project",
                                                       cascade="all, delete-orphan")


class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[UserIDT] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                             primary_key=True)
    project_id: Mapped[ProjectIDT] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))

    project: Mapped[Project] = relationship(back_populates="members")
    user: Mapped[User] = relationship()


class SavedView(Base):
    """The last view of the validation page a user had in a project (filters, sort, page)."""

    __tablename__ = "saved_views"

    user_id: Mapped[UserIDT] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                             primary_key=True)
    project_id: Mapped[ProjectIDT] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    query: Mapped[dict[str, Any]] = mapped_column(default=dict)
    saved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Taxon(Base):
    """A category of the shared taxonomy tree."""

    __tablename__ = "taxa"
    __table_args__ = (UniqueConstraint("parent_id", "name", name="uq_taxa_parent_name"),)

    id: Mapped[TaxonIDT] = mapped_column(Integer, primary_key=True)
    parent_id: Mapped[Optional[TaxonIDT]] = mapped_column(ForeignKey("taxa.id"), index=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    # Unique label shown to users: the name, or "name<parent" when the name alone is ambiguous.
    display_name: Mapped[str] = mapped_column(String(512), unique=True)
    rank: Mapped[Optional[str]] = mapped_column(String(32))
    # WoRMS AphiaID, when known.
    aphia_id: Mapped[Optional[int]] = mapped_column(Integer)
    # A deprecated taxon is no longer offered; objects keep it until moved.
    deprecated: Mapped[bool] = mapped_column(default=False)
    # Set when the taxon was merged into another one (its objects moved there).
    merged_into_id: Mapped[Optional[TaxonIDT]] = mapped_column(ForeignKey("taxa.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    parent: Mapped[Optional["Taxon"]] = relationship(remote_side="Taxon.id",
                                                     foreign_keys=[parent_id])


class Sample(Base):
    __tablename__ = "samples"
    __table_args__ = (UniqueConstraint("project_id", "orig_id", name="uq_samples_project_orig"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    project_id: Mapped[ProjectIDT] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    orig_id: Mapped[str] = mapped_column(String(255))
    lat: Mapped[Optional[float]] = mapped_column(Float)
    lon: Mapped[Optional[float]] = mapped_column(Float)
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Acquisition(Base):
    __tablename__ = "acquisitions"
    __table_args__ = (UniqueConstraint("project_id", "orig_id", name="uq_acquisitions_project_orig"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    project_id: Mapped[ProjectIDT] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    sample_id: Mapped[int] = mapped_column(BigID, ForeignKey("samples.id", ondelete="CASCADE"), index=True)
    orig_id: Mapped[str] = mapped_column(String(255))
    instrument: Mapped[Optional[str]] = mapped_column(String(64))
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Process(Base):
    __tablename__ = "processes"
    __table_args__ = (UniqueConstraint("project_id", "orig_id", name="uq_processes_project_orig"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    project_id: Mapped[ProjectIDT] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    acquisition_id: Mapped[int] = mapped_column(BigID, ForeignKey("acquisitions.id", ondelete="CASCADE"),
                                                index=True)
    orig_id: Mapped[str] = mapped_column(String(255))
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Object(Base):
    """One imaged organism (or particle) and its current classification."""

    __tablename__ = "objects"
    __table_args__ = (
        UniqueConstraint("project_id", "orig_id", name="uq_objects_project_orig"),
        # Category counts, the model behind the predictions and what its thresholds cover:
        # read from this index alone.
        Index("ix_objects_project_status_taxon_model_score", "project_id", "status", "taxon_id",
              "model_id", "score"),
        Index("ix_objects_project_score", "project_id", "score"),
        # The validation page's first pages: one category by score, or by last change.
        Index("ix_objects_project_taxon_score", "project_id", "taxon_id", "score"),
        Index("ix_objects_project_taxon_annotated", "project_id", "taxon_id", "annotation_date"),
    )

    id: Mapped[ObjectIDT] = mapped_column(BigID, primary_key=True)
    project_id: Mapped[ProjectIDT] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    sample_id: Mapped[Optional[int]] = mapped_column(BigID, ForeignKey("samples.id", ondelete="CASCADE"),
                                                     index=True)
    acquisition_id: Mapped[Optional[int]] = mapped_column(
        BigID, ForeignKey("acquisitions.id", ondelete="CASCADE"))
    process_id: Mapped[Optional[int]] = mapped_column(BigID, ForeignKey("processes.id", ondelete="CASCADE"))
    orig_id: Mapped[str] = mapped_column(String(255))
    lat: Mapped[Optional[float]] = mapped_column(Float)
    lon: Mapped[Optional[float]] = mapped_column(Float)
    # object_date / object_time kept as ISO text (YYYY-MM-DD, HH:MM:SS) as EcoTaxa shows them.
    date: Mapped[Optional[str]] = mapped_column(String(10))
    time: Mapped[Optional[str]] = mapped_column(String(8))
    depth_min: Mapped[Optional[float]] = mapped_column(Float)
    depth_max: Mapped[Optional[float]] = mapped_column(Float)
    # Classification state.
    status: Mapped[str] = mapped_column(String(16), default=ObjectStatus.UNCLASSIFIED.value)
    taxon_id: Mapped[Optional[TaxonIDT]] = mapped_column(ForeignKey("taxa.id"), index=True)
    score: Mapped[Optional[float]] = mapped_column(Float)
    annotator_id: Mapped[Optional[UserIDT]] = mapped_column(ForeignKey("users.id"))
    annotation_date: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    model_id: Mapped[Optional[int]] = mapped_column(ForeignKey("trained_models.id", ondelete="SET NULL"))
    # Top 3 predictions: [[taxon_id, score], ...], best first.
    top_predictions: Mapped[Optional[list[Any]]] = mapped_column()
    # Free object_* columns of the TSV, typed (float for [f], str for [t]).
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)

    images: Mapped[list["Image"]] = relationship(back_populates="object", order_by="Image.rank",
                                                 cascade="all, delete-orphan")
    taxon: Mapped[Optional[Taxon]] = relationship()



# "Highest score first, unscored last" (score DESC NULLS LAST, id) is the page's first order.
# SQLite sorts NULLs first, so a backward scan of the ascending indexes above gives exactly
# that order; PostgreSQL sorts NULLs last, so a backward scan gives NULLS FIRST and it would
# sort every matching row instead. These indexes, in the page's own order, exist on
# PostgreSQL only (SQLite has no NULLS LAST in index definitions). ``applies_to_dialect``
# tells schema comparisons to skip them elsewhere.
Index("ix_objects_project_score_desc", Object.project_id,
      Object.score.desc().nulls_last(), Object.id).ddl_if(dialect="postgresql")
Index("ix_objects_project_taxon_score_desc", Object.project_id, Object.taxon_id,
      Object.score.desc().nulls_last(), Object.id).ddl_if(dialect="postgresql")


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("object_id", "rank", name="uq_images_object_rank"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    object_id: Mapped[ObjectIDT] = mapped_column(BigID, ForeignKey("objects.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(Integer, default=0)
    # Paths relative to the vault root.
    file_path: Mapped[str] = mapped_column(String(512))
    thumb_path: Mapped[Optional[str]] = mapped_column(String(512))
    original_name: Mapped[str] = mapped_column(String(512))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)

    object: Mapped[Object] = relationship(back_populates="images")


class AnnotationHistory(Base):
    """The state an object had before a change, and who made the change when."""

    __tablename__ = "annotation_history"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    object_id: Mapped[ObjectIDT] = mapped_column(BigID, ForeignKey("objects.id", ondelete="CASCADE"),
                                                 index=True)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    changed_by_id: Mapped[Optional[UserIDT]] = mapped_column(ForeignKey("users.id"))
    # Previous state.
    status: Mapped[str] = mapped_column(String(16))
    taxon_id: Mapped[Optional[TaxonIDT]] = mapped_column(ForeignKey("taxa.id"))
    score: Mapped[Optional[float]] = mapped_column(Float)
    annotator_id: Mapped[Optional[UserIDT]] = mapped_column(ForeignKey("users.id"))
    annotation_date: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    model_id: Mapped[Optional[int]] = mapped_column(ForeignKey("trained_models.id", ondelete="SET NULL"))
    # None for a change; "undo" when the change put back an earlier state (see annotation_undo).
    action: Mapped[Optional[str]] = mapped_column(String(16))

    __table_args__ = (Index("ix_annotation_history_changed_by_at", "changed_by_id", "changed_at"),)


class TrainedModel(Base):
    """A fitted classifier in the model registry (files under `models_dir/<id>`)."""

    __tablename__ = "trained_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[ProjectIDT] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(64))
    feature_sets: Mapped[list[Any]] = mapped_column()
    path: Mapped[str] = mapped_column(String(512))
    # Learning-set definition, classifier parameters, medians, class list ...
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by_id: Mapped[Optional[UserIDT]] = mapped_column(ForeignKey("users.id"))


class ImportRun(Base):
    """One import into a project; its row is committed with the imported data.

    An import journal on disk names the run; a run whose row is missing after a
    crash never committed, and its vault files and feature rows are undone.
    """

    __tablename__ = "import_runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[ProjectIDT] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                                   index=True)
    source: Mapped[str] = mapped_column(String(1024))
    user_id: Mapped[Optional[UserIDT]] = mapped_column(ForeignKey("users.id"))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    committed_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ImportedFile(Base):
    """A TSV file already loaded into a project (re-imports skip it)."""

    __tablename__ = "imported_files"
    __table_args__ = (Index("ix_imported_files_project_sha", "project_id", "sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[ProjectIDT] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    run_id: Mapped[str] = mapped_column(ForeignKey("import_runs.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64))
    n_rows: Mapped[int] = mapped_column(Integer, default=0)


class Job(Base):
    """A unit of user-visible work (an import, a training ...), tied to its flow run.

    Jobs outlive their project: deleting (or merging away) a project sets
    ``project_id`` to NULL and keeps ``project_ref``, the id the project had, so
    the record of the deletion and the project's earlier history stay. (SQLite
    may give a deleted project's id to a new project; only ``project_id`` ties
    a job to a live one.)
    """

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[Optional[ProjectIDT]] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL", name="fk_jobs_project_id"))
    project_ref: Mapped[Optional[ProjectIDT]] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[Optional[dict[str, Any]]] = mapped_column()
    error: Mapped[Optional[str]] = mapped_column(Text)
    flow_run_id: Mapped[Optional[str]] = mapped_column(String(64))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    user_id: Mapped[Optional[UserIDT]] = mapped_column(ForeignKey("users.id"))
