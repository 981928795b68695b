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

from dashboards.components import TaxonPicker, ThumbnailGrid
from ecotaxa_core.annotation import move_objects, set_dubious, validate_objects
from ecotaxa_core.db.models import ObjectStatus
from ecotaxa_core.errors import EcoTaxaError, PermissionDenied
from ecotaxa_core.instance import Instance
from ecotaxa_core.queries import (
    ObjectRow,
    category_counts,
    list_objects,
    projects_for_user,
    taxa_for_picker,
)
from ecotaxa_core.taxonomy import taxon_names

__all__ = ["ValidationState", "ValidationPage", "PAGE_SIZES", "ANY_TAXON", "ANY_STATUS"]

PAGE_SIZES = [10, 20, 50, 100, 200, 500]
# Select widgets show None as blank, so "no filter" has its own value.
ANY_TAXON = 0
ANY_STATUS = "any"
STATUS_CHOICES = {"All statuses": ANY_STATUS, **{s.value.capitalize(): s.value for s in ObjectStatus}}
SORT_CHOICES = {"Score, high to low": "score_desc", "Score, low to high": "score_asc",
                "Object id": "id", "Original id": "orig_id"}


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
    sort = param.Selector(default="score_desc", objects=SORT_CHOICES, label="Sort by")
    page_size = param.Selector(default=100, objects=PAGE_SIZES, label="Per page")
    page = param.Integer(default=1, bounds=(1, None))

    rows = param.List(default=[], item_type=ObjectRow, doc="Objects of the current page.")
    total = param.Integer(default=0, doc="Objects matching the filters.")
    selected = param.List(default=[], item_type=int, doc="Selected object ids (current page).")
    can_annotate = param.Boolean(default=False, doc="Whether the user may change this project.")
    message = param.String(default="")
    message_kind = param.Selector(default="info", objects=["info", "success", "warning", "danger"])

    def __init__(self, instance: Instance, user_id: int, *, vault_url: str = "/vault", **params):
        self._instance = instance
        self._user_id = user_id
        self._vault_url = vault_url.rstrip("/")
        self._opening = False
        requested = params.pop("project_id", None)
        super().__init__(**params)
        with instance.sessions() as session:
            self._projects = {p.project_id: p for p in projects_for_user(session, user_id)}
        if requested is not None and requested not in self._projects:
            raise PermissionDenied(f"user {user_id} may not open project {requested}")
        self.param.project_id.objects = {f"#{p.project_id} {p.title}": p.project_id
                                         for p in self._projects.values()}
        if not self._projects:
            self._say("You are not a member of any project.", "warning")
            return
        # Opens the project through _open_project.
        self.project_id = requested if requested is not None else next(iter(self._projects))

    # ---- derived values -------------------------------------------------------------

    @property
    def user_id(self) -> int:
        return self._user_id

    @property
    def n_pages(self) -> int:
        return max(1, math.ceil(self.total / self.page_size))

    def thumbnail_url(self, row: ObjectRow) -> str | None:
        return f"{self._vault_url}/{row.thumb_path}" if row.thumb_path else None

    def grid_items(self) -> list[dict]:
        """The current page as the thumbnail grid wants it."""
        return [dict(id=r.id, orig_id=r.orig_id, status=r.status, category=r.category,
                     score=r.score, annotator=r.annotator, src=self.thumbnail_url(r))
                for r in self.rows]

    def page_summary(self) -> str:
        if not self.total:
            return "No objects"
        first = (self.page - 1) * self.page_size + 1
        last = first + len(self.rows) - 1
        return f"{first}-{last} of {self.total} objects, page {self.page} of {self.n_pages}"

    def search_taxa(self, text: str, limit: int = 20) -> list[list]:
        """Suggestions for the category picker: ``[[taxon_id, display_name], ...]``."""
        if not text.strip():
            return []
        with self._instance.sessions() as session:
            return [[c.taxon_id, c.display_name] for c in taxa_for_picker(session, text, limit)]

    # ---- loading ---------------------------------------------------------------------

    @param.depends("project_id", watch=True)
    def _open_project(self) -> None:
        project = self._projects.get(self.project_id)
        self._opening = True
        try:
            self._load_categories()
            self.param.update(taxon_id=ANY_TAXON, page=1, selected=[],
                              can_annotate=bool(project and project.can_annotate))
        finally:
            self._opening = False
        self.refresh()

    @param.depends("taxon_id", "status", "sort", "page_size", watch=True)
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
        if self.project_id is not None:
            with self._instance.sessions() as session:
                for c in category_counts(session, self.project_id):
                    counts = ", ".join(f"{n} {what}" for n, what in
                                       ((c.n_predicted, "pred"), (c.n_validated, "val"),
                                        (c.n_dubious, "dub")) if n)
                    options[f"{c.display_name} ({counts})" if counts else c.display_name] = c.taxon_id
        if self.taxon_id != ANY_TAXON and self.taxon_id not in options.values():
            # The category filtered on has no objects left: keep it, so the page
            # stays where the user is, under its bare name.
            with self._instance.sessions() as session:
                name = taxon_names(session, [self.taxon_id]).get(self.taxon_id, str(self.taxon_id))
            options[name] = self.taxon_id
        self.param.taxon_id.objects = options

    def refresh(self) -> None:
        """Read the current page again (after a change, or filters)."""
        if self.project_id is None:
            self.param.update(rows=[], total=0, selected=[])
            return
        taxon_id = None if self.taxon_id == ANY_TAXON else self.taxon_id
        status = None if self.status == ANY_STATUS else self.status
        with self._instance.sessions() as session:
            rows, total = list_objects(session, self.project_id, taxon_id=taxon_id, status=status,
                                       sort=self.sort, limit=self.page_size,
                                       offset=(self.page - 1) * self.page_size)
        last_page = max(1, math.ceil(total / self.page_size))
        if self.page > last_page:
            self.page = last_page  # refreshes through _page_changed
            return
        visible = {r.id for r in rows}
        self.param.update(rows=rows, total=total,
                          selected=[i for i in self.selected if i in visible])

    # ---- selection and paging --------------------------------------------------------

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
        return self._change(f"moved to {name}", lambda s, ids: move_objects(
            s, self.project_id, ids, taxon_id, self._user_id))

    def run_action(self, action: str) -> None:
        """Run a named action (keyboard shortcuts)."""
        {"validate": self.validate, "dubious": self.mark_dubious, "select_all": self.select_all,
         "select_none": self.select_none, "next_page": self.next_page,
         "previous_page": self.previous_page}[action]()

    def _change(self, done: str, change) -> int:
        ids = list(self.selected)
        if not ids:
            self._say("Select objects first (click their thumbnails).", "warning")
            return 0
        try:
            if not self.can_annotate:
                raise PermissionDenied("you may not annotate this project")
            with self._instance.sessions.begin() as session:
                n = change(session, ids)
        except EcoTaxaError as error:
            self._say(f"Nothing changed: {error}", "danger")
            return 0
        self._load_categories()
        self.selected = []
        self.refresh()
        self._say(f"{_plural(n)} {done}.", "success")
        return n

    def _say(self, text: str, kind: str = "info") -> None:
        self.param.update(message=text, message_kind=kind)


class ValidationPage(pn.viewable.Viewer):
    """The widgets of the validation page, bound to a :class:`ValidationState`."""

    def __init__(self, state: ValidationState, **params):
        super().__init__(**params)
        self.state = state
        self._layout: pn.viewable.Viewable | None = None

    def __panel__(self) -> pn.viewable.Viewable:
        if self._layout is None:  # built once: the watchers below must not pile up
            self._layout = self._build()
        return self._layout

    def _build(self) -> pn.viewable.Viewable:
        state = self.state
        grid = ThumbnailGrid(items=state.grid_items(), selected=state.selected,
                             on_shortcut=state.run_action, sizing_mode="stretch_width",
                             css_classes=["et-grid-host"])
        # Rows and selection flow from the state to the grid; clicks flow back.
        state.param.watch(lambda _: setattr(grid, "items", state.grid_items()), "rows")
        state.param.watch(lambda e: setattr(grid, "selected", e.new), "selected")
        grid.param.watch(lambda e: setattr(state, "selected", e.new), "selected")

        picker = TaxonPicker(width=240, margin=(5, 10), css_classes=["et-picker-host"])
        picker.param.watch(lambda e: setattr(picker, "options", state.search_taxa(e.new)), "query")

        def button(label, css, action, kind="default"):
            b = pn.widgets.Button(label=label, color=kind, css_classes=[css], width=110)
            b.on_click(lambda _: action())
            return b

        def move(_=None):
            if state.move_to(picker.value):
                picker.clear()

        move_button = pn.widgets.Button(label="Move", color="primary",
                                        css_classes=["et-move"], width=80)
        move_button.on_click(move)
        changes = [button("Validate", "et-validate", state.validate, "success"),
                   button("Dubious", "et-dubious", state.mark_dubious, "warning"), move_button]
        for b in changes:
            b.disabled = not state.can_annotate
        state.param.watch(lambda e: [setattr(b, "disabled", not e.new) for b in changes],
                          "can_annotate")

        def select(param_, css, **kw):
            return pn.widgets.Select.from_param(param_, css_classes=[css], **kw)

        filters = pn.Column(
            select(state.param.project_id, "et-project", sizing_mode="stretch_width"),
            select(state.param.taxon_id, "et-filter-category", sizing_mode="stretch_width"),
            select(state.param.status, "et-filter-status", sizing_mode="stretch_width"),
            select(state.param.sort, "et-sort", sizing_mode="stretch_width"),
            select(state.param.page_size, "et-page-size", sizing_mode="stretch_width"),
            pn.pane.Markdown(_HELP, css_classes=["et-help"], sizing_mode="stretch_width"),
            width=260,
        )
        n_selected = pn.pane.Markdown(pn.bind(lambda sel: f"**{len(sel)}** selected",
                                              state.param.selected),
                                      css_classes=["et-selected-count"], width=100,
                                      margin=(12, 10, 0, 10))
        toolbar = pn.Row(button("Select all", "et-select-all", state.select_all),
                         button("Select none", "et-select-none", state.select_none),
                         n_selected, pn.Spacer(width=20), changes[0], changes[1], picker, move_button,
                         sizing_mode="stretch_width")
        message = pn.pane.Alert(state.param.message, alert_type=state.param.message_kind,
                                visible=pn.bind(bool, state.param.message),
                                css_classes=["et-message"], sizing_mode="stretch_width",
                                stylesheets=[":host { padding: 6px 14px; } p { margin: 0; }"])
        summary = pn.pane.Markdown(pn.bind(lambda *_: state.page_summary(), state.param.rows,
                                           state.param.total, state.param.page),
                                   css_classes=["et-page-summary"], margin=(12, 10, 0, 10))
        pager = pn.Row(button("Previous", "et-previous", state.previous_page), summary,
                       button("Next", "et-next", state.next_page))
        main = pn.Column(toolbar, message, pager, grid, sizing_mode="stretch_width")
        return pn.Row(filters, main, sizing_mode="stretch_width")


_HELP = """
Click thumbnails to select them (shift-click: a range).

Keys: **v** validate, **d** dubious, **a** select all, **n** / **Esc** select none,
**←** / **→** previous / next page.
"""
