"""Bulk project operations: reset, replace, metadata edit, delete, subset, merge."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from ecotaxa_core.annotation import object_history
from ecotaxa_core.db.models import (Acquisition, AnnotationHistory, Image, Object, ObjectStatus,
                                    Process, Project, Role, Sample, Taxon)
from ecotaxa_core.errors import (EcoTaxaError, NotFoundError, ObjectNotFound, PermissionDenied,
                                 ProjectNotFound)
from ecotaxa_core.object_filter import InvalidFilter, ObjectFilter
from ecotaxa_core.project_copy import MergeRefused, merge_projects, subset_project
from ecotaxa_core.project_ops import (delete_objects, delete_project, edit_metadata,
                                      replace_category, reset_to_predicted)
from ecotaxa_core.projects import create_project, set_member
from ecotaxa_core.users import create_user

FEATURES = ["f0", "f1", "f2"]
PRODUCER = {"extractor": "test", "version": 1}


def _taxa(s, tag):
    out = []
    for name in ("alpha", "beta", "gamma"):
        t = Taxon(name=f"{tag}_{name}", display_name=f"{tag}_{name}")
        s.add(t)
        out.append(t)
    s.flush()
    return [t.id for t in out]


def make_project(inst, ndsb, *, title="ops", prefix="o", taxa=None, n=12, sample_ids=("s1", "s2"),
                 free=None):
    """A project of ``n`` objects over 3 categories (every 3rd unvalidated), each with a real
    NDSB image and a feature row; returns (project id, object ids, taxon ids)."""
    images = sorted(ndsb.glob("*/*.jpg"))
    with inst.sessions.begin() as s:
        taxa = taxa or _taxa(s, title)
        p = create_project(s, title)
        p.free_columns = free or {"object": {"area": "f"}}
        samples = []
        for orig in sample_ids:
            sm = Sample(project_id=p.id, orig_id=orig, lat=10.0, lon=20.0, extra={"ship": "x"})
            s.add(sm)
            s.flush()
            acq = Acquisition(project_id=p.id, sample_id=sm.id, orig_id=f"a_{orig}", extra={})
            s.add(acq)
            s.flush()
            proc = Process(project_id=p.id, acquisition_id=acq.id, orig_id=f"p_{orig}", extra={})
            s.add(proc)
            s.flush()
            samples.append((sm.id, acq.id, proc.id))
        ids = []
        for i in range(n):
            sm, acq, proc = samples[i % len(samples)]
            status = ObjectStatus.PREDICTED.value if i % 3 == 2 else ObjectStatus.VALIDATED.value
            o = Object(project_id=p.id, sample_id=sm, acquisition_id=acq, process_id=proc,
                       orig_id=f"{prefix}{i}", status=status, taxon_id=taxa[i % 3], score=0.5,
                       extra={"area": float(i)})
            s.add(o)
            s.flush()
            im = Image(object_id=o.id, rank=0, file_path="", original_name=images[i].name,
                       width=1, height=1)
            s.add(im)
            s.flush()
            im.file_path, im.thumb_path = inst.vault.store(images[i], im.id, 0)
            ids.append(o.id)
        pid = p.id
    values = np.array([[i, i * 2, i * 3] for i in ids], dtype=np.float32)
    inst.features.append(pid, "deep", ids, values, FEATURES, producer=PRODUCER)
    return pid, ids, taxa


def _files(inst, object_ids):
    with inst.sessions() as s:
        rows = s.execute(select(Image.file_path, Image.thumb_path)
                         .where(Image.object_id.in_(object_ids))).all()
    return [inst.vault.path(p) for r in rows for p in r]


def test_reset_and_replace_write_history(instance, admin, ndsb_subset):
    pid, ids, taxa = make_project(instance, ndsb_subset)
    with instance.sessions.begin() as s:
        n = reset_to_predicted(s, pid, admin.id, taxon_ids=[taxa[0]])
    assert n == 4  # objects 0, 3, 6, 9 are of taxa[0], all validated
    with instance.sessions() as s:
        o = s.get(Object, ids[0])
        assert (o.status, o.taxon_id, o.annotator_id) == ("predicted", taxa[0], None)
        hist = object_history(s, ids[0])
        assert hist[0].status == "validated" and hist[0].changed_by_id == admin.id
        assert s.get(Object, ids[1]).status == "validated"
    with instance.sessions.begin() as s:
        n = replace_category(s, pid, taxa[1], taxa[2], admin.id, statuses=["validated"])
    assert n == 4  # 1, 4, 7, 10
    with instance.sessions() as s:
        assert s.get(Object, ids[1]).taxon_id == taxa[2]
        assert s.get(Object, ids[1]).status == "validated"
        assert object_history(s, ids[1])[0].taxon_id == taxa[1]
        assert s.scalar(select(func.count()).select_from(AnnotationHistory)) == 8
    with instance.sessions.begin() as s:
        assert replace_category(s, pid, taxa[2], taxa[0], admin.id) == 8
        assert reset_to_predicted(s, pid, admin.id) == 4  # 1, 4, 7, 10 were still validated


def test_permission_is_checked_and_nothing_changes(instance, admin, ndsb_subset):
    pid, ids, taxa = make_project(instance, ndsb_subset)
    with instance.sessions.begin() as s:
        ann = create_user(s, "ann@x.org", "ann")
        set_member(s, pid, ann.id, Role.ANNOTATOR)
        ann_id = ann.id
    with pytest.raises(PermissionDenied), instance.sessions.begin() as s:
        reset_to_predicted(s, pid, ann_id)
    with pytest.raises(PermissionDenied):
        delete_objects(instance, pid, ann_id, object_ids=ids[:2])
    with pytest.raises(PermissionDenied):
        delete_project(instance, pid, ann_id)
    with pytest.raises(ProjectNotFound):
        delete_project(instance, 987654, admin.id)
    with instance.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Object)
                        .where(Object.status == "validated")) == 8
    assert all(p.exists() for p in _files(instance, ids))


def test_edit_metadata_returns_old_values(instance, admin, ndsb_subset):
    pid, ids, taxa = make_project(instance, ndsb_subset)
    with instance.sessions.begin() as s:
        edit = edit_metadata(s, pid, admin.id, level="sample", orig_ids=["s1"], field="lat",
                             value="45.5")
        assert edit.old_values == [("s1", 10.0)]
        edit2 = edit_metadata(s, pid, admin.id, level="sample", orig_ids=None,
                              field="sample_cruise", value="tara")
        assert edit2.to_dict()["old_values"] == [["s1", None], ["s2", None]]
    with instance.sessions() as s:
        rows = {r.orig_id: r for r in s.scalars(select(Sample).where(Sample.project_id == pid))}
        assert rows["s1"].lat == 45.5 and rows["s2"].lat == 10.0
        assert rows["s2"].extra == {"ship": "x", "cruise": "tara"}
        assert s.get(Project, pid).free_columns["sample"] == {"cruise": "t"}
    with pytest.raises(Exception, match="outside"), instance.sessions.begin() as s:
        edit_metadata(s, pid, admin.id, level="sample", orig_ids=None, field="lat", value=95)
    with pytest.raises(NotFoundError, match="nope"), instance.sessions.begin() as s:
        edit_metadata(s, pid, admin.id, level="acquisition", orig_ids=["a_s1", "nope"],
                      field="net", value=1.0)
    with instance.sessions() as s:
        assert all("net" not in a.extra for a in s.scalars(select(Acquisition)))


def test_delete_objects_and_project(instance, admin, ndsb_subset):
    pid, ids, taxa = make_project(instance, ndsb_subset)
    with instance.sessions.begin() as s:
        reset_to_predicted(s, pid, admin.id)  # some history to cascade
    gone = _files(instance, ids[:3])
    kept = _files(instance, ids[3:])
    with pytest.raises(ObjectNotFound):
        delete_objects(instance, pid, admin.id, object_ids=[ids[0], 99999])
    assert all(p.exists() for p in gone)
    assert delete_objects(instance, pid, admin.id, object_ids=ids[:3]) == 3
    assert not any(p.exists() for p in gone) and all(p.exists() for p in kept)
    assert sorted(instance.features.object_ids(pid, "deep")) == ids[3:]
    m = instance.features.read(pid, "deep", ids[3:4])
    assert m.values[0].tolist() == [ids[3], ids[3] * 2, ids[3] * 3]
    assert instance.features.attrs(pid, "deep") == PRODUCER
    with instance.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Object)) == len(ids) - 3
        assert s.scalar(select(func.count()).select_from(AnnotationHistory)
                        .where(AnnotationHistory.object_id.in_(ids[:3]))) == 0
    out = delete_project(instance, pid, admin.id)
    assert out["n_objects"] == len(ids) - 3
    assert not any(p.exists() for p in kept)
    assert instance.features.feature_sets(pid) == []
    with instance.sessions() as s:
        assert s.get(Project, pid) is None
        for model in (Object, Image, Sample, Acquisition, Process, AnnotationHistory):
            assert s.scalar(select(func.count()).select_from(model)) == 0


def test_subset_by_fraction_is_stable_and_complete(instance, admin, ndsb_subset):
    pid, ids, taxa = make_project(instance, ndsb_subset, n=24)
    new = subset_project(instance, pid, admin.id, title="half", fraction_per_category=0.5, seed=3)
    again = subset_project(instance, pid, admin.id, title="half2", fraction_per_category=0.5,
                           seed=3)
    with instance.sessions() as s:
        def content(project):
            return sorted(s.execute(select(Object.orig_id, Object.taxon_id, Object.status,
                                           Object.extra).where(Object.project_id == project)))
        rows = content(new)
        assert rows == content(again)
        assert len(rows) == 12
        for t in taxa:
            assert sum(r.taxon_id == t for r in rows) == 4
        new_objs = list(s.scalars(select(Object).where(Object.project_id == new)))
        assert {o.sample_id for o in new_objs} <= set(s.scalars(
            select(Sample.id).where(Sample.project_id == new)))
        assert s.get(Project, new).free_columns == {"object": {"area": "f"}}
        old_by_orig = {o.orig_id: o for o in s.scalars(select(Object)
                                                       .where(Object.project_id == pid))}
        for o in new_objs:
            old = old_by_orig[o.orig_id]
            assert o.images[0].id != old.images[0].id
            assert instance.vault.path(o.images[0].file_path).read_bytes() == \
                instance.vault.path(old.images[0].file_path).read_bytes()
            row = instance.features.read(new, "deep", [o.id]).values[0].tolist()
            assert row == [old.id, old.id * 2, old.id * 3]
        member_ids = [o.id for o in new_objs]
    assert len(instance.features.object_ids(new, "deep")) == 12
    other = subset_project(instance, pid, admin.id, title="other", fraction_per_category=0.5,
                           seed=4)
    with instance.sessions() as s:
        assert content(other) != rows
    picked = subset_project(instance, pid, admin.id, title="picked", object_ids=ids[:2])
    with instance.sessions() as s:
        assert sorted(s.scalars(select(Object.orig_id).where(Object.project_id == picked))) \
            == ["o0", "o1"]
    with pytest.raises(ObjectNotFound):
        subset_project(instance, pid, admin.id, title="bad", object_ids=[ids[0], member_ids[0]])
    with instance.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Project).where(Project.title == "bad")) == 0


def test_merge_projects(instance, admin, ndsb_subset):
    t_id, t_ids, taxa = make_project(instance, ndsb_subset, title="target", n=6)
    s_id, s_ids, _ = make_project(instance, ndsb_subset, title="source", prefix="src", n=6,
                                  taxa=taxa, sample_ids=("s2", "s3"),
                                  free={"object": {"area": "f", "esd": "f"}})
    clash_id, _, _ = make_project(instance, ndsb_subset, title="clash", n=2, taxa=taxa)
    with pytest.raises(MergeRefused) as err:
        merge_projects(instance, t_id, clash_id, admin.id)
    assert err.value.clashes == ["o0", "o1"]
    src_files = _files(instance, s_ids)
    out = merge_projects(instance, t_id, s_id, admin.id)
    assert out["n_objects"] == 6 and out["n_samples_matched"] == 1 and out["n_samples_moved"] == 1
    assert out["n_feature_rows"] == 6
    with instance.sessions() as s:
        assert s.get(Project, s_id) is None
        objs = list(s.scalars(select(Object).where(Object.project_id == t_id)))
        assert len(objs) == 12
        samples = {sm.id: sm.orig_id for sm in s.scalars(select(Sample)
                                                         .where(Sample.project_id == t_id))}
        assert sorted(samples.values()) == ["s1", "s2", "s3"]
        assert all(o.sample_id in samples for o in objs)
        acqs = set(s.scalars(select(Acquisition.id).where(Acquisition.project_id == t_id)))
        assert all(o.acquisition_id in acqs for o in objs)
        assert s.get(Project, t_id).free_columns == {"object": {"area": "f", "esd": "f"}}
    assert all(p.exists() for p in src_files)
    assert sorted(instance.features.object_ids(t_id, "deep")) == sorted(t_ids + s_ids)
    # a source whose feature set differs is refused before anything is written
    odd_id, odd_ids, _ = make_project(instance, ndsb_subset, title="odd", prefix="odd", n=2,
                                      taxa=taxa)
    instance.features.append(odd_id, "morpho", odd_ids, np.ones((2, 1)), ["x"])
    instance.features.append(t_id, "morpho", t_ids[:1], np.ones((1, 1)), ["y"])
    with pytest.raises(MergeRefused, match="morpho"):
        merge_projects(instance, t_id, odd_id, admin.id)
    with instance.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Object)
                        .where(Object.project_id == odd_id)) == 2
    assert instance.features.n_rows(t_id, "deep") == 12


def _orig_ids(inst, project_id):
    with inst.sessions() as s:
        return sorted(s.scalars(select(Object.orig_id).where(Object.project_id == project_id)),
                      key=lambda o: int(o.lstrip("osrc")))


def test_filtered_reset_and_replace(instance, admin, ndsb_subset):
    pid, ids, taxa = make_project(instance, ndsb_subset)
    # Objects i: sample s1 when i is even, predicted when i % 3 == 2, taxon taxa[i % 3], area i.
    with instance.sessions.begin() as s:
        n = reset_to_predicted(s, pid, admin.id, object_filter=ObjectFilter(
            samples=["s1"], conditions=["area<6"]))
    assert n == 2  # 0 and 4; 2 is predicted already
    with instance.sessions() as s:
        assert [s.get(Object, ids[i]).status for i in (0, 4, 6)] == \
            ["predicted", "predicted", "validated"]
        assert len(object_history(s, ids[0])) == 1 and object_history(s, ids[6]) == []
    with instance.sessions.begin() as s:
        n = replace_category(s, pid, taxa[1], taxa[2], admin.id, object_filter=ObjectFilter(
            statuses=["validated"], orig_id_prefix="o1"))
    assert n == 2  # o1 and o10 (o4, o7 do not start so; o4 was reset)
    with instance.sessions() as s:
        assert [s.get(Object, ids[i]).taxon_id for i in (1, 10, 7)] == [taxa[2], taxa[2], taxa[1]]
    with instance.sessions.begin() as s:  # the replacement made the admin their annotator
        assert reset_to_predicted(s, pid, admin.id, object_filter=ObjectFilter(
            annotators=[admin.id])) == 2
    with pytest.raises(InvalidFilter, match="esd"), instance.sessions.begin() as s:
        replace_category(s, pid, taxa[0], taxa[1], admin.id,
                         object_filter=ObjectFilter(conditions=["esd>1"]))
    with instance.sessions() as s:
        assert s.scalar(select(func.count()).select_from(AnnotationHistory)) == 6


def test_delete_objects_by_filter(instance, admin, ndsb_subset):
    pid, ids, _ = make_project(instance, ndsb_subset)
    predicted = [ids[i] for i in (2, 5, 8, 11)]
    gone, kept = _files(instance, predicted), _files(instance, sorted(set(ids) - set(predicted)))
    for kwargs, message in (({"object_filter": ObjectFilter()}, "empty filter"),
                            ({}, "object ids or a filter"),
                            ({"object_ids": ids[:1],
                              "object_filter": ObjectFilter(statuses="predicted")},
                             "object ids or a filter")):
        with pytest.raises(EcoTaxaError, match=message):
            delete_objects(instance, pid, admin.id, **kwargs)
    with pytest.raises(InvalidFilter, match="s9"):
        delete_objects(instance, pid, admin.id, object_filter=ObjectFilter(samples=["s1", "s9"]))
    assert all(p.exists() for p in gone)
    assert delete_objects(instance, pid, admin.id,
                          object_filter=ObjectFilter(statuses=["predicted"])) == 4
    assert not any(p.exists() for p in gone) and all(p.exists() for p in kept)
    assert sorted(instance.features.object_ids(pid, "deep")) == sorted(set(ids) - set(predicted))
    assert _orig_ids(instance, pid) == [f"o{i}" for i in range(12) if i % 3 != 2]


def test_subset_by_filter_then_fraction(instance, admin, ndsb_subset):
    pid, ids, taxa = make_project(instance, ndsb_subset, n=24)
    kept = ObjectFilter(samples=["s2"], statuses=["validated"])  # odd i with i % 3 != 2
    whole = subset_project(instance, pid, admin.id, title="s2 validated", object_filter=kept)
    assert _orig_ids(instance, whole) == ["o1", "o3", "o7", "o9", "o13", "o15", "o19", "o21"]
    with instance.sessions() as s:
        assert sorted(s.scalars(select(Sample.orig_id).where(Sample.project_id == whole))) \
            == ["s2"]
        assert s.scalars(select(Acquisition.orig_id)
                         .where(Acquisition.project_id == whole)).all() == ["a_s2"]
        copies = list(s.scalars(select(Object).where(Object.project_id == whole)))
        old = {o.orig_id: o for o in s.scalars(select(Object).where(Object.project_id == pid))}
        for o in copies:
            src = old[o.orig_id]
            assert (o.taxon_id, o.status, o.extra, o.score) == \
                (src.taxon_id, src.status, src.extra, src.score)
            assert instance.vault.path(o.images[0].file_path).read_bytes() == \
                instance.vault.path(src.images[0].file_path).read_bytes()
            assert instance.features.read(whole, "deep", [o.id]).values[0].tolist() == \
                [src.id, src.id * 2, src.id * 3]
    half = subset_project(instance, pid, admin.id, title="half", object_filter=kept,
                          fraction_per_category=0.5, seed=1)
    chosen = _orig_ids(instance, half)
    assert len(chosen) == 4 and set(chosen) <= set(_orig_ids(instance, whole))
    with instance.sessions() as s:
        by_taxon = sorted(s.scalars(select(Object.taxon_id).where(Object.project_id == half)))
    assert by_taxon == sorted([taxa[0], taxa[0], taxa[1], taxa[1]])
    for kwargs, error, message in (
            ({"object_filter": kept, "object_ids": ids[:1]}, EcoTaxaError, "not both"),
            ({"object_filter": ObjectFilter(samples=["s1"], conditions=["area>100"])},
             EcoTaxaError, "keeps none"),
            ({"fraction_per_category": 1.5}, EcoTaxaError, r"in \(0, 1\]"),
            ({"object_filter": ObjectFilter(instruments=["uvp5"])}, InvalidFilter, "uvp5")):
        with pytest.raises(error, match=message):
            subset_project(instance, pid, admin.id, title="refused", **kwargs)
    with instance.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Project)
                        .where(Project.title == "refused")) == 0


def test_subset_copies_in_batches(instance, admin):
    """Thousands of objects take a few dozen statements, not several per object."""
    from sqlalchemy import event, insert

    n = 2500
    with instance.sessions.begin() as s:
        taxa = _taxa(s, "batch")
        p = create_project(s, "big")
        p.free_columns = {"object": {"area": "f"}}
        sample = Sample(project_id=p.id, orig_id="s", extra={"ship": "x"})
        s.add(sample)
        s.flush()
        s.execute(insert(Object), [dict(project_id=p.id, sample_id=sample.id, orig_id=f"b{i}",
                                        status="validated", taxon_id=taxa[i % 3],
                                        extra={"area": float(i)}) for i in range(n)])
        s.flush()
        obj_ids = list(s.scalars(select(Object.id).where(Object.project_id == p.id)))
        s.execute(insert(Image), [dict(object_id=oid, rank=0, file_path="images/x.jpg",
                                       original_name="x.jpg", width=1, height=1)
                                  for oid in obj_ids])
        pid = p.id
    (instance.vault.root / "images").mkdir(parents=True, exist_ok=True)
    (instance.vault.root / "images" / "x.jpg").write_bytes(b"not really a jpeg")
    statements = []

    def listener(_conn, _cursor, statement, *_):
        statements.append(statement)

    event.listen(instance.engine, "before_cursor_execute", listener)
    try:
        new = subset_project(instance, pid, admin.id, title="copy",
                             object_filter=ObjectFilter(conditions=["area>=500"]))
    finally:
        event.remove(instance.engine, "before_cursor_execute", listener)
    assert len(statements) < 60
    with instance.sessions() as s:
        copies = s.execute(select(Object.orig_id, Object.extra, Object.sample_id)
                           .where(Object.project_id == new)).all()
        assert len(copies) == n - 500
        assert {o.orig_id: o.extra["area"] for o in copies} == \
            {f"b{i}": float(i) for i in range(500, n)}
        (new_sample,) = s.scalars(select(Sample).where(Sample.project_id == new))
        assert {o.sample_id for o in copies} == {new_sample.id}
        paths = s.scalars(select(Image.file_path).join(Object)
                          .where(Object.project_id == new)).all()
        assert len(set(paths)) == n - 500
        assert all(instance.vault.path(p).read_bytes() == b"not really a jpeg" for p in paths)


def test_subset_that_fails_leaves_nothing(instance, admin, ndsb_subset):
    pid, ids, _ = make_project(instance, ndsb_subset, n=6)
    _files(instance, ids[4:5])[0].unlink()  # one source image is lost
    before = sorted(p for p in instance.vault.root.rglob("*") if p.is_file())
    with pytest.raises(FileNotFoundError):
        subset_project(instance, pid, admin.id, title="broken",
                       object_filter=ObjectFilter(statuses=["validated"]))
    assert sorted(p for p in instance.vault.root.rglob("*") if p.is_file()) == before
    with instance.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Project)
                        .where(Project.title == "broken")) == 0
        assert s.scalar(select(func.count()).select_from(Object)) == 6
    assert [p.name for p in instance.features.root.iterdir()] == [f"project_{pid}"]


def _set(inst, model, project_id, orig_id, **values):
    with inst.sessions.begin() as s:
        row = s.scalars(select(model).where(model.project_id == project_id,
                                            model.orig_id == orig_id)).one()
        for key, value in values.items():
            setattr(row, key, value)


def test_merge_refuses_samples_with_other_metadata(instance, admin, ndsb_subset):
    t_id, _, taxa = make_project(instance, ndsb_subset, title="target", n=4)
    s_id, _, _ = make_project(instance, ndsb_subset, title="source", prefix="src", n=4,
                              taxa=taxa, sample_ids=("s2", "s3"))
    with instance.sessions() as s:
        s3 = s.scalars(select(Sample.id).where(Sample.project_id == s_id,
                                               Sample.orig_id == "s3")).one()
    _set(instance, Sample, s_id, "s2", lat=11.0, extra={"ship": "y", "net": None})
    _set(instance, Acquisition, s_id, "a_s2", instrument="uvp6", sample_id=s3)
    _set(instance, Process, s_id, "p_s2", extra={"soft": "zooprocess"})
    with pytest.raises(MergeRefused) as err:
        merge_projects(instance, t_id, s_id, admin.id)
    assert err.value.clashes == [
        "sample 's2': lat 10.0 vs 11.0, ship 'x' vs 'y'",
        "acquisition 'a_s2': instrument None vs 'uvp6', sample 's2' vs 's3'",
        "process 'p_s2': soft None vs 'zooprocess'"]
    assert str(err.value).startswith("3 sample/acquisition/process orig_id(s) exist in both "
                                     f"projects with different metadata (project {t_id} vs "
                                     f"project {s_id}): sample 's2'")
    # Many clashes: the list is capped, the message counts them all.
    with instance.sessions.begin() as s:
        for project, lat in ((t_id, 1.0), (s_id, 2.0)):
            s.add_all(Sample(project_id=project, orig_id=f"x{i}", lat=lat, extra={})
                      for i in range(120))
    with pytest.raises(MergeRefused) as err:
        merge_projects(instance, t_id, s_id, admin.id)
    assert len(err.value.clashes) == 100
    assert str(err.value).startswith("123 sample/acquisition/process")
    assert str(err.value).endswith("... and 113 more")
    with instance.sessions.begin() as s:
        s.execute(Sample.__table__.delete().where(Sample.orig_id.like("x%")))
    assert _orig_ids(instance, s_id) == ["src0", "src1", "src2", "src3"]
    assert instance.features.n_rows(t_id, "deep") == 4
    # Once they agree (a missing free field equals an empty one), the merge goes through.
    with instance.sessions() as s:
        s2 = s.scalars(select(Sample.id).where(Sample.project_id == s_id,
                                               Sample.orig_id == "s2")).one()
    _set(instance, Sample, s_id, "s2", lat=10.0, extra={"ship": "x", "net": None})
    _set(instance, Acquisition, s_id, "a_s2", instrument=None, sample_id=s2)
    _set(instance, Process, s_id, "p_s2", extra={})
    out = merge_projects(instance, t_id, s_id, admin.id)
    assert (out["n_samples_matched"], out["n_samples_moved"], out["n_objects"]) == (1, 1, 4)


def test_project_ops_flows(sqlite_instance, prefect_server, monkeypatch, ndsb_subset):
    from ecotaxa_core.db.models import Job
    from flows.project_ops import (delete_objects_flow, delete_project_flow, edit_metadata_flow,
                                   merge_flow, replace_category_flow, reset_to_predicted_flow,
                                   subset_flow)

    inst = sqlite_instance
    monkeypatch.setenv("ECOTAXA_HOME", str(inst.settings.home))
    monkeypatch.setenv("ECOTAXA_DATABASE_URL", inst.settings.database_url)
    pid, ids, taxa = make_project(inst, ndsb_subset, n=6)
    assert reset_to_predicted_flow(pid) == {"project_id": pid, "n_changed": 4}
    assert replace_category_flow(pid, taxa[0], taxa[1])["n_changed"] == 2
    edit = edit_metadata_flow(pid, "sample", "lon", -3.5, orig_ids=["s2"])
    assert edit["old_values"] == [["s2", 20.0]]
    sub = subset_flow(pid, "sub", fraction_per_category=0.5)
    assert sub["n_objects"] == 3
    with inst.sessions() as s:
        job = s.scalars(select(Job).where(Job.kind == "project_edit_metadata")).one()
        assert (job.state, job.result["old_values"]) == ("done", [["s2", 20.0]])
    assert delete_objects_flow(pid, ids[:1]) == {"project_id": pid, "n_deleted": 1}
    with inst.sessions.begin() as s:
        s.execute(Object.__table__.update().where(Object.project_id == sub["new_project_id"])
                  .values(orig_id=Object.orig_id + "_copy"))
    merged = merge_flow(pid, sub["new_project_id"])
    assert merged["n_objects"] == 3
    deleted = delete_project_flow(pid)
    assert (deleted["n_objects"], deleted["title"]) == (8, "ops")
    with pytest.raises(ProjectNotFound):
        delete_project_flow(pid)
    with inst.sessions() as s:
        jobs = [(j.kind, j.state, j.project_id, j.project_ref)
                for j in s.scalars(select(Job).order_by(Job.id))]
        assert s.scalar(select(func.count()).select_from(Object)) == 0
    # Every job outlives the projects it was about, the deletion's own record included.
    assert jobs == [("project_reset", "done", None, pid),
                    ("project_replace_category", "done", None, pid),
                    ("project_edit_metadata", "done", None, pid),
                    ("project_subset", "done", None, pid),
                    ("project_delete_objects", "done", None, pid),
                    ("project_merge", "done", None, pid),
                    ("project_delete", "done", None, pid),
                    ("project_delete", "failed", None, pid)]
    with inst.sessions() as s:
        assert s.scalars(select(Job.result).where(Job.kind == "project_delete",
                                                  Job.state == "done")).one()["title"] == "ops"


def test_operations_report_progress_and_a_raising_callback_cancels(instance, admin):
    """Batches are reported as they are done; a progress callback that raises (a user who
    cancels) aborts the whole operation: nothing changed, no history written."""
    from sqlalchemy import insert

    from ecotaxa_core.project_ops import reset_to_predicted

    n = 2500
    with instance.sessions.begin() as s:
        taxa = _taxa(s, "progress")
        pid = create_project(s, "progress").id
        s.execute(insert(Object), [dict(project_id=pid, orig_id=f"p{i}", status="validated",
                                        taxon_id=taxa[i % 3]) for i in range(n)])
        obj_ids = list(s.scalars(select(Object.id).where(Object.project_id == pid)))
        s.execute(insert(Image), [dict(object_id=oid, rank=0, file_path="images/p.jpg",
                                       original_name="p.jpg", width=1, height=1)
                                  for oid in obj_ids])
    (instance.vault.root / "images").mkdir(parents=True, exist_ok=True)
    (instance.vault.root / "images" / "p.jpg").write_bytes(b"jpeg")

    def n_history():
        with instance.sessions() as s:
            return s.scalar(select(func.count()).select_from(AnnotationHistory))

    class Cancelled(Exception):
        pass

    def cancel_at(limit):
        def progress(what, done, total):
            if done >= limit:
                raise Cancelled(what)
        return progress

    with pytest.raises(Cancelled):
        with instance.sessions.begin() as s:
            reset_to_predicted(s, pid, admin.id, progress=cancel_at(2000))
    with instance.sessions() as s:
        assert set(s.scalars(select(Object.status).where(Object.project_id == pid))) == {
            "validated"}
    assert n_history() == 0

    seen = []
    with instance.sessions.begin() as s:
        assert reset_to_predicted(s, pid, admin.id,
                                  progress=lambda *a: seen.append(a)) == n
    assert seen == [("objects", 0, n), ("objects", 1000, n), ("objects", 2000, n),
                    ("objects", n, n)]

    seen = []
    new = subset_project(instance, pid, admin.id, title="copy", object_ids=obj_ids,
                         progress=lambda *a: seen.append(a))
    assert seen[0] == ("objects", 0, n) and ("objects", n, n) in seen
    assert [d for w, d, _ in seen if w == "objects' images"] == [0, 1000, 2000, n]
    with pytest.raises(Cancelled):
        delete_objects(instance, new, admin.id, object_filter=ObjectFilter(statuses=["predicted"]),
                       progress=cancel_at(1000))
    with instance.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Object)
                        .where(Object.project_id == new)) == n
