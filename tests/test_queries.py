"""Object listings for the dashboard, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from ecotaxa_core.annotation import set_dubious, validate_objects
from ecotaxa_core.db.models import Image, Object, Role, Taxon
from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.object_filter import InvalidFilter, ObjectFilter
from ecotaxa_core.projects import create_project, set_member
from ecotaxa_core.queries import (
    CategoryCount,
    ObjectRow,
    category_counts,
    current_states,
    list_objects,
    projects_for_user,
    taxa_for_picker,
)
from ecotaxa_core.taxonomy import get_or_create_taxon
from ecotaxa_core.users import create_user

# orig_id, status, taxon (key), score
OBJECTS = [
    ("o1", "predicted", "cope", 0.91),
    ("o2", "predicted", "cope", 0.40),
    ("o3", "predicted", "diat", 0.75),
    ("o4", "unclassified", None, None),
    ("o5", "predicted", "diat", 0.99),
    ("o6", "unclassified", None, None),
    ("o7", "predicted", "det", 0.55),
    ("o8", "predicted", "cope", 0.10),
]


@pytest.fixture
def project(instance, admin):
    """A project with 8 objects (6 predicted, 2 unclassified) and one other project's object."""
    with instance.sessions.begin() as s:
        root = get_or_create_taxon(s, "Biota")
        taxa = {"cope": get_or_create_taxon(s, "Copepoda", root),
                "diat": get_or_create_taxon(s, "Bacillariophyta", root),
                "det": get_or_create_taxon(s, "detritus")}
        prj = create_project(s, "queries")
        other = create_project(s, "other")
        ids = {}
        for orig, status, tx, score in OBJECTS:
            obj = Object(project_id=prj.id, orig_id=orig, status=status,
                         taxon_id=taxa[tx].id if tx else None, score=score)
            obj.images = [Image(rank=1, file_path=f"images/{orig}_1.jpg", thumb_path=f"thumbs/{orig}_1.jpg",
                                original_name=f"{orig}_b.jpg", width=10, height=10),
                          Image(rank=0, file_path=f"images/{orig}_0.jpg", thumb_path=f"thumbs/{orig}_0.jpg",
                                original_name=f"{orig}.jpg", width=10, height=10)]
            s.add(obj)
            s.flush()
            ids[orig] = obj.id
        s.add(Object(project_id=other.id, orig_id="x1", status="predicted", taxon_id=taxa["cope"].id,
                     score=0.95))
        return {"id": prj.id, "other": other.id, "ids": ids,
                "taxa": {k: t.id for k, t in taxa.items()}, "root": root.id}


def _origs(rows: list[ObjectRow]) -> list[str]:
    return [r.orig_id for r in rows]


def test_sorted_by_score_both_ways_with_unscored_last(instance, project):
    with instance.sessions() as s:
        desc, total = list_objects(s, project["id"], sort="score_desc")
        asc, _ = list_objects(s, project["id"], sort="score_asc")
        by_orig, _ = list_objects(s, project["id"], sort="orig_id")
        by_id, _ = list_objects(s, project["id"], sort="id")
    assert total == 8
    assert _origs(desc) == ["o5", "o1", "o3", "o7", "o2", "o8", "o4", "o6"]
    assert _origs(asc) == ["o8", "o2", "o7", "o3", "o1", "o5", "o4", "o6"]
    assert _origs(by_orig) == [f"o{i}" for i in range(1, 9)]
    assert [r.id for r in by_id] == sorted(project["ids"].values())


def test_rows_carry_category_score_first_thumbnail_and_annotator(instance, project, admin):
    with instance.sessions.begin() as s:
        validate_objects(s, project["id"], [project["ids"]["o1"]], admin.id)
    with instance.sessions() as s:
        rows, _ = list_objects(s, project["id"], sort="orig_id", limit=4)
    o1, o2, _, o4 = rows
    assert o1 == ObjectRow(id=project["ids"]["o1"], orig_id="o1", status="validated",
                           taxon_id=project["taxa"]["cope"], category="Copepoda", score=None,
                           thumb_path="thumbs/o1_0.jpg", annotator="Administrator",
                           annotation_date=o1.annotation_date, fields=o1.fields,
                           image_size=(10, 10))
    assert o1.annotation_date is not None and o2.annotation_date is None
    assert o1.fields["orig_id"] == "o1" and o1.fields["depth_min"] is None
    assert (o2.status, o2.category, o2.score, o2.annotator) == ("predicted", "Copepoda", 0.40, None)
    assert (o4.taxon_id, o4.category, o4.score) == (None, None, None)


def test_filters_by_category_and_status(instance, project, admin):
    cope = project["taxa"]["cope"]
    with instance.sessions.begin() as s:
        set_dubious(s, project["id"], [project["ids"]["o2"]], admin.id)
    with instance.sessions() as s:
        in_cope, n_cope = list_objects(s, project["id"], taxon_id=cope)
        predicted_cope, n_pc = list_objects(s, project["id"], taxon_id=cope, status="predicted")
        unclassified, n_u = list_objects(s, project["id"], status="unclassified", sort="id")
        dubious, _ = list_objects(s, project["id"], status="dubious")
    assert (_origs(in_cope), n_cope) == (["o1", "o8", "o2"], 3)  # o2 lost its score when set dubious
    assert (_origs(predicted_cope), n_pc) == (["o1", "o8"], 2)
    assert (_origs(unclassified), n_u) == (["o4", "o6"], 2)
    assert _origs(dubious) == ["o2"]


def test_pages_cover_every_object_once(instance, project):
    seen = []
    with instance.sessions() as s:
        for offset in range(0, 8, 3):
            rows, total = list_objects(s, project["id"], sort="score_desc", limit=3, offset=offset)
            assert total == 8
            seen += _origs(rows)
        beyond, total = list_objects(s, project["id"], limit=3, offset=30)
    assert seen == ["o5", "o1", "o3", "o7", "o2", "o8", "o4", "o6"]
    assert (beyond, total) == ([], 8)


def test_bad_arguments_are_typed_errors(instance, project):
    with instance.sessions() as s:
        with pytest.raises(EcoTaxaError, match="unknown sort 'score'"):
            list_objects(s, project["id"], sort="score")
        with pytest.raises(EcoTaxaError, match="unknown status 'done'"):
            list_objects(s, project["id"], status="done")
        with pytest.raises(EcoTaxaError, match="invalid page"):
            list_objects(s, project["id"], limit=0)


def test_category_counts(instance, project, admin):
    with instance.sessions.begin() as s:
        validate_objects(s, project["id"], [project["ids"]["o1"], project["ids"]["o3"]], admin.id)
        set_dubious(s, project["id"], [project["ids"]["o8"]], admin.id)
    with instance.sessions() as s:
        counts = category_counts(s, project["id"])
    t = project["taxa"]
    assert counts == [CategoryCount(t["diat"], "Bacillariophyta", 1, 1, 0),
                      CategoryCount(t["cope"], "Copepoda", 1, 1, 1),
                      CategoryCount(t["det"], "detritus", 0, 1, 0)]


def test_taxa_for_picker(instance, project):
    with instance.sessions.begin() as s:
        get_or_create_taxon(s, "Calanoida")
        get_or_create_taxon(s, "Oncaea_50%")
    with instance.sessions() as s:
        assert [c.display_name for c in taxa_for_picker(s, "cop")] == ["Copepoda"]
        # Names starting with the query first, then shorter ones.
        assert [c.display_name for c in taxa_for_picker(s, "  A ")] == [
            "Biota", "Copepoda", "Calanoida", "Oncaea_50%", "Bacillariophyta"]
        starts = taxa_for_picker(s, "b")
        assert [c.display_name for c in starts] == ["Biota", "Bacillariophyta"]
        assert taxa_for_picker(s, "%") == [(taxa_for_picker(s, "oncaea")[0].taxon_id, "Oncaea_50%")]
        assert [c.display_name for c in taxa_for_picker(s, "_")] == ["Oncaea_50%"]
        assert taxa_for_picker(s, "zzz") == []
        assert len(taxa_for_picker(s, "", limit=2)) == 2
        assert taxa_for_picker(s, "COPEPODA")[0].taxon_id == project["taxa"]["cope"]


def test_projects_for_user(instance, project, admin):
    with instance.sessions.begin() as s:
        viewer = create_user(s, "v@example.org", "Viewer", "pw")
        annotator = create_user(s, "a@example.org", "Annotator", "pw")
        outsider = create_user(s, "o@example.org", "Outsider", "pw")
        set_member(s, project["id"], viewer.id, Role.VISITOR)
        set_member(s, project["id"], annotator.id, Role.ANNOTATOR)
        set_member(s, project["other"], annotator.id, Role.MANAGER)
        ids = viewer.id, annotator.id, outsider.id
    with instance.sessions() as s:
        assert projects_for_user(s, admin.id) == [(project["id"], "queries", True),
                                                  (project["other"], "other", True)]
        assert projects_for_user(s, ids[0]) == [(project["id"], "queries", False)]
        assert projects_for_user(s, ids[1]) == [(project["id"], "queries", True),
                                                (project["other"], "other", True)]
        assert projects_for_user(s, ids[2]) == []


def test_sorted_by_last_change_and_by_a_stable_shuffle(instance, project, admin):
    ids = project["ids"]
    with instance.sessions.begin() as s:
        validate_objects(s, project["id"], [ids["o3"]], admin.id)
    with instance.sessions.begin() as s:
        set_dubious(s, project["id"], [ids["o7"]], admin.id)
    with instance.sessions() as s:
        newest, _ = list_objects(s, project["id"], sort="annotated_desc")
        oldest, _ = list_objects(s, project["id"], sort="annotated_asc")
        shuffles = {seed: _origs(list_objects(s, project["id"], sort="random", seed=seed)[0])
                    for seed in range(6)}
        paged = [r.orig_id for offset in range(0, 8, 3)
                 for r in list_objects(s, project["id"], sort="random", seed=1, limit=3,
                                       offset=offset)[0]]
    assert _origs(newest)[:2] == ["o7", "o3"] and _origs(oldest)[:2] == ["o3", "o7"]
    assert _origs(oldest)[2:] == sorted(_origs(oldest)[2:], key=lambda o: ids[o])  # never changed
    assert all(sorted(order) == sorted(ids) for order in shuffles.values())
    assert len({tuple(order) for order in shuffles.values()}) >= 4  # seeds give other orders
    assert paged == shuffles[1]  # stable across pages


def test_any_object_filter_narrows_the_listing(instance, project):
    root = project["root"]
    with instance.sessions() as s:
        biota, n_biota = list_objects(s, project["id"], sort="orig_id", object_filter=ObjectFilter(
            taxon_ids=(root,), with_children=True))
        scored, n_scored = list_objects(s, project["id"], sort="orig_id",
                                        object_filter=ObjectFilter(score_min=0.5, score_max=0.95))
        both, _ = list_objects(s, project["id"], status="predicted", taxon_id=project["taxa"]["diat"],
                               object_filter=ObjectFilter(score_min=0.8))
        with pytest.raises(InvalidFilter, match="samples"):
            list_objects(s, project["id"], object_filter=ObjectFilter(samples=("no-such",)))
    assert (n_biota, _origs(biota)) == (5, ["o1", "o2", "o3", "o5", "o8"])  # not detritus
    assert (n_scored, _origs(scored)) == (3, ["o1", "o3", "o7"])
    assert _origs(both) == ["o5"]


def test_current_states_tell_what_changed_since_a_page_was_read(instance, project, admin):
    ids = project["ids"]
    with instance.sessions() as s:
        rows, _ = list_objects(s, project["id"], sort="orig_id", limit=3)
    with instance.sessions.begin() as s:
        validate_objects(s, project["id"], [ids["o2"]], admin.id)
    with instance.sessions() as s:
        now = current_states(s, project["id"], [r.id for r in rows] + [10**9])
    shown = {r.id: (r.status, r.taxon_id, r.annotation_date) for r in rows}
    assert sorted(now) == sorted(shown)  # unknown ids are left out
    assert [i for i in shown if now[i] != shown[i]] == [ids["o2"]]
    assert now[ids["o2"]][0] == "validated"


def test_similarity_pages_rank_the_filtered_objects_by_their_deep_features(instance, project):
    import numpy as np

    from ecotaxa_core.queries import list_objects_by_similarity
    from ecotaxa_core.similarity import NoSimilarityFeatures

    ids = project["ids"]
    # o1 is the reference; distances: o2 1, o3 2, o5 3, o7 4, o8 5 (o4 and o6 have no vector).
    vectors = {"o1": 0, "o2": 1, "o3": 2, "o5": 3, "o7": 4, "o8": 5}
    with instance.sessions() as s:
        with pytest.raises(NoSimilarityFeatures):
            list_objects_by_similarity(s, instance.features, project["id"], ids["o1"])
    order = sorted(vectors, key=lambda o: ids[o])
    instance.features.append(project["id"], "deep_effnetlite0_pca50", [ids[o] for o in order],
                             np.array([[vectors[o], 0.0] for o in order], dtype=np.float32),
                             ["c0", "c1"], producer={"kind": "test"})
    with instance.sessions() as s:
        near, total = list_objects_by_similarity(s, instance.features, project["id"], ids["o1"],
                                                 limit=3)
        far, _ = list_objects_by_similarity(s, instance.features, project["id"], ids["o1"],
                                            most_similar_first=False, limit=3, offset=1)
        cope, n_cope = list_objects_by_similarity(s, instance.features, project["id"], ids["o8"],
                                                  taxon_id=project["taxa"]["cope"])
    assert (total, _origs(near)) == (8, ["o1", "o2", "o3"])
    assert _origs(far) == ["o7", "o5", "o3"]  # page 2 of 3 of o8, o7, o5, o3 ...
    assert (n_cope, _origs(cope)) == (3, ["o8", "o2", "o1"])
    assert near[0].thumb_path == "thumbs/o1_0.jpg"


def test_category_tree_adds_ancestors_and_sums_subtrees(instance, project, admin):
    from ecotaxa_core.category_tree import category_tree, flatten

    t = project["taxa"]
    with instance.sessions.begin() as s:
        calanoida = get_or_create_taxon(s, "Calanoida", s.get(Taxon, t["cope"]))
        s.flush()
        s.get(Object, project["ids"]["o8"]).taxon_id = calanoida.id  # predicted, under Copepoda
        calanoida_id = calanoida.id
    with instance.sessions.begin() as s:
        validate_objects(s, project["id"], [project["ids"]["o1"]], admin.id)
        set_dubious(s, project["id"], [project["ids"]["o2"]], admin.id)
    with instance.sessions() as s:
        roots = category_tree(s, project["id"])
    rows = [(n.depth, n.name, (n.n_validated, n.n_predicted, n.n_dubious),
             (n.total_validated, n.total_predicted, n.total_dubious)) for n in flatten(roots)]
    assert rows == [
        (0, "Biota", (0, 0, 0), (1, 3, 1)),  # no object of its own: there as an ancestor
        (1, "Bacillariophyta", (0, 2, 0), (0, 2, 0)),
        (1, "Copepoda", (1, 0, 1), (1, 1, 1)),
        (2, "Calanoida", (0, 1, 0), (0, 1, 0)),
        (0, "detritus", (0, 1, 0), (0, 1, 0)),
    ]
    assert flatten(roots)[3].taxon_id == calanoida_id and roots[0].total == 5


def test_project_listing_counts_and_roles(instance, project, admin):
    from ecotaxa_core.queries import project_listing

    with instance.sessions.begin() as s:
        validate_objects(s, project["id"], [project["ids"]["o1"], project["ids"]["o3"]], admin.id)
        viewer = create_user(s, "v@example.org", "Viewer", "pw")
        s.flush()
        set_member(s, project["id"], viewer.id, Role.VISITOR)
        viewer = viewer.id
    with instance.sessions() as s:
        mine = project_listing(s, viewer)
        everything = project_listing(s, admin.id)
    assert [(p.project_id, p.role, p.n_objects, p.n_validated, p.n_predicted) for p in mine] == [
        (project["id"], "visitor", 8, 2, 4)]
    assert mine[0].percent_validated == 25.0 and mine[0].percent_predicted == 50.0
    assert [(p.title, p.role, p.n_objects) for p in everything] == [
        ("queries", "administrator", 8), ("other", "administrator", 1)]


def test_sorted_by_any_field_numbers_as_numbers_missing_values_last(instance, project):
    """Free numeric columns sort as numbers (9 before 10), texts as texts; objects
    without a value (or with a stray text in a numeric column) come last both ways."""
    from ecotaxa_core.db.models import Project
    from ecotaxa_core.queries import field_sort, sortable_fields

    areas = {"o1": 10, "o2": 9, "o3": 100.5, "o4": "n/a", "o5": 2, "o7": 55}  # o6, o8: none
    sexes = {"o1": "M", "o2": "F", "o3": "F"}
    depths = {"o5": 30.0, "o8": 5.0}
    with instance.sessions.begin() as s:
        s.get(Project, project["id"]).free_columns = {"object": {"Area": "f", "sex": "t"}}
        for orig, oid in project["ids"].items():
            obj = s.get(Object, oid)
            obj.extra = {k: v for k, v in (("Area", areas.get(orig)), ("sex", sexes.get(orig)))
                         if v is not None}
            obj.depth_min = depths.get(orig)
    with instance.sessions() as s:
        assert sortable_fields(s, project["id"]) == ["orig_id", "date", "time", "depth_min",
                                                     "depth_max", "lat", "lon", "Area", "sex"]
        up, total = list_objects(s, project["id"], sort=field_sort("area"))
        down, _ = list_objects(s, project["id"], sort=field_sort("Area", descending=True))
        page2, _ = list_objects(s, project["id"], sort=field_sort("Area"), limit=3, offset=3)
        by_sex, _ = list_objects(s, project["id"], sort=field_sort("sex"))
        by_depth, _ = list_objects(s, project["id"], sort=field_sort("depth_min", True))
        with pytest.raises(EcoTaxaError, match="no such field; it has orig_id, .*Area, sex"):
            list_objects(s, project["id"], sort="field:volume")
    assert total == 8
    assert _origs(up) == ["o5", "o2", "o1", "o7", "o3", "o4", "o6", "o8"]
    assert _origs(down) == ["o3", "o7", "o1", "o2", "o5", "o4", "o6", "o8"]
    assert _origs(page2) == ["o7", "o3", "o4"]
    assert _origs(by_sex)[:3] == ["o2", "o3", "o1"]
    assert _origs(by_depth)[:2] == ["o5", "o8"]
