"""The Action menu of the validation page: project operations on the filtered objects.

Each operation is asked for (:meth:`ProjectActions.ask`), described with the
number of objects it would touch, and only runs once confirmed
(:meth:`ProjectActions.confirm`); :meth:`ProjectActions.cancel` drops it. The
operations are those of :mod:`ecotaxa_core.project_ops` and
:mod:`ecotaxa_core.project_copy`, which check the manager's right and write
the history themselves. They work on what the page's filters show.
"""

from __future__ import annotations

import panel as pn
import param

from dashboards.components import TaxonPicker
from dashboards.validation import ValidationState
from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.project_copy import subset_project
from ecotaxa_core.project_ops import delete_objects, replace_category, reset_to_predicted
from ecotaxa_core.queries import matching_ids

__all__ = ["ProjectActions", "ActionMenu", "ACTIONS"]

ACTIONS = {
    "reset": "Reset the validated ones to predicted",
    "replace": "Move every one to another category",
    "subset": "Copy them into a new project",
    "delete": "Delete them",
}


class ProjectActions(param.Parameterized):
    """One pending operation at a time, confirmed before it runs."""

    pending = param.String(default="", doc="The operation waiting for confirmation.")
    question = param.String(default="")
    target_taxon = param.Integer(default=None, allow_None=True, doc="For 'replace'.")
    new_title = param.String(default="", doc="For 'subset'.")
    message = param.String(default="")

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
        what = {"reset": f"send {n} validated objects back to predicted (their category kept)",
                "replace": f"give {n} objects the category chosen below",
                "subset": f"copy {n} objects (images, features, classification) into a new "
                          "project",
                "delete": f"delete {n} objects, their images, history and features, for good"}
        self.param.update(pending=action, message="",
                          question=f"{ACTIONS[action]}: this will {what[action]}. Confirm?")

    def cancel(self) -> None:
        self.param.update(pending="", question="", message="Nothing done.")

    def confirm(self) -> int | None:
        """Run the pending operation; returns how many objects it changed (None: refused)."""
        action, v = self.pending, self.validation
        if not action:
            self.message = "Choose an action first."
            return None
        inst, uid, pid = v._instance, v.user_id, v.project_id
        criteria = v.full_filter()
        try:
            if action == "reset":
                with inst.sessions.begin() as session:
                    n = reset_to_predicted(session, pid, uid, object_filter=criteria)
                done = f"{n} objects reset to predicted."
            elif action == "replace":
                if v.taxon_id in (0, None) or v.with_children:
                    raise EcoTaxaError("filter on the one category to replace first")
                if self.target_taxon is None:
                    raise EcoTaxaError("choose the category to give them")
                with inst.sessions.begin() as session:
                    n = replace_category(session, pid, v.taxon_id, self.target_taxon, uid,
                                         object_filter=criteria)
                done = f"{n} objects moved to the new category."
            elif action == "subset":
                title = self.new_title.strip() or f"Subset of project {pid}"
                with inst.sessions() as session:
                    ids = self._ids(session)
                new_id = subset_project(inst, pid, uid, title=title, object_ids=ids)
                n = len(ids)
                done = f"{n} objects copied into project #{new_id} ({title})."
            else:
                n = delete_objects(inst, pid, uid, object_filter=criteria)
                done = f"{n} objects deleted."
        except EcoTaxaError as error:
            self.param.update(pending="", question="", message=f"Not done: {error}")
            return None
        self.param.update(pending="", question="", message=done)
        v._load_categories()
        v.refresh()
        return n


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
        confirm.on_click(lambda _e: a.confirm())
        cancel = pn.widgets.Button(label="Cancel", width=90, css_classes=["et-action-cancel"])
        cancel.on_click(lambda _e: a.cancel())
        box = pn.Row(pn.pane.Markdown(a.param.question, css_classes=["et-action-question"]),
                     pn.Column(picker, visible=pn.bind(lambda p: p == "replace", a.param.pending)),
                     pn.Column(title, visible=pn.bind(lambda p: p == "subset", a.param.pending)),
                     confirm, cancel, visible=pn.bind(bool, a.param.pending),
                     styles={"background": "#fdf1e6", "border-radius": "6px"},
                     sizing_mode="stretch_width")
        result = pn.pane.Markdown(a.param.message, css_classes=["et-action-message"])
        return pn.Column(pn.Row(menu, result), box, sizing_mode="stretch_width")
