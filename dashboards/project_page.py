"""The project page: counts per category and sample, score histograms, trainings, and
buttons that start the pipeline stages through Prefect, with their runs' states live.

All figures come from :func:`ecotaxa_core.project_overview.project_overview`;
the stage buttons go through :mod:`dashboards.flow_runs` (rights checked by
the core). The page polls its runs every few seconds while one is unfinished.
"""

from __future__ import annotations

import html

import panel as pn
from bokeh.models import ColumnDataSource, HoverTool
from bokeh.plotting import figure

from dashboards.flow_runs import IMPORT_MODES, STAGES, StartedRun, run_states, start_stage
from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.import_inbox import inbox_entries
from ecotaxa_core.instance import Instance
from ecotaxa_core.project_overview import SCORE_BINS, ProjectOverview, project_overview

__all__ = ["ProjectPage"]

_STATUS_COLOURS = {"validated": "#1e7a34", "predicted": "#1f5fa8", "dubious": "#b25d00",
                   "unclassified": "#9aa0a6"}
_FINAL = {"Completed", "Failed", "Cancelled", "Crashed"}
_MAX_BARS = 40


class ProjectPage(pn.viewable.Viewer):
    """What one user sees of one project, and the stages they may start."""

    def __init__(self, instance: Instance, user_id: int, project_id: int, *,
                 poll_ms: int = 2000, **params):
        super().__init__(**params)
        self._instance, self._user_id, self._project_id = instance, user_id, project_id
        self._poll_ms = poll_ms
        self._runs: list[StartedRun] = []
        self._runs_pane = pn.pane.HTML("", css_classes=["et-runs"], sizing_mode="stretch_width")
        self._message = pn.pane.Alert("", visible=False, css_classes=["et-project-message"],
                                      sizing_mode="stretch_width")
        self._body = pn.Column(sizing_mode="stretch_width")
        self._poller = None
        self.reload()

    def reload(self) -> None:
        with self._instance.sessions() as session:
            view = project_overview(session, self._project_id, self._user_id,
                                    models_dir=self._instance.models_dir)
        self._body.objects = self._figures(view)

    def start(self, stage: str, **options) -> StartedRun | None:
        """Start a stage (a button); the run joins the list below the buttons.

        ``options`` are the import's (:func:`~dashboards.flow_runs.start_stage`).
        """
        try:
            run = start_stage(self._instance, self._user_id, self._project_id, stage, **options)
        except (EcoTaxaError, ValueError) as error:
            self._say(f"{stage} not started: {error}", "danger")
            return None
        except Exception as error:  # the Prefect API is down, or the deployment missing
            self._say(f"{stage} not started: the Prefect API answered {error}", "danger")
            return None
        self._runs.insert(0, run)
        self._say(f"{stage} started: flow run {run.name}.", "success")
        self._draw_runs()
        self._poll_while_running()
        return run

    def poll(self) -> None:
        """Read the runs' states again (called periodically while some are unfinished)."""
        if not self._runs:
            return
        try:
            self._runs = run_states(self._runs)
        except Exception as error:
            self._say(f"could not read the runs' states: {error}", "warning")
            return
        self._draw_runs()
        if all(r.state in _FINAL for r in self._runs) and self._poller is not None:
            self._poller.stop()
            self._poller = None
            self.reload()  # a training or a prediction changed the figures

    @property
    def runs(self) -> list[StartedRun]:
        return list(self._runs)

    def _poll_while_running(self) -> None:
        if self._poller is None and self._poll_ms and pn.state.curdoc is not None \
                and pn.state.curdoc.session_context:
            self._poller = pn.state.add_periodic_callback(self.poll, period=self._poll_ms)

    def _say(self, text: str, kind: str) -> None:
        self._message.param.update(object=text, alert_type=kind, visible=True)

    def _draw_runs(self) -> None:
        def progress(r: StartedRun) -> str:
            if r.progress is None:
                return ""
            return (f'<progress class="et-run-progress" max="100" value="{r.progress:.0f}">'
                    f"</progress> <span class=\"et-run-step\">{html.escape(r.progress_text or '')}"
                    "</span>")

        rows = "".join(
            f'<tr class="et-run" data-state="{html.escape(r.state)}"><td>{html.escape(r.stage)}</td>'
            f"<td>{html.escape(r.name)}</td><td><b>{html.escape(r.state)}</b></td>"
            f"<td>{progress(r)}</td><td>{html.escape(r.message or '')}</td></tr>"
            for r in self._runs)
        self._runs_pane.object = (f"<table><tr><th>stage</th><th>run</th><th>state</th>"
                                  f"<th>progress</th><th></th></tr>{rows}</table>" if rows else "")

    def _figures(self, view: ProjectOverview) -> list:
        c = view.status_counts
        head = pn.pane.Markdown(
            f"## {html.escape(view.title)}\n{c['total']:,} objects: {c['validated']:,} validated "
            f"({view.percent_validated:.1f} %), {c['predicted']:,} predicted "
            f"({view.percent_predicted:.1f} %), {c['dubious']:,} dubious, "
            f"{c['unclassified']:,} unclassified.", css_classes=["et-project-head"])
        buttons = []
        for stage in STAGES:
            b = pn.widgets.Button(label=f"Start {stage}", css_classes=[f"et-start-{stage}"],
                                  width=120)
            b.on_click(lambda _e, s=stage: self.start(s))
            buttons.append(b)
        plots = pn.Row(self._category_plot(view), self._sample_plot(view),
                       self._score_plot(view), sizing_mode="stretch_width")
        return [head, self._import_form(), pn.Row(*buttons), self._message, self._runs_pane,
                plots, self._models(view)]

    def _import_form(self) -> pn.viewable.Viewable:
        """Import one entry of the instance's import inbox (home/imports) into the project."""
        inbox = self._instance.settings.imports_dir
        entries = inbox_entries(inbox)
        entry = pn.widgets.Select(name="Import from the inbox", options=entries, width=260,
                                  css_classes=["et-import-entry"],
                                  disabled=not entries)
        mode = pn.widgets.Select(name="Mode", options=list(IMPORT_MODES), width=150,
                                 css_classes=["et-import-mode"])
        create = pn.widgets.Checkbox(name="Create missing categories",
                                     css_classes=["et-import-create-taxa"], align="end")
        button = pn.widgets.Button(label="Start import", css_classes=["et-start-import"],
                                   width=120, align="end", disabled=not entries)
        button.on_click(lambda _e: self.start("import", inbox_name=entry.value, mode=mode.value,
                                              create_missing_taxa=create.value))
        hint = pn.pane.Markdown(f"Bundles (folders or .zip) put in `{inbox}` are listed here."
                                if not entries else "", css_classes=["et-import-hint"])
        return pn.Row(entry, mode, create, button, hint, sizing_mode="stretch_width")

    @staticmethod
    def _stacked(names: list[str], columns: dict[str, list[int]], title: str):
        names = names[:_MAX_BARS]
        data = {"name": names, **{k: v[:_MAX_BARS] for k, v in columns.items()}}
        fig = figure(y_range=list(reversed(names)), height=max(240, 18 * len(names) + 100),
                     width=420, title=title, toolbar_location=None)
        stack = [k for k in columns]
        fig.hbar_stack(stack, y="name", height=0.8, source=ColumnDataSource(data),
                       color=[_STATUS_COLOURS[k] for k in stack], legend_label=stack)
        fig.add_tools(HoverTool(tooltips=[("", "@name")] + [(k, f"@{k}") for k in stack]))
        legend = fig.legend[0]
        legend.label_text_font_size = "9pt"
        fig.add_layout(legend, "below")  # under the bars, never over them
        legend.orientation = "horizontal"
        return pn.pane.Bokeh(fig, css_classes=["et-plot"])

    def _category_plot(self, view: ProjectOverview):
        cats = view.categories
        return self._stacked([c.display_name for c in cats],
                             {"validated": [c.n_validated for c in cats],
                              "predicted": [c.n_predicted for c in cats],
                              "dubious": [c.n_dubious for c in cats]},
                             "Objects per category (largest first)")

    def _sample_plot(self, view: ProjectOverview):
        s = view.samples
        return self._stacked([x.sample for x in s],
                             {"validated": [x.n_validated for x in s],
                              "predicted": [x.n_predicted for x in s],
                              "dubious": [x.n_dubious for x in s],
                              "unclassified": [x.n_unclassified for x in s]},
                             "Objects per sample")

    @staticmethod
    def _score_plot(view: ProjectOverview):
        fig = figure(height=260, width=380, title="Scores of predicted objects",
                     toolbar_location=None, x_range=(0, 1))
        counts = view.score_histograms.get("predicted", [0] * SCORE_BINS)
        edges = [i / SCORE_BINS for i in range(SCORE_BINS + 1)]
        fig.quad(top=counts, bottom=0, left=edges[:-1], right=edges[1:],
                 color=_STATUS_COLOURS["predicted"], alpha=0.8)
        return pn.pane.Bokeh(fig, css_classes=["et-plot"])

    @staticmethod
    def _models(view: ProjectOverview):
        if not view.models:
            return pn.pane.Markdown("No training yet.", css_classes=["et-models"])

        def pct(v):
            return f"{100 * v:.1f} %" if isinstance(v, (int, float)) else ""

        def mark(m) -> str:
            return " (predicting)" if m["id"] == view.predicting_model_id else ""

        rows = "".join(
            f"<tr><td>#{m['id']}{mark(m)}</td><td>{html.escape(m['name'])}</td>"
            f"<td>{html.escape(m['kind'])}</td><td>{html.escape(m['created_at'] or '')[:16]}</td>"
            f"<td>{pct(m.get('accuracy'))}</td><td>{pct(m.get('balanced_accuracy'))}</td>"
            f"<td>{pct(m.get('plankton_precision'))}</td><td>{pct(m.get('plankton_recall'))}</td>"
            "</tr>" for m in view.models)
        table = pn.pane.HTML(
            "<h3>Trainings</h3><table class='et-models'><tr><th>model</th><th>name</th>"
            "<th>kind</th><th>created</th><th>accuracy</th><th>balanced</th>"
            f"<th>plankton precision</th><th>plankton recall</th></tr>{rows}</table>",
            sizing_mode="stretch_width")
        # The confusion matrix of the model behind the predictions (else the newest); any other
        # on demand.
        choices = {f"#{m['id']}{mark(m)} {m['name']}": m["id"] for m in view.models
                   if m["id"] in view.confusion_plots}
        if not choices:
            return pn.Column(table, pn.pane.Markdown("(no confusion matrix plot)"))
        first = (view.predicting_model_id if view.predicting_model_id in choices.values()
                 else next(iter(choices.values())))
        which = pn.widgets.Select(name="Confusion matrix of", options=choices, value=first,
                                  width=520, css_classes=["et-confusion-model"])
        plot = pn.pane.PNG(str(view.confusion_plots[first]), width=520,
                           css_classes=["et-confusion"])
        which.param.watch(lambda e: setattr(plot, "object", str(view.confusion_plots[e.new])),
                          "value")
        return pn.Column(table, which, plot)

    def __panel__(self):
        return self._body
