"""Pending objects, chunk computation, PCA-50 and the features flow end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from ecotaxa_core.db.models import Image, Job, Object
from ecotaxa_core.errors import ProjectNotFound
from ecotaxa_core.features import (UnknownExtractor, compute_chunk, get_extractor,
                                   pending_objects, refit_pca)
from ecotaxa_core.features.pca import DEEP_SET, PCA_SET, fit_pca
from ecotaxa_core.features.pipeline import (append_chunk, cached_extractor, check_producer,
                                            split_chunks)
from ecotaxa_core.projects import create_project
from ecotaxa_core.store.feature_store import FeatureSetMismatch


# -- test data: objects made through the ORM and the vault -------------------------
def add_objects(inst, project_id: int, image_paths: list[Path]) -> list[int]:
    """One Object and its rank-0 Image per file, the file stored in the vault."""
    stored: list[str] = []
    try:
        with inst.sessions.begin() as s:
            ids = []
            for path in image_paths:
                with PILImage.open(path) as im:
                    width, height = im.size
                obj = Object(project_id=project_id, orig_id=f"{path.parent.name}/{path.stem}",
                             status="unclassified", extra={})
                image = Image(rank=0, file_path="", original_name=path.name, width=width,
                              height=height)
                obj.images.append(image)
                s.add(obj)
                s.flush()
                image.file_path, image.thumb_path = inst.vault.store(path, image.id, 0)
                stored += [image.file_path, image.thumb_path]
                ids.append(obj.id)
            return ids
    except BaseException:
        inst.vault.remove(*stored)
        raise


def point_flows_at(monkeypatch, inst, **settings: str) -> None:
    """Make flows run in this process use ``inst`` and the ``ECOTAXA_*`` ``settings``
    (an embedded Dask cluster, whatever the environment names)."""
    env = {"ECOTAXA_HOME": str(inst.settings.home),
           "ECOTAXA_DATABASE_URL": inst.settings.database_url,
           **{f"ECOTAXA_{key.upper()}": value for key, value in settings.items()}}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ECOTAXA_DASK_SCHEDULER_ADDRESS", raising=False)


def make_project(inst, image_paths: list[Path], title: str = "features") -> tuple[int, list[int]]:
    with inst.sessions.begin() as s:
        project_id = create_project(s, title, instrument="ISIIS").id
    return project_id, add_objects(inst, project_id, image_paths)


def ndsb_images(ndsb_subset: Path, per_class: int, skip: int = 0, n_classes: int = 4) -> list[Path]:
    classes = sorted(p for p in ndsb_subset.iterdir() if p.is_dir())[:n_classes]
    return [p for c in classes for p in sorted(c.glob("*.jpg"))[skip:skip + per_class]]


# -- core pieces --------------------------------------------------------------------
def test_pending_objects_are_those_without_a_row(instance, ndsb_subset):
    project_id, ids = make_project(instance, ndsb_images(ndsb_subset, 1, n_classes=3))
    with instance.sessions.begin() as s:  # an object without any image: nothing to compute
        s.add(Object(project_id=project_id, orig_id="no-image", status="unclassified", extra={}))
    pending_ids, paths = pending_objects(instance, project_id, "morpho")
    assert pending_ids.tolist() == sorted(ids)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in paths)
    with instance.sessions() as s:
        rel = s.scalar(select(Image.file_path).where(Image.object_id == ids[1]))
    assert paths[ids.index(ids[1])] == str(instance.vault.path(rel))

    extractor = get_extractor("morpho")
    rows = compute_chunk("morpho", {}, paths[:2])
    assert append_chunk(instance, project_id, extractor, pending_ids[:2], rows) == 2
    assert append_chunk(instance, project_id, extractor, pending_ids[:2], rows) == 0
    pending_ids, paths = pending_objects(instance, project_id, "morpho")
    assert pending_ids.tolist() == sorted(ids)[2:] and len(paths) == 1
    with pytest.raises(ProjectNotFound):
        pending_objects(instance, 9999, "morpho")


def test_chunks_cover_everything_once():
    chunks = split_chunks(10, 4)
    assert [list(range(10))[c] for c in chunks] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert split_chunks(0, 4) == []
    with pytest.raises(ValueError):
        split_chunks(3, 0)


def test_extractor_is_built_once_per_process_and_settings():
    a = cached_extractor("deep_effnetlite0", {"input_size": 96, "batch_size": 8})
    b = cached_extractor("deep_effnetlite0", {"batch_size": 8, "input_size": 96})
    c = cached_extractor("deep_effnetlite0", {"input_size": 64, "batch_size": 8})
    assert a is b and a is not c
    with pytest.raises(UnknownExtractor, match="no feature extractor named 'sift'"):
        compute_chunk("sift", {}, [])


def test_other_producer_is_refused_before_computing(sqlite_instance, ndsb_subset):
    inst = sqlite_instance
    project_id, ids = make_project(inst, ndsb_images(ndsb_subset, 1, n_classes=2))
    _, paths = pending_objects(inst, project_id, "morpho")
    append_chunk(inst, project_id, get_extractor("morpho"), np.array(ids),
                 compute_chunk("morpho", {}, paths))
    check_producer(inst, project_id, get_extractor("morpho"))
    with pytest.raises(FeatureSetMismatch, match="bottom_crop"):
        check_producer(inst, project_id, get_extractor("morpho", bottom_crop=31))


def _write_deep_rows(inst, project_id, ids, values):
    names = [f"f{i}" for i in range(values.shape[1])]
    return inst.features.append(project_id, DEEP_SET, ids, values, names, {"name": DEEP_SET})


def test_pca_has_at_most_as_many_components_as_objects(sqlite_instance):
    store = sqlite_instance.features
    rng = np.random.default_rng(1)
    values = rng.normal(size=(30, 64)).astype(np.float32)
    _write_deep_rows(sqlite_instance, 1, np.arange(100, 130), values)
    refit = refit_pca(store, 1)
    assert (refit.n_samples, refit.n_components) == (30, 30)
    reduced = store.read(1, PCA_SET)
    assert reduced.feature_names[0] == "pc01" and reduced.n_features == 30
    expected = fit_pca(values).transform(values)
    order = np.argsort(reduced.object_ids)
    np.testing.assert_allclose(reduced.values[order], expected, atol=1e-3)

    more = rng.normal(size=(60, 64)).astype(np.float32)
    _write_deep_rows(sqlite_instance, 1, np.arange(200, 260), more)
    refit = refit_pca(store, 1)
    assert (refit.n_samples, refit.n_components) == (90, 50)
    assert store.n_rows(1, PCA_SET) == 90
    assert store.attrs(1, PCA_SET)["settings"]["n_components"] == 50
    assert 0 < refit.explained_variance < 1


def test_pca_of_a_single_object_and_of_none(sqlite_instance):
    store = sqlite_instance.features
    assert refit_pca(store, 2).n_samples == 0 and not store.exists(2, PCA_SET)
    _write_deep_rows(sqlite_instance, 2, [7], np.ones((1, 16), dtype=np.float32))
    assert refit_pca(store, 2).n_components == 1
    assert store.read(2, PCA_SET).values.tolist() == [[0.0]]


# -- the flow, with the real Prefect and a real Dask LocalCluster ------------------
@pytest.mark.slow
def test_features_flow_computes_only_new_objects(sqlite_instance, ndsb_subset, prefect_server,
                                                 monkeypatch):
    from flows.features import features_flow

    inst = sqlite_instance
    point_flows_at(monkeypatch, inst, dask_n_workers="1", chunk_size="6",
                   deep_input_size="128")
    first = ndsb_images(ndsb_subset, 4)  # 16 objects, 3 chunks
    project_id, ids = make_project(inst, first)

    summary = features_flow(project_id=project_id)
    sets = summary["feature_sets"]
    assert sets["morpho"]["objects"] == sets[DEEP_SET]["objects"] == 16
    assert sets["morpho"]["chunks"] == sets[DEEP_SET]["chunks"] == 3
    assert sets[DEEP_SET]["images_per_s"] > 0
    assert (sets[PCA_SET]["objects"], sets[PCA_SET]["n_components"]) == (16, 16)

    store = inst.features
    # Every row belongs to its own object, whatever order the chunks completed in.
    morpho = store.read(project_id, "morpho", ids)
    np.testing.assert_allclose(morpho.values, get_extractor("morpho").extract(first), rtol=1e-6)
    deep = store.read(project_id, DEEP_SET, ids[:3])
    # The instance's default: the mean over the 4 flips.
    direct = get_extractor(DEEP_SET, input_size=128, views=4).extract(first[:3])
    np.testing.assert_allclose(deep.values, direct, atol=2e-4, rtol=1e-3)

    added = add_objects(inst, project_id, ndsb_images(ndsb_subset, 2, skip=10))  # 8 more
    summary = features_flow(project_id=project_id, feature_sets=["morpho", DEEP_SET])
    sets = summary["feature_sets"]
    assert sets["morpho"]["objects"] == sets[DEEP_SET]["objects"] == 8
    assert sets[DEEP_SET]["chunks"] == 2  # balanced over the worker's two threads
    assert (sets[PCA_SET]["objects"], sets[PCA_SET]["n_components"]) == (24, 24)
    for name in ("morpho", DEEP_SET, PCA_SET):
        stored = store.object_ids(project_id, name)
        assert len(stored) == 24 and sorted(stored.tolist()) == sorted(ids + added), name

    summary = features_flow(project_id=project_id)
    assert summary["feature_sets"]["morpho"]["objects"] == 0
    assert summary["feature_sets"][DEEP_SET]["objects"] == 0
    assert PCA_SET not in summary["feature_sets"]  # deep vectors unchanged: no refit
    with inst.sessions() as s:
        jobs = s.scalars(select(Job).where(Job.kind == "features").order_by(Job.id)).all()
    assert [j.state for j in jobs] == ["done"] * 3 and jobs[-1].result == summary

    # The first run published each feature set's progress as a Prefect artifact.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[jobs[0].flow_run_id])))
    finals = {a.description.split(" (1")[0] for a in artifacts
              if a.type == "progress" and a.data == 100.0}
    assert finals == {"16 of 16 objects (morpho)", f"16 of 16 objects ({DEEP_SET})"}
    assert {a.key for a in artifacts if a.type == "progress"} == {"features-progress"}


def test_features_flow_refuses_unknown_sets(prefect_server):
    from flows.features import features_flow

    with pytest.raises(UnknownExtractor, match="hog"):
        features_flow(project_id=1, feature_sets=["morpho", "hog"])
