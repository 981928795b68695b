"""Browser-side widgets of the validation page: the thumbnail grid and the category picker.

Both are plain-JavaScript :class:`panel.custom.JSComponent` s (no build step,
nothing fetched from the network). They only render what their parameters
hold and write back what the user does; the page's state model does the rest.
Elements carry stable CSS classes (``et-thumb``, ``et-picker-input`` ...) and
``data-*`` attributes so browser tests and user style sheets can find them.
"""

from __future__ import annotations

from typing import Callable

import param
from panel.custom import JSComponent

__all__ = ["ThumbnailGrid", "TaxonPicker", "CategoryTree", "SHORTCUTS"]

# Keys the grid forwards to the page (when focus is not in a text field); Ctrl+Z (or
# Cmd+Z) is "undo" too, and "?" shows the list below over the page.
SHORTCUTS = {
    "v": "validate",
    "d": "dubious",
    "m": "move",
    "V": "validate_page",
    "u": "undo",
    "s": "similar",
    "a": "select_all",
    "n": "select_none",
    "Escape": "select_none",
    "ArrowRight": "next_page",
    "ArrowLeft": "previous_page",
    "+": "zoom_in",
    "-": "zoom_out",
}
SHORTCUT_HELP = [
    ["v", "validate the selection in its category"],
    ["d", "mark the selection dubious"],
    ["m", "move the selection: type a category, Enter to pick it, Enter to move"],
    ["Shift+V", "validate the whole page and go on"],
    ["u / Ctrl+Z", "undo your last change"],
    ["s", "sort by similarity to the selected object"],
    ["a / n / Esc", "select all / none"],
    ["\u2190 / \u2192", "previous / next page"],
    ["+ / -", "larger / smaller images"],
    ["drag", "select the tiles under a rectangle (Shift: add them)"],
    ["?", "show or hide this list"],
]


class ThumbnailGrid(JSComponent):
    """A grid of object thumbnails with their category and score; click to (un)select.

    ``items`` is a list of dicts with ``id``, ``src``, ``orig_id``, ``category``,
    ``score``, ``status``, ``annotator`` and the image's own ``width`` and
    ``height`` (pixels; the thumbnail may be smaller); ``selected`` holds the
    selected ids. Shift-click selects the range from the last clicked tile;
    dragging a rectangle over tiles selects them (with Shift or Ctrl: adds
    them). Images are drawn at ``zoom`` percent of their own size, so sizes
    compare across tiles, with a scale bar when ``pixel_size_um`` is known.
    Shortcut keys (:data:`SHORTCUTS`) are sent to ``on_shortcut``.
    """

    items = param.List(default=[], doc="Tiles to show, in order.")
    selected = param.List(default=[], doc="Ids of the selected objects.")
    shortcuts = param.Dict(default=SHORTCUTS, constant=True)
    shortcut_help = param.List(default=SHORTCUT_HELP, constant=True)
    keyboard = param.Boolean(default=True, constant=True,
                             doc="Whether the page's keys act on this grid (one grid per page).")
    zoom = param.Integer(default=100, bounds=(0, 400),
                         doc="Images at this percentage of their own size (shrunk to fit the "
                             "tile when larger, so relative sizes show); 0: each fills its tile.")
    pixel_size_um = param.Number(default=None, allow_None=True, bounds=(0, None),
                                 doc="Micrometres per image pixel: each tile gets a scale bar.")

    _esm = """
    function fmtScore(s) { return (s === null || s === undefined) ? "" : s.toFixed(2); }

    const BASE_FRAME = 132;  // px: the image area of a tile at zoom 100 % or "fit"
    function frameSize(zoom) {
      return zoom === 0 ? BASE_FRAME : Math.round(Math.min(396, Math.max(96, BASE_FRAME * zoom / 100)));
    }
    // Screen pixels per image pixel: the zoom, or less when the image would overflow its frame.
    function imageScale(zoom, frame, w, h) {
      const fit = Math.min(frame / w, frame / h);
      return zoom === 0 ? fit : Math.min(zoom / 100, fit);
    }
    // A scale bar of a round length (1, 2 or 5 times a power of ten, in µm) about 40 px long.
    function scaleBar(umPerPx) {
      const target = 40 * umPerPx;
      const power = Math.pow(10, Math.floor(Math.log10(target)));
      const um = [5, 2, 1].map((m) => m * power).find((v) => v <= target) || power;
      const label = um >= 1000 ? (um / 1000) + " mm" : (um >= 1 ? um + " \u00b5m" : um.toPrecision(1) + " \u00b5m");
      return { um: um, px: um / umPerPx, label: label };
    }

    // querySelector through the shadow roots that Panel's layouts put around each widget.
    function deepFind(root, selector) {
      const hit = root.querySelector(selector);
      if (hit) return hit;
      for (const el of root.querySelectorAll("*")) {
        if (el.shadowRoot) {
          const found = deepFind(el.shadowRoot, selector);
          if (found) return found;
        }
      }
      return null;
    }

    export function render({ model, el }) {
      const grid = document.createElement("div");
      grid.className = "et-grid";
      let last = null;

      function sizeImage(img, it, frameEl, frame) {
        const w = it.width || img.naturalWidth, h = it.height || img.naturalHeight;
        if (!w || !h) return;
        const scale = imageScale(model.zoom, frame, w, h);
        img.style.width = Math.max(1, Math.round(w * scale)) + "px";
        img.style.height = Math.max(1, Math.round(h * scale)) + "px";
        img.dataset.scale = String(scale);
        frameEl.querySelector(".et-scale-bar")?.remove();
        if (model.pixel_size_um) {
          const bar = scaleBar(model.pixel_size_um / scale);
          const el = document.createElement("div");
          el.className = "et-scale-bar";
          el.dataset.um = String(bar.um);
          el.style.width = Math.round(bar.px) + "px";
          el.textContent = bar.label;
          frameEl.append(el);
        }
      }

      function draw() {
        const chosen = new Set(model.selected);
        const frame = frameSize(model.zoom);
        grid.replaceChildren();
        if (model.items.length === 0) {
          const empty = document.createElement("div");
          empty.className = "et-grid-empty";
          empty.textContent = "No objects match these filters.";
          grid.append(empty);
          return;
        }
        for (const it of model.items) {
          const tile = document.createElement("div");
          tile.className = "et-thumb et-status-" + it.status + (chosen.has(it.id) ? " et-selected" : "");
          tile.dataset.objectId = it.id;
          tile.dataset.status = it.status;
          tile.dataset.score = it.score === null ? "" : String(it.score);
          tile.dataset.category = it.category || "";
          tile.title = it.orig_id + " (" + it.status + (it.annotator ? ", " + it.annotator : "") + ")";
          tile.style.width = (frame + 16) + "px";
          const frameEl = document.createElement("div");
          frameEl.className = "et-thumb-frame";
          frameEl.style.height = frame + "px";
          if (it.src) {
            const img = document.createElement("img");
            img.className = "et-thumb-img";
            img.draggable = false;
            img.alt = it.orig_id;
            img.loading = "lazy";
            if (it.width && it.height) sizeImage(img, it, frameEl, frame);
            else img.addEventListener("load", () => sizeImage(img, it, frameEl, frame), { once: true });
            img.src = it.src;
            frameEl.append(img);
          }
          const cat = document.createElement("div");
          cat.className = "et-thumb-category";
          cat.textContent = it.category || "(unclassified)";
          const meta = document.createElement("div");
          meta.className = "et-thumb-meta";
          const score = document.createElement("span");
          score.className = "et-thumb-score";
          score.textContent = fmtScore(it.score);
          const status = document.createElement("span");
          status.className = "et-thumb-status";
          status.textContent = it.status;
          meta.append(status, score);
          tile.append(frameEl, cat, meta);
          for (const [name, value] of (it.fields || [])) {
            const line = document.createElement("div");
            line.className = "et-thumb-field";
            line.dataset.field = name;
            line.textContent = name + ": " + value;
            tile.append(line);
          }
          grid.append(tile);
        }
      }

      // Drag a rectangle to select the tiles it touches (Shift or Ctrl/Cmd: add to the selection).
      const band = document.createElement("div");
      band.className = "et-drag-band";
      band.hidden = true;
      let drag = null, dragged = false, suppressClick = false;
      grid.addEventListener("mousedown", (event) => {
        if (event.button !== 0) return;
        drag = { x: event.clientX, y: event.clientY, add: event.shiftKey || event.ctrlKey || event.metaKey };
        dragged = false;
      });
      function dragBox(event) {
        return { left: Math.min(drag.x, event.clientX), right: Math.max(drag.x, event.clientX),
                 top: Math.min(drag.y, event.clientY), bottom: Math.max(drag.y, event.clientY) };
      }
      function onMove(event) {
        if (!drag) return;
        if (!dragged && Math.hypot(event.clientX - drag.x, event.clientY - drag.y) < 6) return;
        dragged = true;
        const box = dragBox(event);
        Object.assign(band.style, { left: box.left + "px", top: box.top + "px",
                                    width: (box.right - box.left) + "px", height: (box.bottom - box.top) + "px" });
        band.hidden = false;
        event.preventDefault();
      }
      function onUp(event) {
        if (!drag) return;
        if (dragged) {
          suppressClick = true;  // the click that ends a drag is not a click on a tile
          setTimeout(() => { suppressClick = false; }, 0);
          const box = dragBox(event);
          const hit = new Set();
          for (const tile of grid.querySelectorAll(".et-thumb")) {
            const r = tile.getBoundingClientRect();
            if (r.left < box.right && r.right > box.left && r.top < box.bottom && r.bottom > box.top) {
              hit.add(Number(tile.dataset.objectId));
            }
          }
          const chosen = drag.add ? new Set(model.selected) : new Set();
          for (const id of hit) chosen.add(id);
          model.selected = model.items.map((it) => it.id).filter((i) => chosen.has(i));
        }
        band.hidden = true;
        drag = null;
        dragged = false;
      }
      document.addEventListener("mousemove", onMove);
      document.addEventListener("mouseup", onUp);
      model.on("remove", () => {
        document.removeEventListener("mousemove", onMove);
        document.removeEventListener("mouseup", onUp);
      });

      grid.addEventListener("click", (event) => {
        if (suppressClick) return;
        const tile = event.target.closest(".et-thumb");
        if (!tile) return;
        const id = Number(tile.dataset.objectId);
        const ids = model.items.map((it) => it.id);
        const chosen = new Set(model.selected);
        if (event.shiftKey && last !== null && ids.includes(last)) {
          const [a, b] = [ids.indexOf(last), ids.indexOf(id)].sort((x, y) => x - y);
          for (const other of ids.slice(a, b + 1)) chosen.add(other);
        } else if (chosen.has(id)) {
          chosen.delete(id);
        } else {
          chosen.add(id);
        }
        last = id;
        model.selected = ids.filter((i) => chosen.has(i));
      });

      // "?": the keys, over the page.
      const help = document.createElement("div");
      help.className = "et-help-overlay";
      help.hidden = true;
      const table = document.createElement("table");
      for (const [key, what] of model.shortcut_help) {
        const row = table.insertRow();
        const k = document.createElement("th");
        k.textContent = key;
        row.append(k);
        row.insertCell().textContent = what;
      }
      const title = document.createElement("h3");
      title.textContent = "Keyboard";
      help.append(title, table);
      help.addEventListener("click", () => { help.hidden = true; });

      // Hover: a larger view of the image, next to the tile.
      const preview = document.createElement("img");
      preview.className = "et-preview";
      preview.hidden = true;
      let hoverTimer = null;
      grid.addEventListener("mouseover", (event) => {
        const img = event.target.closest(".et-thumb-img");
        clearTimeout(hoverTimer);
        if (!img) { preview.hidden = true; return; }
        hoverTimer = setTimeout(() => {
          const box = img.getBoundingClientRect();
          preview.src = img.src;
          preview.style.left = Math.min(box.right + 8, window.innerWidth - 420) + "px";
          preview.style.top = Math.max(8, Math.min(box.top, window.innerHeight - 420)) + "px";
          preview.hidden = false;
        }, 350);
      });
      grid.addEventListener("mouseleave", () => { clearTimeout(hoverTimer); preview.hidden = true; });

      function onKey(event) {
        const target = event.composedPath()[0];
        if (target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))) return;
        if ((event.ctrlKey || event.metaKey) && !event.altKey && event.key.toLowerCase() === "z") {
          event.preventDefault();
          model.send_msg({ action: "undo" });
          return;
        }
        if (event.ctrlKey || event.metaKey || event.altKey) return;
        if (event.key === "?") { help.hidden = !help.hidden; event.preventDefault(); return; }
        if (model.shortcuts[event.key] === "move") {
          // Focus the category picker here and now: keys typed next must not be shortcuts.
          event.preventDefault();
          const host = deepFind(document, ".et-picker-host");
          const input = host && deepFind(host.shadowRoot || host, ".et-picker-input");
          if (input) { input.focus(); input.select(); }
          return;
        }
        const action = model.shortcuts[event.key];
        if (action) {
          event.preventDefault();
          help.hidden = true;
          model.send_msg({ action: action });
        }
      }
      if (model.keyboard) {
        document.addEventListener("keydown", onKey);
        model.on("remove", () => document.removeEventListener("keydown", onKey));
      }
      model.on(["items", "selected", "zoom", "pixel_size_um"], draw);
      draw();
      const host = document.createElement("div");
      host.append(grid, preview, band);
      if (model.keyboard) host.append(help);
      return host;
    }
    """

    _stylesheets = ["""
    .et-grid { display: flex; flex-wrap: wrap; gap: 10px; padding: 4px; }
    .et-grid-empty { color: #666; padding: 24px; font-style: italic; }
    .et-thumb { width: 148px; box-sizing: border-box; border: 2px solid #d0d4d9; border-radius: 6px;
                background: #fff; padding: 4px; cursor: pointer; user-select: none;
                font: 12px/1.3 system-ui, sans-serif; position: relative; }
    .et-thumb:hover { border-color: #8aa4c8; }
    .et-thumb-frame { height: 132px; display: flex; align-items: center; justify-content: center;
                      background: #f4f5f7; border-radius: 3px; overflow: hidden; position: relative; }
    .et-thumb-img { max-width: 100%; max-height: 100%; object-fit: contain; }
    .et-scale-bar { position: absolute; left: 4px; bottom: 3px; border-bottom: 2px solid #222;
                    font-size: 9px; line-height: 10px; color: #222; text-align: center;
                    white-space: nowrap; pointer-events: none; }
    .et-drag-band { position: fixed; z-index: 800; border: 1px dashed #1f5fa8;
                    background: rgba(31, 95, 168, .12); pointer-events: none; }
    .et-thumb-category { margin-top: 4px; font-weight: 600; white-space: nowrap; overflow: hidden;
                         text-overflow: ellipsis; }
    .et-thumb-meta { display: flex; justify-content: space-between; color: #555; }
    .et-thumb-score { font-variant-numeric: tabular-nums; }
    .et-thumb-field { color: #555; font-size: 11px; white-space: nowrap; overflow: hidden;
                      text-overflow: ellipsis; }
    .et-status-predicted .et-thumb-status { color: #1f5fa8; }
    .et-status-validated .et-thumb-status { color: #1e7a34; }
    .et-status-dubious .et-thumb-status { color: #b25d00; }
    .et-status-unclassified .et-thumb-status { color: #777; }
    .et-thumb.et-selected { border-color: #e0a000; background: #fff6d6;
                            box-shadow: 0 0 0 2px #e0a000; }
    .et-help-overlay { position: fixed; z-index: 1000; top: 80px; left: 50%; transform: translateX(-50%);
                       background: #fff; border: 1px solid #8aa4c8; border-radius: 8px; padding: 12px 20px;
                       box-shadow: 0 8px 30px rgba(0,0,0,.25); font: 14px system-ui, sans-serif; }
    .et-help-overlay th { text-align: right; padding: 3px 12px 3px 0; white-space: nowrap; }
    .et-help-overlay h3 { margin: 0 0 8px; }
    .et-preview { position: fixed; z-index: 900; max-width: 400px; max-height: 400px; background: #fff;
                  border: 1px solid #8aa4c8; border-radius: 4px; box-shadow: 0 6px 20px rgba(0,0,0,.25);
                  pointer-events: none; image-rendering: pixelated; min-width: 200px; }
    .et-thumb.et-selected::after { content: "\\2713"; position: absolute; top: 6px; right: 8px;
                                   background: #e0a000; color: #fff; border-radius: 50%;
                                   width: 20px; height: 20px; text-align: center; line-height: 20px;
                                   font-weight: bold; }
    """]

    def __init__(self, on_shortcut: Callable[[str], None] | None = None, **params):
        super().__init__(**params)
        self._on_shortcut = on_shortcut

    def _handle_msg(self, data) -> None:
        action = data.get("action") if isinstance(data, dict) else None
        if self._on_shortcut is not None and action in SHORTCUTS.values():
            self._on_shortcut(action)


class TaxonPicker(JSComponent):
    """A type-ahead category picker.

    Typing sets ``query``; whoever owns the picker answers by setting
    ``options`` (a list of ``[taxon_id, display_name]``). Choosing an option
    (click, or arrows and Enter) sets ``value`` (the taxon id) and ``label``;
    Enter again calls ``on_submit`` (the page moves the selection there).
    """

    query = param.String(default="", doc="What the user typed.")
    options = param.List(default=[], doc="Suggestions: [[taxon_id, display_name], ...].")
    value = param.Integer(default=None, allow_None=True, doc="Chosen taxon id.")
    label = param.String(default="", doc="Display name of the chosen taxon.")
    placeholder = param.String(default="Move to category...")

    _esm = """
    export function render({ model, el }) {
      const box = document.createElement("div");
      box.className = "et-picker";
      const input = document.createElement("input");
      input.className = "et-picker-input";
      input.type = "text";
      input.placeholder = model.placeholder;
      input.value = model.label;
      input.autocomplete = "off";
      const list = document.createElement("ul");
      list.className = "et-picker-options";
      list.hidden = true;
      let active = 0;
      let timer = null;

      function choose(id, name) {
        model.label = name;
        model.value = id;
        input.value = name;
        list.hidden = true;
      }
      function focused() { return input.getRootNode().activeElement === input; }
      function drawOptions() {
        list.replaceChildren();
        model.options.forEach(([id, name], i) => {
          const li = document.createElement("li");
          li.className = "et-picker-option" + (i === active ? " et-active" : "");
          li.dataset.taxonId = id;
          li.textContent = name;
          li.addEventListener("mousedown", (e) => { e.preventDefault(); choose(id, name); });
          list.append(li);
        });
      }
      input.addEventListener("input", () => {
        active = 0;
        if (model.value !== null) { model.value = null; model.label = ""; }
        clearTimeout(timer);
        timer = setTimeout(() => { model.query = input.value; }, 120);
      });
      input.addEventListener("focus", () => {
        list.hidden = model.options.length === 0;
        model.send_msg({ focused: true });  // the owner may offer suggestions (recent ones)
      });
      input.addEventListener("blur", () => { list.hidden = true; });
      input.addEventListener("keydown", (e) => {
        const n = model.options.length;
        if (e.key === "ArrowDown" && n) { active = (active + 1) % n; drawOptions(); e.preventDefault(); }
        else if (e.key === "ArrowUp" && n) { active = (active - 1 + n) % n; drawOptions(); e.preventDefault(); }
        else if (e.key === "Enter" && n && !list.hidden) { const [id, name] = model.options[active]; choose(id, name); }
        else if (e.key === "Enter" && model.value !== null) { model.send_msg({ submit: true }); }
        else if (e.key === "Escape") { list.hidden = true; }
      });
      model.on("options", () => {
        active = 0;
        drawOptions();
        list.hidden = model.options.length === 0 || !focused();
      });
      // The owner clears the picker after a move (see TaxonPicker.clear).
      model.on("msg:custom", (msg) => {
        if (msg && msg.clear) { clearTimeout(timer); input.value = ""; list.hidden = true; }
      });
      box.append(input, list);
      return box;
    }
    """

    _stylesheets = ["""
    .et-picker { position: relative; width: 100%; font: 14px system-ui, sans-serif; }
    .et-picker-input { width: 100%; height: 31px; box-sizing: border-box; padding: 4px 8px;
                       border: 1px solid #c4c9d0; border-radius: 4px; font: inherit; }
    .et-picker-options { position: absolute; z-index: 100; left: 0; right: 0; margin: 2px 0 0; padding: 0;
                         list-style: none; background: #fff; border: 1px solid #c4c9d0; border-radius: 4px;
                         max-height: 260px; overflow-y: auto; box-shadow: 0 4px 12px rgba(0,0,0,.15); }
    .et-picker-option { padding: 5px 8px; cursor: pointer; }
    .et-picker-option.et-active, .et-picker-option:hover { background: #e6eefa; }
    """]

    def __init__(self, on_submit: Callable[[], None] | None = None,
                 on_focus: Callable[[], None] | None = None, **params):
        super().__init__(**params)
        self.on_submit = on_submit
        self.on_focus = on_focus

    def clear(self) -> None:
        """Forget the chosen category and empty the text field."""
        self.param.update(value=None, label="", query="", options=[])
        self._send_msg({"clear": True})


    def _handle_msg(self, data) -> None:
        if not isinstance(data, dict):
            return
        if data.get("submit") and self.on_submit is not None:
            self.on_submit()
        if data.get("focused") and self.on_focus is not None:
            self.on_focus()


class CategoryTree(JSComponent):
    """The project's categories as a collapsible tree with their counts; click to filter.

    ``nodes`` lists the categories depth first (parents before children), each
    a dict with ``id``, ``name``, ``depth`` and the subtree counts ``v``
    (validated), ``p`` (predicted), ``d`` (dubious). Clicking a name sets
    ``chosen`` to its id; the triangle folds or unfolds its children.
    """

    nodes = param.List(default=[], doc="Categories, depth first.")
    chosen = param.Integer(default=None, allow_None=True, doc="The category clicked last.")

    _esm = """
    export function render({ model, el }) {
      const box = document.createElement("div");
      box.className = "et-tree";
      const folded = new Set();

      function draw() {
        box.replaceChildren();
        let hideBelow = null;  // depth under which rows are folded away
        const nodes = model.nodes;
        nodes.forEach((n, i) => {
          if (hideBelow !== null && n.depth > hideBelow) return;
          hideBelow = folded.has(n.id) ? n.depth : null;
          const row = document.createElement("div");
          row.className = "et-tree-node" + (n.id === model.chosen ? " et-chosen" : "");
          row.dataset.taxonId = n.id;
          row.style.paddingLeft = (4 + 14 * n.depth) + "px";
          const hasChildren = i + 1 < nodes.length && nodes[i + 1].depth > n.depth;
          const fold = document.createElement("span");
          fold.className = "et-tree-fold";
          fold.textContent = hasChildren ? (folded.has(n.id) ? "\u25b8" : "\u25be") : "";
          fold.addEventListener("click", (e) => {
            e.stopPropagation();
            if (folded.has(n.id)) folded.delete(n.id); else folded.add(n.id);
            draw();
          });
          const name = document.createElement("span");
          name.className = "et-tree-name";
          name.textContent = n.name;
          const counts = document.createElement("span");
          counts.className = "et-tree-counts";
          counts.title = "validated / predicted / dubious, with sub-categories";
          counts.innerHTML = '<b class="et-v">' + n.v + '</b> <span class="et-p">' + n.p +
                             '</span> <span class="et-d">' + n.d + '</span>';
          row.append(fold, name, counts);
          row.addEventListener("click", () => { model.chosen = n.id; });
          box.append(row);
        });
      }
      model.on(["nodes", "chosen"], draw);
      draw();
      return box;
    }
    """

    _stylesheets = ["""
    .et-tree { font: 13px/1.5 system-ui, sans-serif; max-height: 360px; overflow-y: auto;
               border: 1px solid #d0d4d9; border-radius: 4px; background: #fff; }
    .et-tree-node { display: flex; gap: 4px; cursor: pointer; padding-right: 6px; }
    .et-tree-node:hover { background: #eef3fb; }
    .et-tree-node.et-chosen { background: #dce8f8; font-weight: 600; }
    .et-tree-fold { width: 12px; flex: none; color: #555; }
    .et-tree-name { flex: 1; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
    .et-tree-counts { flex: none; font-variant-numeric: tabular-nums; font-size: 12px; }
    .et-v { color: #1e7a34; } .et-p { color: #1f5fa8; } .et-d { color: #b25d00; }
    """]
