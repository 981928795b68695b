"""The validation page: browse a project's objects by score and validate them in bulk.

:class:`ValidationState` holds everything the page shows (project, filters,
sort, page, selection, message) as parameters and turns user actions into
calls of :mod:`ecotaxa_core.annotation`, one transaction each, with the
signed-in user as annotator. :class:`ValidationPage` is the view: widgets bound
to the state's parameters, and nothing else.
"""

from __future__ import annotations

import math

import panel as pn
import param
from sqlalchemy.exc import OperationalError

from dashboards.components import CategoryTree, TaxonPicker, ThumbnailGrid
from dashboards.object_detail_view import DETAIL_CSS, detail_html
from ecotaxa_core.annotation import move_objects, set_dubious, validate_objects
from ecotaxa_core.annotation_undo import undo_last_change
from ecotaxa_core.category_tree import category_tree, flatten
from ecotaxa_core.db.models import ObjectStatus
from ecotaxa_core.errors import EcoTaxaError, PermissionDenied
from ecotaxa_core.instance import Instance
from ecotaxa_core.learn.thresholds import (
    BulkValidationCandidates,
    bulk_validation_candidates,
    bulk_validation_select,
    current_prediction_model,
)
from ecotaxa_core.object_detail import ObjectDetail, object_detail
from ecotaxa_core.object_filter import ObjectFilter
from ecotaxa_core.queries import (
    ObjectRow,
    current_states,
    field_sort,
    list_objects,
    list_objects_by_similarity,
    matching_ids,
    project_annotators,
    project_samples,
    projects_for_user,
    sortable_fields,
    taxa_for_picker,
)
from ecotaxa_core.project_settings import project_settings
from ecotaxa_core.saved_views import save_view, saved_view
from ecotaxa_core.taxonomy import taxon_names

__all__ = ["ValidationState", "ValidationPage", "PAGE_SIZES", "ANY_TAXON", "ANY_STATUS"]

PAGE_SIZES = [10, 20, 50, 100, 200, 500]
# Select widgets show None as blank, so "no filter" has its own value.
ANY_TAXON = 0
ANY_STATUS = "any"
STATUS_CHOICES = {"All statuses": ANY_STATUS, **{s.value.capitalize(): s.value for s in ObjectStatus}}
SORT_CHOICES = {"Score, high to low": "score_desc", "Score, low to high": "score_asc",
                "Last change, newest first": "annotated_desc",
                "Last change, oldest first": "annotated_asc", "Random": "random",
                "Most similar to the chosen object": "similar",
                "Least similar to the chosen object": "dissimilar",
                "Object id": "id", "Original id": "orig_id"}
SIMILARITY_SORTS = ("similar", "dissimilar")
# Images at a percentage of their own size (0: each fills its tile); + and - step through them.
ZOOM_CHOICES = {"Fit to tile": 0, "25 %": 25, "50 %": 50, "100 %": 100, "200 %": 200, "400 %": 400}
_ZOOM_STEPS = (25, 50, 100, 200, 400)
RECENT_TAXA = 8  # categories moved to lately, offered first by the picker


def _shown(value) -> str:
    """A field's value under a thumbnail: numbers shortened, nothing for missing values."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def grid_item(row: ObjectRow, src: str | None) -> dict:
    """An object as :class:`ThumbnailGrid` draws it."""
    width, height = row.image_size or (None, None)
    return dict(id=row.id, orig_id=row.orig_id, status=row.status, category=row.category,
                score=row.score, annotator=row.annotator, src=src, width=width, height=height)


def _lost(error: OperationalError) -> str:
    """What to tell a validator whose change met a database that went away."""
    first = str(error.orig or error).strip().splitlines()[0][:160]
    return (f"the database did not answer ({first}); your selection is kept, "
            "press the key again")


def _plural(n: int, word: str = "object") -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class ValidationState(param.Parameterized):
    """What one signed-in user sees and does on the validation page.

    Parameters
    ----------
    instance : the instance whose database is read and changed.
    user_id : the signed-in user, recorded as annotator of every change.
    vault_url : URL prefix under which the vault folder is served.
    """

    project_id = param.Selector(default=None, objects={}, allow_None=True, label="Project")
    taxon_id = param.Selector(default=ANY_TAXON, objects={"All categories": ANY_TAXON},
                              label="Category", doc="Show only the objects now in this category.")
    status = param.Selector(default=ANY_STATUS, objects=STATUS_CHOICES, label="Status",
                            doc="Show only the objects with this status.")
    with_children = param.Boolean(default=False, label="With sub-categories",
                                  doc="The category filter keeps the category's descendants too.")
    score_min = param.Number(default=None, allow_None=True, bounds=(0, 1), label="Score from")
    score_max = param.Number(default=None, allow_None=True, bounds=(0, 1), label="Score to")
    above_threshold = param.Boolean(
        default=False, label="Only predictions above their category's threshold",
        doc="Predictions of the current model scoring at least their category's threshold "
            "for the target precision (from the held-out evaluation).")
    bulk = param.ClassSelector(class_=BulkValidationCandidates, default=None, allow_None=True,
                               doc="What the current model's thresholds cover in the project.")
    sample = param.Selector(default="", objects={"All samples": ""}, label="Sample")
    annotator = param.Selector(default=0, objects={"Anyone": 0}, label="Last changed by")
    date_from = param.String(default="", label="Date from", doc="Object date, YYYY-MM-DD.")
    date_to = param.String(default="", label="Date to", doc="Object date, YYYY-MM-DD.")
    depth_min = param.Number(default=None, allow_None=True, label="Depth from (m)")
    depth_max = param.Number(default=None, allow_None=True, label="Depth to (m)")
    conditions = param.String(default="", label="Field conditions",
                              doc="Conditions on object fields, separated by ';' "
                                  "(e.g. 'area>=1000; sex=F').")
    sort = param.Selector(default="score_desc", objects=SORT_CHOICES, label="Sort by")
    similar_to = param.Integer(default=None, allow_None=True,
                               doc="The object the similarity sorts compare with.")
    page_size = param.Selector(default=100, objects=PAGE_SIZES, label="Per page")
    page = param.Integer(default=1, bounds=(1, None))
    zoom = param.Selector(default=100, objects=ZOOM_CHOICES, label="Zoom",
                          doc="Images at this percentage of their own size, so that sizes "
                              "compare (shrunk to fit the tile); 'Fit': each fills its tile.")
    pixel_size_um = param.Number(default=None, allow_None=True,
                                 doc="The project's pixel size: the scale bars' unit.")

    rows = param.List(default=[], item_type=ObjectRow, doc="Objects of the current page.")
    total = param.Integer(default=0, doc="Objects matching the filters.")
    selected = param.List(default=[], item_type=int, doc="Selected object ids (current page).")
    can_annotate = param.Boolean(default=False, doc="Whether the user may change this project.")
    tree = param.List(default=[], doc="The project's categories, depth first, with counts.")
    preset_taxa = param.List(default=[], doc="[[taxon_id, name], ...] the project offers first.")
    thumbnail_fields = param.List(default=[], doc="Fields shown under each thumbnail.")
    detail = param.ClassSelector(class_=ObjectDetail, default=None, allow_None=True,
                                 doc="The one selected object, in detail.")
    recent_taxa = param.List(default=[], doc="[[taxon_id, name], ...] moved to lately, newest first.")
    message = param.String(default="")
    message_kind = param.Selector(default="info", objects=["info", "success", "warning", "danger"])

    def __init__(self, instance: Instance, user_id: int, *, vault_url: str = "/vault",
                 query: dict[str, str] | None = None, **params):
        self._instance = instance
        self._user_id = user_id
        self._vault_url = vault_url.rstrip("/")
        self._opening = False
        self._seed = user_id  # the random sort: one shuffle per user, stable across pages
        requested = params.pop("project_id", None)
        super().__init__(**params)
        self.reload_projects()
        if requested is not None and requested not in self._projects:
            raise PermissionDenied(f"user {user_id} may not open project {requested}")
        if not self._projects:
            self._say("You are not a member of any project.", "warning")
            return
        query = dict(query or {})
        if requested is None and "project" in query:
            try:
                requested = int(query["project"])
            except ValueError:
                requested = None
            if requested not in self._projects:
                self._say(f"Project {query['project']} is not one you may open.", "warning")
                requested = None
        # Opens the project through _open_project.
        self.project_id = requested if requested is not None else next(iter(self._projects))
        if set(query) - {"project"}:  # a shared link: exactly its view
            self.apply_query(query)

    def reload_projects(self) -> None:
        """The projects the user may open, read again (after a merge deleted one, say)."""
        with self._instance.sessions() as session:
            self._projects = {p.project_id: p for p in projects_for_user(session, self._user_id)}
        self.param.project_id.objects = {f"#{p.project_id} {p.title}": p.project_id
                                         for p in self._projects.values()}

    # ---- shareable view --------------------------------------------------------------

    # URL query key -> (parameter, parser); what a shared link restores.
    _QUERY = {"category": ("taxon_id", int), "status": ("status", str), "sort": ("sort", str),
              "children": ("with_children", lambda v: v in ("1", "true", "yes")),
              "score_min": ("score_min", float), "score_max": ("score_max", float),
              "where": ("conditions", str), "similar_to": ("similar_to", int),
              "sample": ("sample", str), "annotator": ("annotator", int),
              "above": ("above_threshold", lambda v: v in ("1", "true", "yes")),
              "date_from": ("date_from", str), "date_to": ("date_to", str),
              "depth_min": ("depth_min", float), "depth_max": ("depth_max", float),
              "per_page": ("page_size", int), "page": ("page", int), "zoom": ("zoom", int)}

    def view_query(self) -> dict[str, str]:
        """The view as URL query arguments (only those that differ from the defaults)."""
        out = {"project": str(self.project_id)} if self.project_id is not None else {}
        for key, (name, _) in self._QUERY.items():
            value = getattr(self, name)
            if value != self.param[name].default and value not in (None, ""):
                out[key] = "1" if value is True else str(value)
        return out

    def apply_query(self, query: dict[str, str]) -> None:
        """Restore a view from URL query arguments; bad values are named and skipped.

        What the query does not give takes its default (a link shows exactly its view).
        """
        values = {name: self.param[name].default for name, _ in self._QUERY.values()}
        bad = []
        for key, (name, parse) in self._QUERY.items():
            if key not in query:
                continue
            try:
                values[name] = parse(query[key])
                self.param[name]._validate(values[name])
                if name == "taxon_id" and values[name] not in self.param.taxon_id.objects.values():
                    raise ValueError("not a category of this project")
            except (ValueError, TypeError) as error:
                values[name] = self.param[name].default
                bad.append(f"{key}={query[key]!r} ({error})")
        self._opening = True
        try:
            self.param.update(**values)
        finally:
            self._opening = False
        self.refresh()
        if bad:
            self._say("Ignored in the link: " + "; ".join(bad), "warning")

    def remember_view(self) -> None:
        """Save the view, to open this project there next time (per user)."""
        if self.project_id is None:
            return
        query = {k: v for k, v in self.view_query().items() if k != "project"}
        try:
            with self._instance.sessions.begin() as session:
                save_view(session, self._user_id, self.project_id, query)
        except EcoTaxaError:  # not worth disturbing the user: the next change tries again
            pass

    # ---- derived values -------------------------------------------------------------

    @property
    def user_id(self) -> int:
        return self._user_id

    @property
    def n_pages(self) -> int:
        return max(1, math.ceil(self.total / self.page_size))

    @property
    def vault_url(self) -> str:
        return self._vault_url

    def thumbnail_url(self, row: ObjectRow) -> str | None:
        return f"{self._vault_url}/{row.thumb_path}" if row.thumb_path else None

    def grid_items(self) -> list[dict]:
        """The current page as the thumbnail grid wants it (with the project's chosen fields)."""
        return [dict(grid_item(r, self.thumbnail_url(r)),
                     fields=[[f, _shown((r.fields or {}).get(f))] for f in self.thumbnail_fields])
                for r in self.rows]

    def page_summary(self) -> str:
        if not self.total:
            return "No objects"
        first = (self.page - 1) * self.page_size + 1
        last = first + len(self.rows) - 1
        return f"{first}-{last} of {self.total} objects, page {self.page} of {self.n_pages}"

    def search_taxa(self, text: str, limit: int = 20) -> list[list]:
        """Suggestions for the category picker: ``[[taxon_id, display_name], ...]``.

        The categories moved to lately that match come first; an empty text
        offers just those.
        """
        needle = text.strip().lower()
        recent = [list(t) for t in self.recent_taxa if needle in t[1].lower()]
        seen = {t[0] for t in recent}
        recent += [list(t) for t in self.preset_taxa if needle in t[1].lower() and t[0] not in seen]
        if not needle:
            return recent[:limit]
        with self._instance.sessions() as session:
            found = [[c.taxon_id, c.display_name] for c in taxa_for_picker(session, text, limit)]
        seen = {t[0] for t in recent}
        return (recent + [t for t in found if t[0] not in seen])[:limit]

    def full_filter(self) -> ObjectFilter:
        """Every filter of the page, category and status included, as one ObjectFilter
        (what the project operations of the Action menu take)."""
        criteria = (self.object_filter() or ObjectFilter()).describe()
        if self.taxon_id != ANY_TAXON:
            criteria.update(taxon_ids=[self.taxon_id], with_children=self.with_children)
        if self.status != ANY_STATUS:
            criteria["statuses"] = [self.status]
        return ObjectFilter.from_mapping(criteria)

    def object_filter(self) -> ObjectFilter | None:
        """The filters beyond category and status, as the core reads them."""
        criteria: dict = {}
        if self.taxon_id != ANY_TAXON and self.with_children:
            criteria.update(taxon_ids=(self.taxon_id,), with_children=True)
        if self.sample:
            criteria["samples"] = (self.sample,)
        if self.annotator:
            criteria["annotators"] = (self.annotator,)
        for name in ("date_from", "date_to", "depth_min", "depth_max"):
            value = getattr(self, name)
            if value not in (None, ""):
                criteria[name] = value.strip() if isinstance(value, str) else value
        if self.score_min is not None:
            criteria["score_min"] = self.score_min
        if self.score_max is not None:
            criteria["score_max"] = self.score_max
        conditions = [c.strip() for c in self.conditions.split(";") if c.strip()]
        if conditions:
            criteria["conditions"] = conditions
        return ObjectFilter.from_mapping(criteria) if criteria else None

    # ---- loading ---------------------------------------------------------------------

    @param.depends("project_id", watch=True)
    def _open_project(self) -> None:
        project = self._projects.get(self.project_id)
        self._opening = True
        try:
            self._load_categories()
            self._load_choices()
            self._load_bulk()
            self.load_settings()
            sort = ("score_desc" if self.sort in SIMILARITY_SORTS
                    or self.sort not in self.param.sort.objects.values() else self.sort)
            self.param.update(taxon_id=ANY_TAXON, page=1, selected=[], similar_to=None, sort=sort,
                              can_annotate=bool(project and project.can_annotate))
        finally:
            self._opening = False
        if self.project_id is None:
            return self.refresh()
        with self._instance.sessions() as session:
            remembered = saved_view(session, self._user_id, self.project_id)
        if remembered:
            self.apply_query(remembered)
        else:
            self.refresh()

    @param.depends("taxon_id", "status", "sort", "page_size", "with_children", "score_min",
                   "score_max", "conditions", "similar_to", "sample", "annotator", "date_from",
                   "above_threshold",
                   "date_to", "depth_min", "depth_max", watch=True)
    def _filters_changed(self) -> None:
        if self._opening:
            return
        if self.page != 1:
            self.page = 1  # refreshes through _page_changed
        else:
            self.refresh()

    @param.depends("page", watch=True)
    def _page_changed(self) -> None:
        if not self._opening:
            self.refresh()

    def _load_categories(self) -> None:
        options = {"All categories": ANY_TAXON}
        tree: list[dict] = []
        if self.project_id is not None:
            with self._instance.sessions() as session:
                nodes = flatten(category_tree(session, self.project_id))
            for n in nodes:
                counts = ", ".join(f"{k} {what}" for k, what in
                                   ((n.total_predicted, "pred"), (n.total_validated, "val"),
                                    (n.total_dubious, "dub")) if k)
                label = "\u00a0\u00a0" * n.depth + n.name
                options[f"{label} ({counts})" if counts else label] = n.taxon_id
                tree.append(dict(id=n.taxon_id, name=n.name, depth=n.depth, v=n.total_validated,
                                 p=n.total_predicted, d=n.total_dubious))
        self.tree = tree
        if self.taxon_id != ANY_TAXON and self.taxon_id not in options.values():
            # The category filtered on has no objects left: keep it, so the page
            # stays where the user is, under its bare name.
            with self._instance.sessions() as session:
                name = taxon_names(session, [self.taxon_id]).get(self.taxon_id, str(self.taxon_id))
            options[name] = self.taxon_id
        self.param.taxon_id.objects = options

    def load_settings(self) -> None:
        """The project's preset categories and thumbnail fields (after a settings change too)."""
        preset, fields = [], []
        if self.project_id is not None:
            with self._instance.sessions() as session:
                view = project_settings(session, self.project_id, self._user_id)
            preset = [[t, n] for t, n in view.preset_taxa]
            fields = list(view.thumbnail_fields)
            pixel_size = view.pixel_size_um
        else:
            pixel_size = None
        self.param.update(preset_taxa=preset, thumbnail_fields=fields, pixel_size_um=pixel_size)

    def _load_bulk(self) -> None:
        """The current model's thresholds over the project's predictions (None: no model)."""
        bulk = None
        if self.project_id is not None:
            with self._instance.sessions() as session:
                model_id = current_prediction_model(session, self.project_id)
                if model_id is not None:
                    bulk = bulk_validation_candidates(session, self.project_id, model_id)
        self.bulk = bulk

    def bulk_summary(self) -> str:
        """One line on what the thresholds cover, for the banner above the grid."""
        b = self.bulk
        if b is None:
            return ""
        if b.reason:
            return f"Model #{b.model_id}: {b.reason}."
        error = (f", expected error rate {100 * b.expected_error_rate:.1f} %"
                 if b.expected_error_rate is not None else "")
        return (f"Model #{b.model_id}: **{b.n_above:,}** of {b.n_predicted:,} predictions are "
                f"above their category's threshold for precision {b.target_precision:g}{error}.")

    def _within(self, session):
        if not self.above_threshold:
            return None
        if self.bulk is None:
            raise EcoTaxaError("no prediction by a model in this project: no threshold to apply")
        return bulk_validation_select(session, self.project_id, self.bulk.model_id)

    def validate_above_thresholds(self) -> int:
        """Validate every object the filters show above its category's threshold (all pages)."""
        if not self.above_threshold:
            self._say("Show only the predictions above their threshold first.", "warning")
            return 0
        taxon_id = None if self.taxon_id == ANY_TAXON or self.with_children else self.taxon_id
        status = None if self.status == ANY_STATUS else self.status
        try:
            if not self.can_annotate:
                raise PermissionDenied("you may not annotate this project")
            with self._instance.sessions.begin() as session:
                ids = matching_ids(session, self.project_id, taxon_id=taxon_id, status=status,
                                   object_filter=self.object_filter(),
                                   within=self._within(session))
                n = validate_objects(session, self.project_id, ids, self._user_id)
        except EcoTaxaError as error:
            self._say(f"Nothing changed: {error}", "danger")
            return 0
        expected = (f" (about {round(n * self.bulk.expected_error_rate):,} expected wrong)"
                    if n and self.bulk and self.bulk.expected_error_rate is not None else "")
        self._load_categories()
        self._load_bulk()
        self.selected = []
        self.refresh()
        self._say(f"{_plural(n)} above their threshold validated{expected}.", "success")
        return n

    def _load_choices(self) -> None:
        """The samples and annotators of the project, for their filters; its fields, to sort by."""
        samples, annotators, sorts = {"All samples": ""}, {"Anyone": 0}, dict(SORT_CHOICES)
        if self.project_id is not None:
            with self._instance.sessions() as session:
                for name in sortable_fields(session, self.project_id):
                    sorts[f"{name}, low to high"] = field_sort(name)
                    sorts[f"{name}, high to low"] = field_sort(name, descending=True)
                for orig_id in project_samples(session, self.project_id):
                    samples[orig_id] = orig_id
                for user_id, name in project_annotators(session, self.project_id):
                    annotators[f"{name} (#{user_id})"] = user_id
        self.param.sample.objects, self.param.annotator.objects = samples, annotators
        self.param.sort.objects = sorts
        self.param.update(sample="", annotator=0)

    def refresh(self) -> None:
        """Read the current page again (after a change, or filters)."""
        if self.project_id is None:
            self.param.update(rows=[], total=0, selected=[])
            return
        taxon_id = None if self.taxon_id == ANY_TAXON or self.with_children else self.taxon_id
        status = None if self.status == ANY_STATUS else self.status
        page = dict(limit=self.page_size, offset=(self.page - 1) * self.page_size)
        try:
            criteria = self.object_filter()
            with self._instance.sessions() as session:
                if self.sort in SIMILARITY_SORTS:
                    if self.similar_to is None:
                        raise EcoTaxaError("choose the object to compare with: select one "
                                           "and press s")
                    rows, total = list_objects_by_similarity(
                        session, self._instance.features, self.project_id, self.similar_to,
                        most_similar_first=self.sort == "similar", taxon_id=taxon_id,
                        status=status, object_filter=criteria, within=self._within(session),
                        **page)
                else:
                    rows, total = list_objects(session, self.project_id, taxon_id=taxon_id,
                                               status=status, object_filter=criteria,
                                               within=self._within(session), sort=self.sort,
                                               seed=self._seed, **page)
        except EcoTaxaError as error:
            self.param.update(rows=[], total=0, selected=[])
            self._say(f"No objects shown: {error}", "danger")
            return
        last_page = max(1, math.ceil(total / self.page_size))
        if self.page > last_page:
            self.page = last_page  # refreshes through _page_changed
            return
        visible = {r.id for r in rows}
        self.param.update(rows=rows, total=total,
                          selected=[i for i in self.selected if i in visible])

    # ---- selection and paging --------------------------------------------------------

    @param.depends("selected", watch=True)
    def _load_detail(self) -> None:
        if len(self.selected) != 1 or self.project_id is None:
            self.detail = None
            return
        try:
            with self._instance.sessions() as session:
                self.detail = object_detail(session, self.project_id, self.selected[0],
                                            self._user_id)
        except EcoTaxaError as error:
            self.detail = None
            self._say(f"No detail: {error}", "warning")

    def select_all(self) -> None:
        self.selected = [r.id for r in self.rows]

    def select_none(self) -> None:
        self.selected = []

    def toggle(self, object_id: int) -> None:
        chosen = set(self.selected)
        chosen ^= {object_id}
        self.selected = [r.id for r in self.rows if r.id in chosen]

    def next_page(self) -> None:
        if self.page < self.n_pages:
            self.page += 1

    def previous_page(self) -> None:
        if self.page > 1:
            self.page -= 1

    def choose_branch(self, taxon_id: int) -> None:
        """Filter on a category and everything under it (a click in the tree)."""
        if taxon_id != self.taxon_id or not self.with_children:
            self._opening = True  # one refresh for both
            try:
                self.param.update(taxon_id=taxon_id, with_children=True, page=1)
            finally:
                self._opening = False
            self.refresh()

    def sort_by_similarity(self) -> None:
        """Sort by resemblance to the one selected object (most similar first)."""
        if len(self.selected) != 1:
            self._say("Select one object to sort by similarity to it.", "warning")
            return
        self.param.update(similar_to=self.selected[0], sort="similar")

    def check_for_changes(self) -> int:
        """Refresh the page when someone changed one of its objects since it was read.

        Returns how many shown objects had changed (0: nothing to do). The last
        change wins: the tiles then show it, with its annotator.
        """
        if self.project_id is None or not self.rows:
            return 0
        with self._instance.sessions() as session:
            now = current_states(session, self.project_id, [r.id for r in self.rows])
        stale = [r.id for r in self.rows
                 if now.get(r.id) != (r.status, r.taxon_id, r.annotation_date)]
        if stale:
            self._load_categories()
            self.refresh()
            self._say(f"{_plural(len(stale))} changed by someone else since shown: "
                      "page refreshed.", "warning")
        return len(stale)

    # ---- changes ---------------------------------------------------------------------

    def validate(self) -> int:
        """Validate the selected objects in their current category."""
        return self._change("validated", lambda s, ids: validate_objects(
            s, self.project_id, ids, self._user_id))

    def mark_dubious(self) -> int:
        """Mark the selected objects dubious."""
        return self._change("marked dubious", lambda s, ids: set_dubious(
            s, self.project_id, ids, self._user_id))

    def move_to(self, taxon_id: int | None) -> int:
        """Move the selected objects to a category (they become validated)."""
        if taxon_id is None:
            self._say("Choose a category to move the selection to.", "warning")
            return 0
        with self._instance.sessions() as session:
            name = taxon_names(session, [taxon_id]).get(taxon_id, f"taxon {taxon_id}")
        n = self._change(f"moved to {name}", lambda s, ids: move_objects(
            s, self.project_id, ids, taxon_id, self._user_id))
        if n:
            self.recent_taxa = ([[taxon_id, name]] + [t for t in self.recent_taxa
                                                    if t[0] != taxon_id])[:RECENT_TAXA]
        return n

    def validate_page_and_next(self) -> int:
        """Validate every object of the page, then show the next objects."""
        self.select_all()
        first = self.rows[0].id if self.rows else None
        n = self.validate()
        if n and any(r.id == first for r in self.rows):  # still listed: go one page on
            self.next_page()
        return n

    def undo(self) -> int:
        """Undo this user's last change in the project (objects changed since by others stay)."""
        try:
            with self._instance.sessions.begin() as session:
                result = undo_last_change(session, self.project_id, self._user_id)
        except EcoTaxaError as error:
            self._say(f"Nothing undone: {error}", "danger")
            return 0
        except OperationalError as error:
            self._say(f"Nothing undone: {_lost(error)}", "danger")
            return 0
        if result.changed_at is None:
            self._say("Nothing to undo.", "info")
            return 0
        self._load_categories()
        self._load_bulk()
        self.refresh()
        kept = (f"; {_plural(len(result.kept))} changed by someone else since kept"
                if result.kept else "")
        self._say(f"Undone: {_plural(len(result.restored))} back as before{kept}.", "success")
        return len(result.restored)

    def run_action(self, action: str) -> None:
        """Run a named action (keyboard shortcuts)."""
        {"validate": self.validate, "dubious": self.mark_dubious, "select_all": self.select_all,
         "select_none": self.select_none, "next_page": self.next_page,
         "previous_page": self.previous_page, "undo": self.undo,
         "validate_page": self.validate_page_and_next,
         "similar": self.sort_by_similarity, "zoom_in": lambda: self.step_zoom(1),
         "zoom_out": lambda: self.step_zoom(-1)}[action]()

    def step_zoom(self, step: int) -> None:
        """Larger (+1) or smaller (-1) images; from "Fit", 100 % is the next step either way."""
        if self.zoom == 0:
            self.zoom = 100
            return
        k = _ZOOM_STEPS.index(self.zoom) + step
        self.zoom = _ZOOM_STEPS[min(len(_ZOOM_STEPS) - 1, max(0, k))]

    def _change(self, done: str, change) -> int:
        ids = list(self.selected)
        if not ids:
            self._say("Select objects first (click their thumbnails).", "warning")
            return 0
        try:
            # The core checks the right again in the transaction (roles may change).
            if not self.can_annotate:
                raise PermissionDenied("you may not annotate this project")
            with self._instance.sessions.begin() as session:
                n = change(session, ids)
        except EcoTaxaError as error:
            self._say(f"Nothing changed: {error}", "danger")
            return 0
        except OperationalError as error:  # the transaction died with the connection
            self._say(f"Nothing changed: {_lost(error)}", "danger")
            return 0
        self._load_categories()
        self.selected = []
        self.refresh()
        self._say(f"{_plural(n)} {done}.", "success")
        return n

    def _say(self, text: str, kind: str = "info") -> None:
        self.param.update(message=text, message_kind=kind)


class ValidationPage(pn.viewable.Viewer):
    """The widgets of the validation page, bound to a :class:`ValidationState`.

    Parameters
    ----------
    state : the page's state.
    stale_check_ms : how often the page looks for objects changed by others
        (when served; 0: never).
    on_view_change : called with :meth:`ValidationState.view_query` whenever
        the view changes (the app writes it to the URL).
    """

    def __init__(self, state: ValidationState, *, stale_check_ms: int = 4000,
                 on_view_change=None, **params):
        super().__init__(**params)
        self.state = state
        self._stale_check_ms = stale_check_ms
        self._on_view_change = on_view_change
        self._layout: pn.viewable.Viewable | None = None

    def __panel__(self) -> pn.viewable.Viewable:
        if self._layout is None:  # built once: the watchers below must not pile up
            self._layout = self._build()
        return self._layout

    def _build(self) -> pn.viewable.Viewable:
        state = self.state
        picker = TaxonPicker(width=240, margin=(5, 10), css_classes=["et-picker-host"])
        picker.param.watch(lambda e: setattr(picker, "options", state.search_taxa(e.new)), "query")

        def move(_=None):
            if state.move_to(picker.value):
                picker.clear()

        picker.on_submit = move
        picker.on_focus = lambda: setattr(picker, "options", state.search_taxa(picker.query))
        grid = ThumbnailGrid(items=state.grid_items(), selected=state.selected,
                             zoom=state.zoom, pixel_size_um=state.pixel_size_um,
                             on_shortcut=state.run_action, sizing_mode="stretch_width",
                             css_classes=["et-grid-host"])
        state.param.watch(lambda e: setattr(grid, "zoom", e.new), "zoom")
        state.param.watch(lambda e: setattr(grid, "pixel_size_um", e.new), "pixel_size_um")
        # Rows and selection flow from the state to the grid; clicks flow back.
        state.param.watch(lambda _: setattr(grid, "items", state.grid_items()), "rows")
        state.param.watch(lambda e: setattr(grid, "selected", e.new), "selected")
        grid.param.watch(lambda e: setattr(state, "selected", e.new), "selected")

        def button(label, css, action, kind="default", width=110):
            b = pn.widgets.Button(label=label, color=kind, css_classes=[css], width=width)
            b.on_click(lambda _: action())
            return b

        move_button = pn.widgets.Button(label="Move", color="primary",
                                        css_classes=["et-move"], width=80)
        move_button.on_click(move)
        changes = [button("Validate", "et-validate", state.validate, "success"),
                   button("Dubious", "et-dubious", state.mark_dubious, "warning"), move_button,
                   button("Validate page", "et-validate-page", state.validate_page_and_next,
                          "success", width=130),
                   button("Undo", "et-undo", state.undo, width=80)]
        for b in changes:
            b.disabled = not state.can_annotate
        state.param.watch(lambda e: [setattr(b, "disabled", not e.new) for b in changes],
                          "can_annotate")

        def select(param_, css, **kw):
            return pn.widgets.Select.from_param(param_, css_classes=[css], **kw)

        tree = CategoryTree(nodes=state.tree, css_classes=["et-tree-host"],
                            sizing_mode="stretch_width")
        state.param.watch(lambda e: setattr(tree, "nodes", e.new), "tree")
        state.param.watch(lambda e: setattr(tree, "chosen", e.new or None), "taxon_id")
        tree.param.watch(lambda e: e.new is not None and state.choose_branch(e.new), "chosen")
        score_range = pn.Row(
            pn.widgets.FloatInput.from_param(state.param.score_min, step=0.05, width=115,
                                             css_classes=["et-score-min"]),
            pn.widgets.FloatInput.from_param(state.param.score_max, step=0.05, width=115,
                                             css_classes=["et-score-max"]))
        filters = pn.Column(
            select(state.param.project_id, "et-project", sizing_mode="stretch_width"),
            select(state.param.taxon_id, "et-filter-category", sizing_mode="stretch_width"),
            pn.widgets.Checkbox.from_param(state.param.with_children,
                                           css_classes=["et-with-children"]),
            tree,
            select(state.param.status, "et-filter-status", sizing_mode="stretch_width"),
            score_range,
            select(state.param.sample, "et-filter-sample", sizing_mode="stretch_width"),
            select(state.param.annotator, "et-filter-annotator", sizing_mode="stretch_width"),
            pn.Row(pn.widgets.TextInput.from_param(state.param.date_from, placeholder="YYYY-MM-DD",
                                                   width=115, css_classes=["et-date-from"]),
                   pn.widgets.TextInput.from_param(state.param.date_to, placeholder="YYYY-MM-DD",
                                                   width=115, css_classes=["et-date-to"])),
            pn.Row(pn.widgets.FloatInput.from_param(state.param.depth_min, width=115,
                                                    css_classes=["et-depth-min"]),
                   pn.widgets.FloatInput.from_param(state.param.depth_max, width=115,
                                                    css_classes=["et-depth-max"])),
            pn.widgets.TextInput.from_param(state.param.conditions, placeholder="area>=1000; sex=F",
                                            css_classes=["et-conditions"],
                                            sizing_mode="stretch_width"),
            select(state.param.sort, "et-sort", sizing_mode="stretch_width"),
            pn.Row(select(state.param.page_size, "et-page-size", width=115),
                   select(state.param.zoom, "et-zoom", width=115)),
            pn.pane.Markdown(_HELP, css_classes=["et-help"], sizing_mode="stretch_width"),
            width=260,
        )
        n_selected = pn.pane.Markdown(pn.bind(lambda sel: f"**{len(sel)}** selected",
                                              state.param.selected),
                                      css_classes=["et-selected-count"], width=100,
                                      margin=(12, 10, 0, 10))
        toolbar = pn.Row(button("Select all", "et-select-all", state.select_all),
                         button("Select none", "et-select-none", state.select_none),
                         n_selected, pn.Spacer(width=20), changes[0], changes[1], picker,
                         move_button, changes[3], changes[4], sizing_mode="stretch_width")
        message = pn.pane.Alert(state.param.message, alert_type=state.param.message_kind,
                                visible=pn.bind(bool, state.param.message),
                                css_classes=["et-message"], sizing_mode="stretch_width",
                                stylesheets=[":host { padding: 6px 14px; } p { margin: 0; }"])
        summary = pn.pane.Markdown(pn.bind(lambda *_: state.page_summary(), state.param.rows,
                                           state.param.total, state.param.page),
                                   css_classes=["et-page-summary"], margin=(12, 10, 0, 10))
        pager = pn.Row(button("Previous", "et-previous", state.previous_page), summary,
                       button("Next", "et-next", state.next_page))
        detail = pn.pane.HTML(pn.bind(lambda d: detail_html(d, state.vault_url), state.param.detail),
                              css_classes=["et-detail"], width=300, stylesheets=[DETAIL_CSS],
                              visible=pn.bind(lambda d: d is not None, state.param.detail))
        validate_above = button("Validate all shown", "et-validate-above",
                                state.validate_above_thresholds, "success", width=150)
        validate_above.disabled = not state.can_annotate
        state.param.watch(lambda e: setattr(validate_above, "disabled", not e.new),
                          "can_annotate")
        bulk = pn.Row(
            pn.pane.Markdown(pn.bind(lambda *_: state.bulk_summary(), state.param.bulk),
                             css_classes=["et-bulk-summary"], margin=(8, 10, 0, 10)),
            pn.widgets.Checkbox.from_param(state.param.above_threshold,
                                           css_classes=["et-above-threshold"], margin=(14, 10)),
            validate_above, visible=pn.bind(lambda b: b is not None, state.param.bulk),
            css_classes=["et-bulk"], styles={"background": "#eef5ec", "border-radius": "6px"},
            sizing_mode="stretch_width")
        from dashboards.project_actions import ActionMenu, ProjectActions  # uses this module

        actions = ActionMenu(ProjectActions(state))
        main = pn.Column(toolbar, message, bulk, actions, pager,
                         pn.Row(grid, detail, sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")
        self._watch_view(state)
        self._check_stale_when_served(state)
        return pn.Row(filters, main, sizing_mode="stretch_width")

    def _watch_view(self, state: ValidationState) -> None:
        def changed(*_events) -> None:
            state.remember_view()
            if self._on_view_change is not None:
                self._on_view_change(state.view_query())

        names = ["project_id", "page", *(name for name, _ in ValidationState._QUERY.values())]
        state.param.watch(changed, sorted(set(names)))

    def _check_stale_when_served(self, state: ValidationState) -> None:
        if self._stale_check_ms and pn.state.curdoc is not None and pn.state.curdoc.session_context:
            pn.state.add_periodic_callback(state.check_for_changes, period=self._stale_check_ms)


_HELP = """
Click thumbnails to select them (shift-click: a range); one selected object shows its
detail and history.

Press **?** for the keys: **v** validate, **d** dubious, **m** move to a category,
**Shift+V** validate the page, **u** / **Ctrl+Z** undo, **s** sort by similarity,
**a** / **n** select all / none, **←** / **→** pages.
"""
