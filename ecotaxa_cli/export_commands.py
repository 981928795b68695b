"""``ecotaxa export``, ``summary`` and ``dwca``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from ecotaxa_cli.common import JsonOpt, app, fail, run_flow


@app.command()
def export(
    project: int = typer.Argument(..., help="Project id."),
    out: Path = typer.Argument(..., help="Folder receiving the bundle and the count table."),
    images: bool = typer.Option(True, "--images/--no-images", help="Put the images in the bundle."),
    split_by_sample: bool = typer.Option(False, "--split-by-sample",
                                         help="One TSV per sample, in a folder per sample."),
    again: bool = typer.Option(False, "--again", help="Export even when the folder holds "
                                                      "this export of the same content."),
    as_json: bool = JsonOpt,
) -> None:
    """Export the project as a re-importable EcoTaxa TSV bundle plus per-sample category counts.

    When the folder holds the project's last export, same options and content,
    nothing is written."""
    from flows.export import export_flow

    run_flow(as_json, lambda: export_flow(project_id=project, out_dir=str(out.resolve()),
                                       with_images=images, split_by_sample=split_by_sample,
                                       again=again),
          lambda r: ("Unchanged since the last export: " if r.get("reused") else
                     f"Exported {r['n_objects']} objects to ") + f"{r['bundle']}"
                    f"\nCounts: {r['counts']}")


class SummaryUnit(str, Enum):
    sample = "sample"
    acquisition = "acquisition"


@app.command()
def summary(
    project: int = typer.Argument(..., help="Project id."),
    out: Path = typer.Argument(..., help="Folder receiving the summary TSV."),
    by: SummaryUnit = typer.Option(SummaryUnit.sample, help="One row per sample or acquisition "
                                   "and category."),
    with_predicted: bool = typer.Option(False, "--with-predicted",
                                        help="Count predicted objects too (validated always)."),
    formula: Optional[list[str]] = typer.Option(
        None, "--formula", help="NAME=EXPR replacing a formula for this run, e.g. "
        "total_water_volume=sam.tot_vol/1000 (repeatable)."),
    as_json: bool = JsonOpt,
) -> None:
    """Abundance, concentration (#/m3) and biovolume (mm3/m3) per sample and category."""
    from flows.summary import summary_flow

    formulas = None
    if formula:
        bad = [f for f in formula if "=" not in f]
        if bad:
            fail(ValueError(f"--formula needs NAME=EXPR, got {bad[0]!r}"), as_json)
        formulas = dict(f.split("=", 1) for f in formula)
    run_flow(as_json, lambda: summary_flow(project_id=project, out_dir=str(out.resolve()),
                                        by=by.value, with_predicted=with_predicted,
                                        formulas=formulas),
          lambda r: f"{r['n_rows']} rows ({r['n_units']} {r['by']}s x {r['n_categories']} "
                    f"categories) written to {r['path']}"
                    + "".join(f"\nwarning: {w}" for w in r.get("warnings", [])))


@app.command()
def dwca(
    project: int = typer.Argument(..., help="Project id."),
    out: Path = typer.Argument(..., help="Folder receiving the archive."),
    contact_email: Optional[str] = typer.Option(None, help="Contact e-mail (required unless "
                                                "stored in the project)."),
    license: Optional[str] = typer.Option(None, help="CC0-1.0, CC-BY-4.0 or CC-BY-NC-4.0."),
    contact_name: Optional[str] = typer.Option(None),
    organization: Optional[str] = typer.Option(None),
    title: Optional[str] = typer.Option(None),
    abstract: Optional[str] = typer.Option(None),
    citation: Optional[str] = typer.Option(None),
    with_predicted: bool = typer.Option(False, "--with-predicted"),
    as_json: bool = JsonOpt,
) -> None:
    """Darwin Core Archive for GBIF/OBIS: events, occurrences, counts/concentrations/biovolumes."""
    from flows.dwca import dwca_flow

    run_flow(as_json, lambda: dwca_flow(project_id=project, out_dir=str(out.resolve()), title=title,
                                     contact_name=contact_name, contact_email=contact_email,
                                     organization=organization, license=license,
                                     abstract=abstract, citation=citation,
                                     with_predicted=with_predicted),
          lambda r: f"{r['n_events']} events, {r['n_occurrences']} occurrences, "
                    f"{r['n_measurements']} measurements in {r['path']}"
                    + "".join(f"\nwarning: {w}" for w in r.get("warnings", [])))
