"""The dashboard server: sign-in, then the validation page; one page per browser session.

``ecotaxa serve`` calls :func:`serve_dashboard`. Thumbnails are files of the
image vault, served as static files under ``/vault``.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from urllib.parse import urlencode

import panel as pn

from dashboards.batch_page import BatchPage, BatchState
from dashboards.project_page import ProjectPage
from dashboards.settings_page import SettingsPage
from dashboards.signin import SignedInUser, SignInForm, check_credentials
from dashboards.validation import ValidationPage, ValidationState
from dashboards.vault_files import vault_routes
from ecotaxa_core.instance import Instance
from ecotaxa_core.queries import project_listing
from ecotaxa_core.settings import Settings

__all__ = ["create_app", "serve_dashboard", "VAULT_ROUTE"]

VAULT_ROUTE = "vault"
ASSETS_ROUTE = "assets"  # the dashboard's own static files (the map's land)
ASSETS_DIR = Path(__file__).resolve().parent / "assets"

_HEADER_STYLES = {"background": "#1f3b5c", "color": "#fff", "padding": "0 12px"}


def create_app(instance: Instance, *, vault_url: str = f"/{VAULT_ROUTE}") -> pn.viewable.Viewable:
    """The page of one browser session: the sign-in form, then the validation page.

    A sign-in lasts ``ECOTAXA_DASHBOARD_SESSION_MINUTES``; then the page goes back
    to the sign-in form (checked every minute, or more often for short sessions).
    """
    body = pn.Column(sizing_mode="stretch_width")
    user_box = pn.Row(align="center")
    lifetime_s = 60.0 * instance.settings.dashboard_session_minutes
    session = {"expires": None, "watch": None}

    def show_sign_in(_event=None, notice: str = "") -> None:
        session["expires"] = None
        if session["watch"] is not None:
            session["watch"].stop()
            session["watch"] = None
        user_box.objects = []
        form = SignInForm(partial(check_credentials, instance), show_validation)
        said = [pn.pane.Alert(notice, alert_type="warning", css_classes=["et-session-expired"],
                              width=300)] if notice else []
        body.objects = [pn.Row(pn.HSpacer(), pn.Column(*said, form), pn.HSpacer(),
                               sizing_mode="stretch_width")]

    def expire_if_due() -> None:
        if session["expires"] is not None and time.monotonic() >= session["expires"]:
            show_sign_in(notice="Your session expired: sign in again.")

    def show_validation(user: SignedInUser) -> None:
        session["expires"] = time.monotonic() + lifetime_s
        if pn.state.curdoc is not None and pn.state.curdoc.session_context:
            session["watch"] = pn.state.add_periodic_callback(
                expire_if_due, period=int(1000 * min(60.0, max(1.0, lifetime_s / 3))))
        sign_out = pn.widgets.Button(label="Sign out", css_classes=["et-sign-out"], width=90,
                                     align="center")
        sign_out.on_click(show_sign_in)
        user_box.objects = [pn.pane.HTML(f"Signed in as <b>{_escape(user.name)}</b>",
                                         css_classes=["et-user"], styles={"color": "#fff"},
                                         align="center"),
                            sign_out]
        state = ValidationState(instance, user.id, vault_url=vault_url, query=_url_query())
        project_tab = pn.Column(sizing_mode="stretch_width", css_classes=["et-project-tab"])
        batch = BatchState(state)
        settings_tab = pn.Column(css_classes=["et-settings-tab"])
        tabs = pn.Tabs(("Validate", ValidationPage(state, on_view_change=_set_url_query)),
                       ("Project", project_tab), ("All projects", pn.Column()),
                       ("Batch", BatchPage(batch)), ("Settings", settings_tab),
                       css_classes=["et-tabs"], sizing_mode="stretch_width")

        def open_project(project_id: int) -> None:
            state.project_id = project_id
            tabs.active = 0

        tabs[2] = ("All projects", project_list(instance, user.id, open_project))

        def show_project(*_events) -> None:  # built when shown: its figures cost queries
            if tabs.active == 1 and state.project_id is not None:
                project_tab.objects = [ProjectPage(instance, user.id, state.project_id)]
            if tabs.active == 4 and state.project_id is not None:
                settings_tab.objects = [SettingsPage(state)]

        tabs.param.watch(show_project, "active")
        state.param.watch(show_project, "project_id")
        body.objects = [tabs]

    show_sign_in()
    header = pn.Row(pn.pane.HTML("<h2 style='margin:8px 0'>EcoTaxa &middot; validation</h2>",
                                 styles={"color": "#fff"}),
                    pn.HSpacer(), user_box, styles=_HEADER_STYLES, sizing_mode="stretch_width")
    return pn.Column(header, body, sizing_mode="stretch_width",
                     styles={"background": "#f7f8fa", "min-height": "100vh"})


def project_list(instance: Instance, user_id: int, on_open) -> pn.viewable.Viewable:
    """The projects the user may open: counts, % validated and predicted, role; a button each."""
    with instance.sessions() as session:
        listing = project_listing(session, user_id)
    rows = []
    for p in listing:
        button = pn.widgets.Button(label="Validate", width=90, css_classes=["et-open-project"],
                                   align="center")
        button.on_click(lambda _e, pid=p.project_id: on_open(pid))
        text = (f"**#{p.project_id} {_escape(p.title)}** &middot; {_escape(p.instrument or '')} "
                f"&middot; {p.n_objects:,} objects, {p.percent_validated:.1f} % validated, "
                f"{p.percent_predicted:.1f} % predicted &middot; you are *{p.role}*")
        rows.append(pn.Row(button, pn.pane.Markdown(text, css_classes=["et-project-row"]),
                           sizing_mode="stretch_width"))
    if not rows:
        rows = [pn.pane.Markdown("You are not a member of any project.")]
    return pn.Column(*rows, sizing_mode="stretch_width", css_classes=["et-project-list"])


def _url_query() -> dict[str, str]:
    """The query arguments of the page's URL (a shared view), when served."""
    args = pn.state.session_args or {}
    return {k: v[-1].decode("utf-8", "replace") for k, v in args.items() if v}


def _set_url_query(query: dict[str, str]) -> None:
    """Show the view in the address bar, so that it can be bookmarked or shared."""
    if pn.state.location is not None:
        pn.state.location.search = "?" + urlencode(query) if query else ""


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def serve_dashboard(settings: Settings, *, port: int, address: str = "127.0.0.1",
                    show: bool = False, threaded: bool = False):
    """Serve the validation dashboard on ``http://address:port/``.

    Blocks until the server stops, unless ``threaded``: then the server runs in
    a thread, which is returned (call its ``stop()``).

    Parameters
    ----------
    settings : the instance to open (it must be initialised).
    port, address : where to listen; the address ``0.0.0.0`` accepts connections
        from any host (pages then accept any origin; sign-in still applies).
    show : open a browser tab.
    threaded : run in a background thread and return it.
    """
    instance = Instance.open(settings)
    vault = instance.vault
    static = {ASSETS_ROUTE: str(ASSETS_DIR)}
    extra: list = []
    if vault.is_url:  # s3://...: read through fsspec
        extra = vault_routes(VAULT_ROUTE, vault)
    else:
        vault.root.mkdir(parents=True, exist_ok=True)
        static[VAULT_ROUTE] = str(vault.root)
    if address in ("0.0.0.0", "::", ""):
        origins = ["*"]
    else:
        origins = sorted({f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"})
    def session_page() -> pn.viewable.Viewable:  # a plain function: Panel calls it per session
        return create_app(instance)

    server = pn.serve({"/": session_page}, port=port, address=address,
                      show=show, threaded=threaded, title="EcoTaxa validation",
                      websocket_origin=origins, static_dirs=static, extra_patterns=extra,
                      verbose=not threaded)
    if not threaded:
        instance.close()
    return server
