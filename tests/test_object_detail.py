"""One object in detail: where its sample lies among the project's samples, and the panel
that shows it (zoomable images, map), on SQLite and PostgreSQL."""

from __future__ import annotations

import re

from ecotaxa_core.db.models import Image, Object, Sample
from ecotaxa_core.object_detail import object_detail
from ecotaxa_core.projects import create_project
from ecotaxa_core.users import get_user_by_email

from conftest import ADMIN_EMAIL
from dashboards.object_detail_view import detail_html, sample_map_svg


def _project(instance):
    """Three samples in the Ligurian Sea (one without a position), one elsewhere project."""
    with instance.sessions.begin() as s:
        pid = create_project(s, "detail").id
        other = create_project(s, "other").id
        samples = [Sample(project_id=pid, orig_id="st1", lat=43.68, lon=7.31),
                   Sample(project_id=pid, orig_id="st2", lat=43.25, lon=7.86),
                   Sample(project_id=pid, orig_id="st3"),
                   Sample(project_id=pid, orig_id="st4", lat=-12.5, lon=-77.2),
                   Sample(project_id=other, orig_id="x", lat=10.0, lon=10.0)]
        s.add_all(samples)
        s.flush()
        objs = [Object(project_id=pid, orig_id=f"o{k}", status="unclassified",
                       sample_id=samples[k].id) for k in (1, 2)]
        for o in objs:
            o.images = [Image(rank=0, file_path=f"images/{o.orig_id}.png", thumb_path=None,
                              original_name="a.png", width=80, height=40),
                        Image(rank=1, file_path=f"images/{o.orig_id}_b.png", thumb_path=None,
                              original_name="b.png", width=80, height=40)]
        s.add_all(objs)
        s.flush()
        admin = get_user_by_email(s, ADMIN_EMAIL).id
        return pid, [o.id for o in objs], admin


def test_the_detail_places_the_sample_among_the_projects_samples(instance):
    pid, (in_st2, in_st3), admin = _project(instance)
    with instance.sessions() as s:
        placed = object_detail(s, pid, in_st2, admin)
        unplaced = object_detail(s, pid, in_st3, admin)
    # The object's own sample first, then the others with a position; none of another project.
    assert placed.sample_positions == [("st2", 43.25, 7.86), ("st1", 43.68, 7.31),
                                       ("st4", -12.5, -77.2)]
    assert unplaced.sample_positions == [("st1", 43.68, 7.31), ("st2", 43.25, 7.86),
                                         ("st4", -12.5, -77.2)]

    page = detail_html(placed, "/vault", "/assets")
    # Each image zooms in place (a checkbox its click toggles) and links to the original.
    assert page.count('class="et-detail-zoom"') == 2 and page.count("et-detail-original") == 2
    assert 'src="/vault/images/o1.png"' in page
    assert "Sample <b>st2</b> at 43.25° N, 7.86° E; 2 other samples in grey." in page
    assert '<image href="/assets/land.svg"' in page
    [own] = re.findall(r'class="et-map-this" cx="([\d.]+)" cy="([\d.]+)"', page)
    assert (float(own[0]), float(own[1])) == (7.86 + 180, 90 - 43.25)
    assert len(re.findall(r'class="et-map-sample"', page)) == 2
    assert "This object's sample has no position" in detail_html(unplaced, "/vault")


def test_the_map_frames_the_samples_inside_the_world(instance):
    pid, (in_st2, _), admin = _project(instance)
    with instance.sessions() as s:
        detail = object_detail(s, pid, in_st2, admin)

    def box(positions):
        detail.sample_positions[:] = positions
        x, y, w, h = map(float, re.search(r'viewBox="([^"]+)"', sample_map_svg(detail, "/a"))
                         .group(1).split())
        return x, y, w, h

    x, y, w, h = box([("st2", 43.25, 7.86), ("st1", 43.68, 7.31)])  # two close stations
    assert w == 2 * h and 12 <= w <= 20  # zoomed in, at least 12 degrees wide
    assert x < 7.31 + 180 and x + w > 7.86 + 180 and y < 90 - 43.68 and y + h > 90 - 43.25
    x, y, w, h = box([("st2", 43.25, 7.86), ("st4", -12.5, -77.2)])  # an ocean apart
    assert x <= -77.2 + 180 and x + w >= 7.86 + 180 and y <= 90 - 43.25 and y + h >= 90 + 12.5
    assert x >= 0 and y >= 0 and x + w <= 360 and y + h <= 180
    assert box([("st2", 80.0, -170.0), ("st1", -80.0, 170.0)]) == (0, 0, 360, 180)
    detail.sample_positions[:] = []
    assert sample_map_svg(detail, "/a") == ""
