"""The project settings page: title, instrument, pixel size, categories offered first,
fields under thumbnails, members and roles.

Everything goes through :mod:`ecotaxa_core.project_settings`, which checks the
administrate right and the values; the page shows the core's refusal as it is.
"""

from __future__ import annotations

import html

import panel as pn

from dashboards.components import TaxonPicker
from dashboards.validation import ValidationState
from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.project_settings import (
    project_settings,
    set_member_role,
    update_project_settings,
)
from ecotaxa_core.rights import Action, user_can

__all__ = ["SettingsPage"]

_ROLES = {"Visitor": "visitor", "Annotator": "annotator", "Manager": "manager",
          "Remove from project": ""}


class SettingsPage(pn.viewable.Viewer):
    """The settings of the validation state's project, for one user."""

    def __init__(self, state: ValidationState, **params):
        super().__init__(**params)
        self.state = state
        inst = state._instance
        with inst.sessions() as session:
            self.view = project_settings(session, state.project_id, state.user_id)
            self.may_change = user_can(session, state.user_id, state.project_id,
                                       Action.ADMINISTRATE)
        v = self.view
        self.title = pn.widgets.TextInput(label="Title", value=v.title, css_classes=["et-set-title"])
        self.instrument = pn.widgets.TextInput(label="Instrument", value=v.instrument or "",
                                               css_classes=["et-set-instrument"])
        self.pixel_size = pn.widgets.FloatInput(label="Pixel size (µm)", value=v.pixel_size_um,
                                                css_classes=["et-set-pixel"])
        self.fields = pn.widgets.MultiChoice(label="Fields under thumbnails",
                                             options=v.available_fields,
                                             value=list(v.thumbnail_fields),
                                             css_classes=["et-set-fields"])
        self.preset = pn.widgets.MultiChoice(label="Categories offered first",
                                             options={n: t for t, n in v.preset_taxa},
                                             value=[t for t, _ in v.preset_taxa],
                                             css_classes=["et-set-preset"])
        self.picker = TaxonPicker(width=260, placeholder="Add a category...",
                                  css_classes=["et-set-picker"])
        self.picker.param.watch(lambda e: setattr(self.picker, "options",
                                                  state.search_taxa(e.new)), "query")
        self.picker.param.watch(self._add_preset, "value")
        self.message = pn.pane.Alert("", visible=False, css_classes=["et-settings-message"],
                                     sizing_mode="stretch_width")
        self.save = pn.widgets.Button(label="Save settings", color="primary",
                                      css_classes=["et-settings-save"], width=140)
        self.save.on_click(lambda _e: self.save_settings())
        self.member_email = pn.widgets.TextInput(label="Member e-mail",
                                                 css_classes=["et-member-email"])
        self.member_role = pn.widgets.Select(label="Role", options=_ROLES, value="annotator",
                                             css_classes=["et-member-role"])
        self.member_apply = pn.widgets.Button(label="Apply", css_classes=["et-member-apply"],
                                              width=90, align="end")
        self.member_apply.on_click(lambda _e: self.apply_member())
        self.members = pn.pane.HTML(self._members_html(), css_classes=["et-members"])
        for w in (self.title, self.instrument, self.pixel_size, self.fields, self.preset,
                  self.save, self.member_email, self.member_role, self.member_apply):
            w.disabled = not self.may_change

    def _add_preset(self, event) -> None:
        if event.new is None:
            return
        options = dict(self.preset.options)
        options[self.picker.label] = event.new
        self.preset.options = options
        self.preset.value = list(dict.fromkeys([*self.preset.value, event.new]))
        self.picker.clear()

    def _say(self, text: str, kind: str) -> None:
        self.message.param.update(object=text, alert_type=kind, visible=True)

    def save_settings(self) -> bool:
        state = self.state
        try:
            with state._instance.sessions.begin() as session:
                update_project_settings(
                    session, state.project_id, state.user_id, title=self.title.value,
                    instrument=self.instrument.value, pixel_size_um=self.pixel_size.value,
                    preset_taxa=list(self.preset.value), thumbnail_fields=list(self.fields.value))
        except EcoTaxaError as error:
            self._say(f"Not saved: {error}", "danger")
            return False
        state.load_settings()
        state.refresh()
        self._say("Settings saved.", "success")
        return True

    def apply_member(self) -> bool:
        state = self.state
        role = self.member_role.value or None
        try:
            with state._instance.sessions.begin() as session:
                set_member_role(session, state.project_id, state.user_id,
                                self.member_email.value, role)
            with state._instance.sessions() as session:
                self.view = project_settings(session, state.project_id, state.user_id)
        except EcoTaxaError as error:
            self._say(f"Members unchanged: {error}", "danger")
            return False
        self.members.object = self._members_html()
        self._say(f"{self.member_email.value}: {role or 'removed'}.", "success")
        return True

    def _members_html(self) -> str:
        rows = "".join(f'<tr class="et-member"><td>{html.escape(m.email)}</td>'
                       f"<td>{html.escape(m.name)}</td><td>{m.role}</td></tr>"
                       for m in self.view.members)
        return f"<h3>Members</h3><table><tr><th>e-mail</th><th>name</th><th>role</th></tr>{rows}</table>"

    def __panel__(self):
        note = ("" if self.may_change else
                "*Only the project's managers may change these settings.*")
        return pn.Column(
            pn.pane.Markdown(f"## Settings of #{self.view.project_id}\n{note}"),
            self.title, self.instrument, self.pixel_size, self.fields,
            pn.Row(self.preset, self.picker), self.save, self.message, self.members,
            pn.Row(self.member_email, self.member_role, self.member_apply),
            width=760)
