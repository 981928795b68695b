"""Batch classification: circle look-alikes on a 2-D map of the deep features, check their
images, and give them a category in one step.

:class:`BatchState` holds the map (the objects the validation page's filters
keep, at most ``max_points`` of them), the marked objects and the actions:
mark (lasso or box on the map, or from a similarity search), invert, clear,
classify the marked objects (one change, undoable on the validation page),
hide what has been labelled. :class:`BatchPage` is its view: a Bokeh scatter
with lasso and box tools, and the grid of the marked objects' thumbnails.
"""

from __future__ import annotations

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure

from dashboards.components import TaxonPicker, ThumbnailGrid
from dashboards.validation import ANY_STATUS, ANY_TAXON, ValidationState, grid_item
from ecotaxa_core.annotation import move_objects
from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.feature_map import feature_map
from ecotaxa_core.queries import matching_ids, rows_for_ids
from ecotaxa_core.similarity import rank_by_similarity
from ecotaxa_core.taxonomy import taxon_names

__all__ = ["BatchState", "BatchPage"]

_STATUS_COLOURS = {"validated": "#1e7a34", "predicted": "#1f5fa8", "dubious": "#b25d00",
                   "unclassified": "#9aa0a6"}


class BatchState(param.Parameterized):
    """The map and the marks of one user's batch classification."""

    ids = param.Array(default=np.zeros(0, np.int64), doc="Objects on the map.")
    xy = param.Array(default=np.zeros((0, 2), np.float32))
    marked = param.List(default=[], item_type=int, doc="Marked object ids, in map order.")
    hide_labelled = param.Boolean(default=True, label="Hide what I labelled")
    message = param.String(default="")

    def __init__(self, validation: ValidationState, *, max_points: int = 5000, **params):
        super().__init__(**params)
        self.validation = validation
        self.max_points = max_points
        self._labelled: set[int] = set()

    @property
    def _instance(self):
        return self.validation._instance

    def load(self, done: str = "") -> None:
        """Map the objects the validation page's filters keep (at most ``max_points``).

        ``done`` (what was just done) comes first in the message.
        """
        v = self.validation
        if v.project_id is None:
            return
        taxon_id = None if v.taxon_id == ANY_TAXON or v.with_children else v.taxon_id
        status = None if v.status == ANY_STATUS else v.status
        try:
            with self._instance.sessions() as session:
                ids = matching_ids(session, v.project_id, taxon_id=taxon_id, status=status,
                                   object_filter=v.object_filter(), within=v._within(session))
            if len(ids) > self.max_points:  # a fixed subset, spread over the ids
                ids = [ids[i] for i in np.linspace(0, len(ids) - 1, self.max_points).astype(int)]
            fmap = feature_map(self._instance.features, v.project_id, ids)
        except EcoTaxaError as error:
            self.param.update(ids=np.zeros(0, np.int64), xy=np.zeros((0, 2), np.float32),
                              marked=[], message=f"No map: {error}")
            return
        keep = np.ones(len(fmap.object_ids), bool)
        if self.hide_labelled and self._labelled:
            keep = ~np.isin(fmap.object_ids, list(self._labelled))
        missing = f" ({fmap.n_without_vector} without features left out)" \
            if fmap.n_without_vector else ""
        self.param.update(ids=fmap.object_ids[keep], xy=fmap.xy[keep], marked=[],
                          message=f"{done}{int(keep.sum())} objects on the map{missing}.")

    def mark_indices(self, indices) -> None:
        """Mark the map's points at these positions (what a lasso selected)."""
        chosen = set(int(i) for i in indices)
        self.marked = [int(self.ids[i]) for i in sorted(chosen) if 0 <= i < len(self.ids)]

    def mark_similar(self, reference_id: int, n: int = 50) -> None:
        """Mark the ``n`` objects of the map most similar to ``reference_id``."""
        try:
            ranked = rank_by_similarity(self._instance.features, self.validation.project_id,
                                        reference_id, self.ids, limit=n)
        except EcoTaxaError as error:
            self.message = f"No similarity search: {error}"
            return
        order = {int(i): k for k, i in enumerate(self.ids)}
        self.marked = sorted((int(i) for i in ranked), key=order.__getitem__)

    def invert(self) -> None:
        chosen = set(self.marked)
        self.marked = [int(i) for i in self.ids if int(i) not in chosen]

    def clear(self) -> None:
        self.marked = []

    def classify(self, taxon_id: int | None) -> int:
        """Give every marked object this category (validated), as one change."""
        if not self.marked:
            self.message = "Mark objects first (lasso on the map)."
            return 0
        if taxon_id is None:
            self.message = "Choose the category to give them."
            return 0
        v = self.validation
        try:
            with self._instance.sessions.begin() as session:
                n = move_objects(session, v.project_id, self.marked, taxon_id, v.user_id)
                name = taxon_names(session, [taxon_id]).get(taxon_id, str(taxon_id))
        except EcoTaxaError as error:
            self.message = f"Nothing changed: {error}"
            return 0
        self._labelled.update(self.marked)
        v._load_categories()
        v.refresh()
        hidden = " They are hidden from the map." if self.hide_labelled else ""
        self.load(done=f"{n} objects classified as {name}.{hidden} ")
        return n


def _holding_the_document(change) -> None:
    """Make ``change`` to plain Bokeh models holding the served document's lock.

    Panel runs a callback without that lock when other changes are pending;
    Bokeh then refuses direct model changes. The next tick holds the lock.
    """
    doc = pn.state.curdoc
    if doc is not None and doc.session_context is not None:
        doc.add_next_tick_callback(change)
    else:
        change()


class BatchPage(pn.viewable.Viewer):
    """The view of a :class:`BatchState`: the map, the marked thumbnails, the actions."""

    def __init__(self, state: BatchState, **params):
        super().__init__(**params)
        self.state = state
        self._layout = None

    def __panel__(self):
        if self._layout is None:
            self._layout = self._build()
        return self._layout

    def _build(self):
        state = self.state
        source = ColumnDataSource(dict(x=[], y=[], id=[], colour=[]))
        fig = figure(width=620, height=560, tools="lasso_select,box_select,pan,wheel_zoom,reset",
                     active_drag="lasso_select", title="Objects by their deep features",
                     toolbar_location="above")
        fig.scatter("x", "y", source=source, size=6, color="colour", alpha=0.7,
                    selection_color="#e0a000", nonselection_alpha=0.25)

        def draw(*_):
            v = state.validation
            statuses = {}
            if len(state.ids):
                with state._instance.sessions() as session:
                    statuses = {r.id: r.status for r in rows_for_ids(
                        session, v.project_id, state.ids.tolist())}
            data = dict(x=state.xy[:, 0].tolist(), y=state.xy[:, 1].tolist(),
                        id=state.ids.tolist(),
                        colour=[_STATUS_COLOURS.get(statuses.get(int(i)), "#444")
                                for i in state.ids])

            def update():
                source.data = data
                source.selected.indices = []

            _holding_the_document(update)

        state.param.watch(draw, ["ids", "xy"])
        source.selected.on_change("indices", lambda _a, _o, new: state.mark_indices(new))

        grid = ThumbnailGrid(sizing_mode="stretch_width", css_classes=["et-batch-grid"],
                             keyboard=False)

        def show_marked(*_):
            v = state.validation
            with state._instance.sessions() as session:
                rows = rows_for_ids(session, v.project_id, state.marked[:300])
            grid.pixel_size_um = v.pixel_size_um
            grid.items = [grid_item(r, v.thumbnail_url(r)) for r in rows]
            grid.selected = [r.id for r in rows]  # marked: shown selected; a click unmarks

        state.param.watch(show_marked, "marked")
        def unmark(event) -> None:  # a click on a marked thumbnail unmarks it
            kept = set(event.new)
            if kept != set(state.marked[:300]):
                state.marked = [i for i in state.marked[:300] if i in kept] + state.marked[300:]

        grid.param.watch(unmark, "selected")

        picker = TaxonPicker(width=240, css_classes=["et-batch-picker"],
                             placeholder="Classify marked as...")
        picker.param.watch(lambda e: setattr(picker, "options",
                                             state.validation.search_taxa(e.new)), "query")

        def classify(_=None):
            if state.classify(picker.value):
                picker.clear()

        picker.on_submit = classify

        def button(label, css, action, kind="default"):
            b = pn.widgets.Button(label=label, css_classes=[css], color=kind, width=120)
            b.on_click(lambda _e: action())
            return b

        actions = pn.Row(
            button("Map the filtered objects", "et-batch-load", state.load, "primary"),
            button("Invert marks", "et-batch-invert", state.invert),
            button("Clear marks", "et-batch-clear", state.clear),
            picker, button("Classify marked", "et-batch-classify", classify, "success"),
            pn.widgets.Checkbox.from_param(state.param.hide_labelled,
                                           css_classes=["et-batch-hide"]))
        counter = pn.pane.Markdown(pn.bind(lambda m: f"**{len(m)}** marked", state.param.marked),
                                   css_classes=["et-batch-count"])
        message = pn.pane.Markdown(state.param.message, css_classes=["et-batch-message"])
        return pn.Column(actions, pn.Row(counter, message),
                         pn.Row(pn.pane.Bokeh(fig), grid, sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")
