"""The ``ecotaxa`` command line.

Every stage command runs its Prefect flow (Prefect starts a temporary API
server when none is configured). Human output goes to stdout, progress and
logs to stderr; with ``--json`` stdout holds exactly one JSON document.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

import typer

# The command modules register their commands on ``app`` when imported; in this
# order, the order of the workflow, ``ecotaxa --help`` lists them.
from ecotaxa_cli import project_commands  # noqa: F401  (init, project ...)
from ecotaxa_cli import import_commands  # noqa: F401  (import, jobs, import-recover, ingest)
from ecotaxa_cli import learn_commands  # noqa: F401  (features ... train, predict)
from ecotaxa_cli import export_commands  # noqa: F401  (export, summary, dwca)
from ecotaxa_cli import taxonomy_commands  # noqa: F401  (taxonomy ...)
from ecotaxa_cli import stack_commands  # noqa: F401  (up, down, status)
from ecotaxa_cli.common import JsonOpt, app, emit, fail, load_settings
from ecotaxa_core.errors import EcoTaxaError


@app.command()
def serve(
    port: int = typer.Option(None, help="Port (default ECOTAXA_DASHBOARD_PORT or 5006)."),
    address: Optional[str] = typer.Option(None, help="Address to bind (default 127.0.0.1)."),
    show: bool = typer.Option(False, help="Open a browser."),
) -> None:
    """Serve the validation dashboard."""
    from dashboards.app import serve_dashboard

    settings = load_settings()
    serve_dashboard(settings, port=port or settings.dashboard_port,
                    address=address or settings.dashboard_address, show=show)


@app.command()
def demo(as_json: bool = JsonOpt) -> None:
    """Run the whole loop on the bundled sample of real plankton images.

    Creates the instance if needed, imports 1,200 NDSB images (70 % validated),
    computes features, trains both classifiers, predicts the rest, exports, and
    prints where everything is and how good the model is.
    """
    from flows.demo import demo_run

    settings = load_settings()
    try:
        result = demo_run(settings)
    except EcoTaxaError as exc:
        fail(exc, as_json)
        return
    emit(as_json, result, _human_demo)


def _human_demo(r: dict[str, Any]) -> str:
    lines = ["", "EcoTaxa demo finished in %.0f s" % r["seconds"],
             f"  project {r['project_id']}: {r['n_objects']} objects imported"]
    for m in r["models"]:
        lines.append(f"  model {m['model_id']} ({m['kind']}): held-out accuracy "
                     f"{m['accuracy']:.3f}, balanced accuracy {m['balanced_accuracy']:.3f}")
    lines.append(f"  predictions on the {r['n_unvalidated']} unvalidated objects: accuracy "
                 f"{r['prediction_accuracy']:.3f} against their true categories "
                 f"(model {r['prediction_model_id']})")
    lines.append(f"  export bundle: {r['export_bundle']}")
    lines.append(f"  counts per sample and category: {r['export_counts']}")
    lines.append("  open the dashboard: "
                 f"ECOTAXA_HOME={r['home']} .venv/bin/ecotaxa serve  ->  {r['dashboard_url']}")
    lines.append(f"  sign in as {r['admin_email']}"
                 + (f" / {r['admin_password']}" if r.get("admin_password") else ""))
    return "\n".join(lines)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
