"""The export, summary and Darwin Core flows run for real against a Prefect API."""

from __future__ import annotations

import zipfile

import pytest
from sqlalchemy import select

from ecotaxa_core.db.models import Job, Object, Sample
from ecotaxa_core.dwca import DwcaRefused
from test_summaries import tiny_project


def test_export_summary_and_dwca_flows(sqlite_instance, prefect_server, monkeypatch, tmp_path):
    from flows.dwca import dwca_flow
    from flows.export import export_flow
    from flows.summary import summary_flow

    inst = sqlite_instance
    monkeypatch.setenv("ECOTAXA_HOME", str(inst.settings.home))
    monkeypatch.setenv("ECOTAXA_DATABASE_URL", inst.settings.database_url)
    pid = tiny_project(inst, 1)
    with inst.sessions.begin() as s:
        for sample in s.scalars(select(Sample).where(Sample.project_id == pid)):
            sample.lat, sample.lon = 43.68, 7.31
        for obj in s.scalars(select(Object).where(Object.project_id == pid)):
            obj.date = "2024-05-01"

    exported = export_flow(project_id=pid, out_dir=str(tmp_path / "bundle"), with_images=False,
                           split_by_sample=True)
    assert exported["n_objects"] == 8 and exported["split_by_sample"] is True
    with zipfile.ZipFile(exported["bundle"]) as z:
        assert z.namelist() == exported["tsv_files"] == [f"S{i}/ecotaxa_S{i}.tsv"
                                                         for i in (1, 2, 3, 4)]

    summary = summary_flow(project_id=pid, out_dir=str(tmp_path / "summary"), by="acquisition",
                           with_predicted=True)
    assert (summary["n_units"], summary["n_categories"], summary["by"]) == (5, 3, "acquisition")
    assert summary["path"].endswith(f"summary_{pid}_by_acquisition.tsv")
    assert len(summary["warnings"]) == 1  # S4 has no volume

    with pytest.raises(DwcaRefused, match="license: missing"):
        dwca_flow(project_id=pid, out_dir=str(tmp_path / "dwca"),
                  contact_email="data@example.org")
    archive = dwca_flow(project_id=pid, out_dir=str(tmp_path / "dwca"),
                        contact_email="data@example.org", license="CC0-1.0")
    assert (archive["n_events"], archive["license"]) == (3, "CC0-1.0")
    with zipfile.ZipFile(archive["path"]) as z:
        assert set(z.namelist()) == {"event.txt", "occurrence.txt",
                                     "extendedmeasurementorfact.txt", "meta.xml", "eml.xml"}
    with inst.sessions() as s:
        jobs = {(j.kind, j.state) for j in s.scalars(select(Job).where(Job.project_id == pid))}
    assert jobs == {("export", "done"), ("summary", "done"), ("dwca", "done"), ("dwca", "failed")}
