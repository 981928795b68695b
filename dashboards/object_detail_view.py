"""The detail panel of one object: its images (click to zoom), classification, top 3,
history, metadata, and a map of where its sample lies among the project's samples.

Plain HTML and SVG (a Panel HTML pane runs no script): an image zooms by a
checkbox toggled by a click on it; the map draws the land of Natural Earth
(``assets/land.svg``, served once and cached by the browser) under the samples.
"""

from __future__ import annotations

import html
import math

from ecotaxa_core.object_detail import ObjectDetail

__all__ = ["detail_html", "sample_map_svg", "DETAIL_CSS"]

# The map's shape (width / height), and the smallest span of longitude it shows (degrees).
_MAP_ASPECT = 2.0
_MIN_SPAN = 12.0

DETAIL_CSS = """
.et-detail-box h4 { margin: 0 0 6px; word-break: break-all; }
.et-detail-zoom { display: none; }
.et-detail-img { max-width: 100%; cursor: zoom-in; image-rendering: pixelated;
                 background: #f4f5f7; border-radius: 3px; }
.et-detail-zoom:checked + label .et-detail-img {
    position: fixed; z-index: 1000; top: 50%; left: 50%; transform: translate(-50%, -50%);
    width: auto; height: auto; min-width: min(60vw, 60vh); max-width: 90vw; max-height: 90vh;
    object-fit: contain; cursor: zoom-out; border: 1px solid #8aa4c8;
    box-shadow: 0 0 0 100vmax rgba(0, 0, 0, .55); }
.et-detail-original { display: block; font-size: 11px; margin: 0 0 6px; }
.et-map { display: block; width: 100%; height: auto; background: #eaf2fb;
          border: 1px solid #c9d6e6; border-radius: 3px; }
.et-map-sample { fill: #5d6b7a; fill-opacity: .7; }
.et-map-this { fill: #d62728; stroke: #fff; }
.et-map-grid { stroke: #b7c7da; stroke-width: .15; fill: none; }
.et-map-caption { color: #555; font-size: 12px; margin: 2px 0 8px; }
"""


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else ""


def _degrees(lat: float, lon: float) -> str:
    return (f"{abs(lat):.2f}\u00b0 {'N' if lat >= 0 else 'S'}, "
            f"{abs(lon):.2f}\u00b0 {'E' if lon >= 0 else 'W'}")


def _view_box(points: list[tuple[float, float]]) -> tuple[float, float, float, float]:
    """(x, y, width, height) in map units (x = lon + 180, y = 90 - lat) around the points,
    with a margin, at the map's aspect, inside the world."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    width = max(max(xs) - min(xs), _MIN_SPAN, _MAP_ASPECT * (max(ys) - min(ys))) * 1.3
    width = min(width, 360.0)
    height = min(width / _MAP_ASPECT, 180.0)
    x = min(max((max(xs) + min(xs)) / 2 - width / 2, 0.0), 360.0 - width)
    y = min(max((max(ys) + min(ys)) / 2 - height / 2, 0.0), 180.0 - height)
    return x, y, width, height


def sample_map_svg(detail: ObjectDetail, assets_url: str) -> str:
    """An SVG map of the project's samples, the object's own one in red ("" when no sample
    has a position)."""
    if not detail.sample_positions:
        return ""
    own = detail.sample.get("orig_id")
    points = [(lon + 180.0, 90.0 - lat) for _, lat, lon in detail.sample_positions]
    x, y, w, h = _view_box(points)
    step = 10 if w <= 120 else 30
    grid = "".join(f'<line class="et-map-grid" x1="{gx}" y1="0" x2="{gx}" y2="180"/>'
                   for gx in range(0, 361, step))
    grid += "".join(f'<line class="et-map-grid" x1="0" y1="{gy}" x2="360" y2="{gy}"/>'
                    for gy in range(0, 181, step))
    r = w / 120
    dots, mine = [], []
    for (orig_id, lat, lon), (px, py) in zip(detail.sample_positions, points):
        label = html.escape(f"{orig_id} ({_degrees(lat, lon)})")
        if orig_id == own:
            mine.append(f'<circle class="et-map-this" cx="{px:.3f}" cy="{py:.3f}" r="{2.2 * r:.3f}" '
                        f'stroke-width="{r / 2:.3f}"><title>{label}</title></circle>')
        else:
            dots.append(f'<circle class="et-map-sample" cx="{px:.3f}" cy="{py:.3f}" r="{r:.3f}">'
                        f"<title>{label}</title></circle>")
    land = html.escape(f"{assets_url.rstrip('/')}/land.svg")
    svg = (f'<svg class="et-map" viewBox="{x:.3f} {y:.3f} {w:.3f} {h:.3f}" '
           f'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">'
           f'<image href="{land}" x="0" y="0" width="360" height="180" '
           f'preserveAspectRatio="none"/>{grid}{"".join(dots)}{"".join(mine)}</svg>')
    others = len(detail.sample_positions) - len(mine)
    if mine:
        _, lat, lon = next(p for p in detail.sample_positions if p[0] == own)
        caption = (f"Sample <b>{html.escape(str(own))}</b> at {_degrees(lat, lon)}; "
                   f"{others} other sample{'s' if others != 1 else ''} in grey.")
    else:
        caption = f"This object's sample has no position; the project's {others} samples in grey."
    return svg + f'<p class="et-map-caption">{caption}</p>'


def detail_html(detail: ObjectDetail | None, vault_url: str, assets_url: str = "/assets") -> str:
    """The detail panel of one object: images, classification, top 3, history, metadata, map."""
    if detail is None:
        return ""
    e = html.escape
    images = "".join(
        f'<input type="checkbox" class="et-detail-zoom" id="et-zoom-{detail.id}-{k}">'
        f'<label for="et-zoom-{detail.id}-{k}" title="Click to zoom in or out">'
        f'<img class="et-detail-img" src="{e(vault_url)}/{e(p)}" alt="{e(p)}"></label>'
        f'<a class="et-detail-original" href="{e(vault_url)}/{e(p)}" target="_blank">original</a>'
        for k, p in enumerate(detail.images))
    top = "".join(f"<li>{e(name)} <b>{score:.2f}</b></li>" for name, score in detail.top_predictions)
    history = "".join(
        f'<tr class="et-history-row"><td>{_when(h.changed_at)}</td>'
        f"<td>{e(h.changed_by or 'prediction')}{' (undo)' if h.action == 'undo' else ''}</td>"
        f"<td>{e(h.status)}</td><td>{e(h.category or '')}</td></tr>" for h in detail.history)
    parts = (("", detail.metadata), ("sample ", detail.sample),
             ("acquisition ", detail.acquisition), ("process ", detail.process))
    metadata = "".join(f"<tr><th>{e(prefix + str(k))}</th><td>{e(str(v))}</td></tr>"
                       for prefix, part in parts
                       for k, v in part.items() if v not in (None, "")
                       and not (isinstance(v, float) and math.isnan(v)))
    score = f", score {detail.score:.2f}" if detail.score is not None else ""
    by = f" by {e(detail.annotator)}" if detail.annotator else ""
    where = sample_map_svg(detail, assets_url)
    return (f'<div class="et-detail-box"><h4>{e(detail.orig_id)}</h4>{images}'
            f'<p class="et-detail-state">{e(detail.status)}: '
            f"<b>{e(detail.category or '(unclassified)')}</b>{score}{by}</p>"
            + (f"<h5>Top predictions</h5><ol>{top}</ol>" if top else "")
            + (f'<h5>History</h5><table class="et-history"><tr><th>until</th><th>changed by</th>'
               f"<th>status</th><th>category</th></tr>{history}</table>" if history else
               "<p>No earlier state.</p>")
            + (f"<h5>Where</h5>{where}" if where else "")
            + f'<h5>Metadata</h5><table class="et-metadata">{metadata}</table></div>')
