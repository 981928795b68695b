"""The sign-in form of the dashboard: e-mail and password, checked by the core."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import panel as pn

from ecotaxa_core.instance import Instance
from ecotaxa_core.users import authenticate

__all__ = ["SignedInUser", "SignInForm", "check_credentials"]


@dataclass(frozen=True)
class SignedInUser:
    id: int
    name: str
    email: str
    is_admin: bool


def check_credentials(instance: Instance, email: str, password: str) -> SignedInUser | None:
    """The user these credentials belong to (active, with a password), or None."""
    with instance.sessions() as session:
        user = authenticate(session, email, password)
        if user is None:
            return None
        return SignedInUser(id=user.id, name=user.name, email=user.email, is_admin=user.is_admin)


class SignInForm(pn.viewable.Viewer):
    """Asks for an e-mail and a password; calls ``on_signed_in`` with the user when they match.

    Parameters
    ----------
    check : ``(email, password) -> SignedInUser | None``, e.g. :func:`check_credentials`
        bound to an instance.
    on_signed_in : called once the credentials are accepted.
    """

    def __init__(self, check: Callable[[str, str], SignedInUser | None],
                 on_signed_in: Callable[[SignedInUser], None], **params):
        super().__init__(**params)
        self._check = check
        self._on_signed_in = on_signed_in
        self._email = pn.widgets.TextInput(label="E-mail", placeholder="you@example.org",
                                           css_classes=["et-email"], width=300)
        self._password = pn.widgets.PasswordInput(label="Password", css_classes=["et-password"],
                                                  width=300)
        self._submit = pn.widgets.Button(label="Sign in", color="primary",
                                         css_classes=["et-sign-in"], width=300)
        self._error = pn.pane.Alert("", alert_type="danger", visible=False,
                                    css_classes=["et-sign-in-error"], width=300)
        self._submit.on_click(self._sign_in)
        self._email.param.watch(self._sign_in, "enter_pressed")

    def _sign_in(self, _event=None) -> None:
        # value_input follows every key stroke, value only changes on blur/Enter.
        email = self._email.value_input or self._email.value or ""
        password = self._password.value_input or self._password.value or ""
        user = self._check(email, password) if email and password else None
        if user is None:
            self._error.param.update(object="Unknown e-mail or wrong password.", visible=True)
            return
        self._password.param.update(value="", value_input="")
        self._error.visible = False
        self._on_signed_in(user)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(pn.pane.Markdown("## Sign in", margin=(0, 10)), self._email,
                         self._password, self._submit, self._error, css_classes=["et-sign-in-form"],
                         styles={"border": "1px solid #d0d4d9", "border-radius": "8px",
                                 "padding": "16px", "background": "#fff"},
                         margin=(40, 0, 0, 0))
