"""The Action menu of the validation page: project operations on the filtered objects.

Each operation is asked for (:meth:`ProjectActions.ask`), described with the
number of objects it would touch, and only runs once confirmed
(:meth:`ProjectActions.confirm`); :meth:`ProjectActions.cancel` drops it. The
operations are those of :mod:`ecotaxa_core.project_ops` and
:mod:`ecotaxa_core.project_copy`, which check the manager's right and write
the history themselves. They work on what the page's filters show. On the
page, a confirmed operation runs in a worker thread and its progress
(batches done, from :mod:`ecotaxa_core.progress`) fills a bar.
"""

from __future__ import annotations

import asyncio
import time

import panel as pn
import param

from dashboards.components import TaxonPicker
from dashboards.validation import ValidationState
from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.project_copy import merge_projects, subset_project
from ecotaxa_core.project_ops import (METADATA_LEVELS, delete_objects, edit_metadata,
                                      replace_category, reset_to_predicted)
from ecotaxa_core.queries import matching_ids
from ecotaxa_core.rights import Action, user_can

__all__ = ["ProjectActions", "ActionMenu", "ACTIONS"]

ACTIONS = {
    "reset": "Reset the validated ones to predicted",
    "replace": "Move every one to another category",
    "metadata": "Set a field of their samples, acquisitions or processes",
    "subset": "Copy them into a new project",
    "merge": "Merge another project into this one",
    "delete": "Delete them",
}
_PROGRESS_EVERY_S = 0.2  # the bar moves at most this often (each move is a message)


class ProjectActions(param.Parameterized):
    """One pending operation at a time, confirmed before it runs."""

    pending = param.String(default="", doc="The operation waiting for confirmation.")
    question = param.String(default="")
    target_taxon = param.Integer(default=None, allow_None=True, doc="For 'replace'.")
    new_title = param.String(default="", doc="For 'subset'.")
    merge_source = param.Selector(default=None, objects={}, allow_None=True,
                                  label="Project to merge in", doc="For 'merge'.")
    level = param.Selector(default="sample", objects=list(METADATA_LEVELS), label="Of the",
                           doc="For 'metadata'.")
    field_name = param.String(default="", label="Field", doc="For 'metadata'.")
    field_value = param.String(default="", label="Value",
                               doc="For 'metadata': a number, a text, or empty to remove it.")
    message = param.String(default="")
    running = param.Boolean(default=False, doc="An operation is running.")
    progress = param.Integer(default=0, bounds=(0, 100), doc="Percent of the current step.")
    progress_text = param.String(default="")

    def __init__(self, validation: ValidationState, **params):
        super().__init__(**params)
        self.validation = validation

    def _ids(self, session, status: str | None = None) -> list[int]:
        v = self.validation
        return matching_ids(session, v.project_id, status=status,
                            object_filter=v.full_filter(), within=v._within(session))

    def ask(self, action: str) -> None:
        """Describe what ``action`` would do and wait for :meth:`confirm`."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        v = self.validation
        with v._instance.sessions() as session:
            n_all = len(self._ids(session))
            n_validated = len(self._ids(session, "validated"))
        n = n_validated if action == "reset" else n_all
        if action == "merge":
            self._load_merge_sources()
        what = {"reset": f"send {n} validated objects back to predicted (their category kept)",
                "replace": f"give {n} objects the category chosen below",
                "metadata": f"set the field below on the samples, acquisitions or processes "
                            f"of {n} objects",
                "subset": f"copy {n} objects (images, features, classification) into a new "
                          "project",
                "merge": "move every object of the project chosen below into this one, then "
                         "delete that project",
                "delete": f"delete {n} objects, their images, history and features, for good"}
        self.param.update(pending=action, message="",
                          question=f"{ACTIONS[action]}: this will {what[action]}. Confirm?")

    def _load_merge_sources(self) -> None:
        """The other projects this user manages (only those can be merged in)."""
        v = self.validation
        with v._instance.sessions() as session:
            choices = {f"#{p.project_id} {p.title}": p.project_id
                       for p in v._projects.values() if p.project_id != v.project_id
                       and user_can(session, v.user_id, p.project_id, Action.MANAGE)}
        self.param.merge_source.objects = choices
        self.merge_source = next(iter(choices.values()), None)

    def _report(self, what: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last_report < _PROGRESS_EVERY_S:
            return
        self._last_report = now
        self.param.update(progress=round(100 * done / total) if total else 100,
                          progress_text=f"{what}: {done:,} of {total:,}")

    def cancel(self) -> None:
        self.param.update(pending="", question="", message="Nothing done.")

    def confirm(self) -> int | None:
        """Run the pending operation; returns how many objects it changed (None: refused)."""
        return self._finish(*self._run())

    async def confirm_in_background(self) -> int | None:
        """:meth:`confirm`, the work in a thread: the page stays live and shows the progress."""
        if self.running:
            return None
        self.running = True
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(None, self._run)
        finally:
            self.running = False
        return self._finish(*outcome)

    def _run(self) -> tuple[int | None, str]:
        """The pending operation: (objects changed or None when refused, what to say)."""
        action, v = self.pending, self.validation
        if not action:
            return None, "Choose an action first."
        inst, uid, pid = v._instance, v.user_id, v.project_id
        criteria = v.full_filter()
        self._last_report = 0.0
        self.param.update(progress=0, progress_text="")
        progress = self._report
        try:
            if action == "reset":
                with inst.sessions.begin() as session:
                    n = reset_to_predicted(session, pid, uid, object_filter=criteria,
                                           progress=progress)
                done = f"{n} objects reset to predicted."
            elif action == "replace":
                if v.taxon_id in (0, None) or v.with_children:
                    raise EcoTaxaError("filter on the one category to replace first")
                if self.target_taxon is None:
                    raise EcoTaxaError("choose the category to give them")
                with inst.sessions.begin() as session:
                    n = replace_category(session, pid, v.taxon_id, self.target_taxon, uid,
                                         object_filter=criteria, progress=progress)
                done = f"{n} objects moved to the new category."
            elif action == "metadata":
                name = self.field_name.strip()
                if not name:
                    raise EcoTaxaError("name the field to set")
                with inst.sessions.begin() as session:
                    edit = edit_metadata(session, pid, uid, level=self.level, orig_ids=None,
                                         field=name, value=_typed(self.field_value),
                                         object_filter=criteria)
                n = edit.n_changed
                done = (f"{edit.field} set on {n} {self.level}"
                        f"{'s' if n != 1 else ''} of the shown objects.")
            elif action == "subset":
                title = self.new_title.strip() or f"Subset of project {pid}"
                with inst.sessions() as session:
                    ids = self._ids(session)
                new_id = subset_project(inst, pid, uid, title=title, object_ids=ids,
                                        progress=progress)
                n = len(ids)
                done = f"{n} objects copied into project #{new_id} ({title})."
            elif action == "merge":
                if self.merge_source is None:
                    raise EcoTaxaError("choose the project to merge in")
                merged = merge_projects(inst, pid, self.merge_source, uid, progress=progress)
                n = merged["n_objects"]
                done = f"{n} objects of project #{self.merge_source} merged into this one."
            else:
                n = delete_objects(inst, pid, uid, object_filter=criteria, progress=progress)
                done = f"{n} objects deleted."
        except EcoTaxaError as error:
            return None, f"Not done: {error}"
        return n, done

    def _finish(self, n: int | None, said: str) -> int | None:
        if not self.pending:
            self.message = said
            return None
        merged = self.pending == "merge"
        self.param.update(pending="", question="", message=said, progress_text="")
        if n is not None:
            v = self.validation
            if merged:  # the merged project is gone from the list
                v.reload_projects()
            v._load_categories()
            v._load_choices()
            v.refresh()
        return n


def _typed(text: str):
    """A field value typed in a box: a number when it reads as one, None when empty."""
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return text


class ActionMenu(pn.viewable.Viewer):
    """A menu button, the confirmation box and the result."""

    def __init__(self, actions: ProjectActions, **params):
        super().__init__(**params)
        self.actions = actions

    def __panel__(self):
        a = self.actions
        menu = pn.widgets.MenuButton(label="Action", items=[(t, k) for k, t in ACTIONS.items()],
                                     css_classes=["et-action-menu"], width=110)
        menu.on_click(lambda e: a.ask(e.new))
        picker = TaxonPicker(width=220, placeholder="New category...",
                             css_classes=["et-action-picker"])
        picker.param.watch(lambda e: setattr(picker, "options",
                                             a.validation.search_taxa(e.new)), "query")
        picker.param.watch(lambda e: setattr(a, "target_taxon", e.new), "value")
        title = pn.widgets.TextInput.from_param(a.param.new_title, placeholder="New project title",
                                                css_classes=["et-action-title"], width=220)
        confirm = pn.widgets.Button(label="Confirm", color="danger", width=90,
                                    css_classes=["et-action-confirm"])
        confirm.disabled = a.param.running

        async def run(_event) -> None:
            await a.confirm_in_background()

        confirm.on_click(run)
        cancel = pn.widgets.Button(label="Cancel", width=90, css_classes=["et-action-cancel"])
        cancel.on_click(lambda _e: a.cancel())
        source = pn.widgets.Select.from_param(a.param.merge_source, width=220,
                                              css_classes=["et-action-merge-source"])
        field = pn.Row(
            pn.widgets.Select.from_param(a.param.level, width=110, css_classes=["et-action-level"]),
            pn.widgets.TextInput.from_param(a.param.field_name, width=130,
                                            css_classes=["et-action-field"]),
            pn.widgets.TextInput.from_param(a.param.field_value, width=130,
                                            css_classes=["et-action-value"]))

        def shown_for(action):
            return pn.bind(lambda p: p == action, a.param.pending)

        cancel.disabled = a.param.running
        box = pn.Row(pn.pane.Markdown(a.param.question, css_classes=["et-action-question"]),
                     pn.Column(picker, visible=shown_for("replace")),
                     pn.Column(title, visible=shown_for("subset")),
                     pn.Column(source, visible=shown_for("merge")),
                     pn.Column(field, visible=shown_for("metadata")),
                     confirm, cancel, visible=pn.bind(bool, a.param.pending),
                     styles={"background": "#fdf1e6", "border-radius": "6px"},
                     sizing_mode="stretch_width")
        bar = pn.Row(pn.indicators.Progress(value=a.param.progress, max=100, width=260,
                                            css_classes=["et-action-progress"]),
                     pn.pane.Markdown(a.param.progress_text, css_classes=["et-action-step"]),
                     visible=a.param.running)
        result = pn.pane.Markdown(a.param.message, css_classes=["et-action-message"])
        return pn.Column(pn.Row(menu, result), box, bar, sizing_mode="stretch_width")
