/*
 * Weir UI: zoom, pan, search and neighbourhood view for a run's graph. Plain JavaScript, no
 * build step, no library. Served as /static/graph.js and loaded with `defer`.
 *
 * What it expects in the page (all made by src/ui/graph.rs, render_svg):
 *   #graph                      the container; the script works on the first svg.weir-graph in it
 *   svg.weir-graph[viewBox]     the drawing, its viewBox covering the whole graph
 *   g.node[data-task][data-state][transform="translate(x y)"]
 *                               one per task; its first <rect class="box"> gives the size,
 *                               its <a> (with href when the task has a page) takes the focus
 *   path.edge[data-from][data-to]  one per edge, by task name
 *
 * What it adds (or uses, when the page already has elements with these ids), in a toolbar
 * placed before the svg:
 *   #graph-search      search box: highlights tasks whose name or label contains the text
 *                      (class "match"; the svg gets class "searching", which dims the
 *                      rest), centres the view on the first;
 *                      Enter moves the keyboard focus to the next match
 *   #graph-zoom-in, #graph-zoom-out, #graph-fit   buttons
 *   #graph-neighbours  toggle: show only the selected task (the last one focused) with its
 *                      upstream and downstream tasks, up to #graph-depth steps away; the
 *                      rest is hidden (class "hidden"), which keeps a run of thousands of
 *                      tasks usable
 *   #graph-depth       select: 1, 2, 3 steps or all
 *   #graph-status      polite live region saying what the view shows
 *
 * Keyboard, while the focus is in #graph (but not in the search box): + and - zoom, the
 * arrow keys pan, 0 fits the whole graph, / goes to the search box. Tab walks the task links.
 * Mouse: the wheel zooms around the pointer, dragging the background pans.
 * The current view is the svg's viewBox attribute; the svg keeps data-zoom (1 = whole graph).
 */
(function () {
  "use strict";

  var MIN_SIZE = 40; // smallest viewBox side, in drawing units
  var STEP = 1.25; // one zoom step
  var MIN_OVERVIEW_SCALE = 0.3; // a whole graph smaller than this on screen is unreadable
  var READABLE_SCALE = 0.7; // where such a graph starts instead

  function init() {
    var root = document.getElementById("graph");
    if (!root) return;
    var svg = root.querySelector("svg.weir-graph");
    if (!svg) return;

    var full = parseBox(svg.getAttribute("viewBox"));
    var view = { x: full.x, y: full.y, w: full.w, h: full.h };
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    svg.style.width = "100%";
    svg.style.height = Math.max(240, Math.min(full.h, window.innerHeight * 0.75)) + "px";
    svg.style.touchAction = "none";
    svg.style.cursor = "grab";

    var nodes = {};
    var nodeList = [];
    Array.prototype.forEach.call(svg.querySelectorAll("g.node"), function (g) {
      var t = /translate\(\s*([-\d.]+)[ ,]+([-\d.]+)/.exec(g.getAttribute("transform") || "");
      var box = g.querySelector("rect.box");
      var label = g.querySelector("text.label");
      var node = {
        el: g,
        link: g.querySelector("a"),
        id: g.getAttribute("data-task") || "",
        text: ((g.getAttribute("data-task") || "") + "\n" + (label ? label.textContent : "")).toLowerCase(),
        x: t ? parseFloat(t[1]) : 0,
        y: t ? parseFloat(t[2]) : 0,
        w: box ? parseFloat(box.getAttribute("width")) : 0,
        h: box ? parseFloat(box.getAttribute("height")) : 0,
        match: false,
        up: [],
        down: [],
        edges: []
      };
      if (!nodes[node.id]) nodes[node.id] = node;
      nodeList.push(node);
    });
    var edgeList = Array.prototype.slice.call(svg.querySelectorAll("path.edge"));
    edgeList.forEach(function (e) {
      var from = nodes[e.getAttribute("data-from")];
      var to = nodes[e.getAttribute("data-to")];
      if (!from || !to) return;
      from.down.push(to);
      to.up.push(from);
      from.edges.push(e);
      to.edges.push(e);
    });

    var ui = toolbar(root, svg);
    var selected = null;
    var matches = [];
    var matchAt = -1;

    function apply() {
      svg.setAttribute("viewBox", [view.x, view.y, view.w, view.h].map(round).join(" "));
      svg.setAttribute("data-zoom", round(full.w / view.w));
    }

    function say(text) {
      ui.status.textContent = text;
    }

    function zoomBy(factor, cx, cy) {
      var w = clamp(view.w / factor, MIN_SIZE, Math.max(full.w, full.h) * 4);
      var f = view.w / w;
      if (cx === undefined) {
        cx = view.x + view.w / 2;
        cy = view.y + view.h / 2;
      }
      view.x = cx - (cx - view.x) / f;
      view.y = cy - (cy - view.y) / f;
      view.w = w;
      view.h = view.h / f;
      apply();
    }

    function fitTo(box, pad) {
      pad = pad || 24;
      var aspect = svg.clientWidth && svg.clientHeight ? svg.clientWidth / svg.clientHeight : full.w / full.h;
      var w = Math.max(box.w + 2 * pad, MIN_SIZE);
      var h = Math.max(box.h + 2 * pad, MIN_SIZE);
      if (w / h < aspect) w = h * aspect;
      else h = w / aspect;
      view = { x: box.x + box.w / 2 - w / 2, y: box.y + box.h / 2 - h / 2, w: w, h: h };
      apply();
    }

    function fitVisible() {
      var shown = nodeList.filter(function (n) {
        return !n.el.classList.contains("hidden");
      });
      if (shown.length === nodeList.length || shown.length === 0) fitTo(full, 0);
      else fitTo(bounds(shown));
    }

    function centreOn(node) {
      var w = Math.min(view.w, Math.max(node.w * 4, 480));
      var h = view.h * (w / view.w);
      view = { x: node.x + node.w / 2 - w / 2, y: node.y + node.h / 2 - h / 2, w: w, h: h };
      apply();
    }

    function visibleInView(node) {
      return node.x >= view.x && node.y >= view.y && node.x + node.w <= view.x + view.w && node.y + node.h <= view.y + view.h;
    }

    // Search. Only the matches change class; the rest is dimmed by one class on the svg,
    // so that a keystroke costs a style pass, not thousands of DOM writes.
    function search() {
      var q = ui.search.value.trim().toLowerCase();
      matches = [];
      matchAt = -1;
      nodeList.forEach(function (n) {
        var hit = q !== "" && n.text.indexOf(q) >= 0;
        if (hit !== n.match) {
          n.match = hit;
          n.el.classList.toggle("match", hit);
        }
        if (hit) matches.push(n);
      });
      svg.classList.toggle("searching", q !== "");
      if (q === "") {
        say(nodeList.length + " tasks");
        return;
      }
      // An exact name first, then in drawing order.
      matches.sort(function (a, b) {
        return (b.id.toLowerCase() === q) - (a.id.toLowerCase() === q);
      });
      say(matches.length === 0 ? "No task matches \u201c" + ui.search.value + "\u201d" : matches.length + " matching task" + (matches.length === 1 ? "" : "s") + ": Enter goes to " + (matches.length === 1 ? "it" : "the next"));
      if (matches.length) centreOn(matches[0]);
    }

    function nextMatch() {
      if (!matches.length) return;
      matchAt = (matchAt + 1) % matches.length;
      var n = matches[matchAt];
      centreOn(n);
      if (n.link) n.link.focus();
    }

    // Neighbourhood.
    function neighbourhood(node, depth) {
      var keep = new Set([node]);
      ["up", "down"].forEach(function (dir) {
        var frontier = [node];
        for (var d = 0; frontier.length && (depth === 0 || d < depth); d++) {
          var next = [];
          frontier.forEach(function (n) {
            n[dir].forEach(function (m) {
              if (!keep.has(m)) {
                keep.add(m);
                next.push(m);
              }
            });
          });
          frontier = next;
        }
      });
      return keep;
    }

    function showNeighbourhood(on) {
      ui.neighbours.setAttribute("aria-pressed", on ? "true" : "false");
      if (!on || !selected) {
        nodeList.forEach(function (n) {
          n.el.classList.remove("hidden");
        });
        edgeList.forEach(function (e) {
          e.classList.remove("hidden");
        });
        if (on && !selected) {
          ui.neighbours.setAttribute("aria-pressed", "false");
          say("Select a task first (focus or click it), then show its neighbourhood");
        } else {
          say(nodeList.length + " tasks");
        }
        fitVisible();
        return;
      }
      var keep = neighbourhood(selected, parseInt(ui.depth.value, 10) || 0);
      nodeList.forEach(function (n) {
        n.el.classList.toggle("hidden", !keep.has(n));
      });
      edgeList.forEach(function (e) {
        var a = nodes[e.getAttribute("data-from")];
        var b = nodes[e.getAttribute("data-to")];
        e.classList.toggle("hidden", !(keep.has(a) && keep.has(b)));
      });
      say("Showing " + keep.size + " of " + nodeList.length + " tasks around " + selected.id);
      fitVisible();
    }

    // Wiring.
    ui.search.addEventListener("input", search);
    ui.search.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter") {
        ev.preventDefault();
        nextMatch();
      } else if (ev.key === "Escape") {
        ui.search.value = "";
        search();
      }
    });
    ui.zoomIn.addEventListener("click", function () {
      zoomBy(STEP);
    });
    ui.zoomOut.addEventListener("click", function () {
      zoomBy(1 / STEP);
    });
    ui.fit.addEventListener("click", fitVisible);
    ui.neighbours.addEventListener("click", function () {
      showNeighbourhood(ui.neighbours.getAttribute("aria-pressed") !== "true");
    });
    ui.depth.addEventListener("change", function () {
      if (ui.neighbours.getAttribute("aria-pressed") === "true") showNeighbourhood(true);
    });

    svg.addEventListener("focusin", function (ev) {
      var g = ev.target.closest && ev.target.closest("g.node");
      if (!g) return;
      selected = nodes[g.getAttribute("data-task")] || null;
      if (selected && !visibleInView(selected)) centreOn(selected);
    });
    svg.addEventListener("pointerdown", function (ev) {
      var g = ev.target.closest && ev.target.closest("g.node");
      if (g) selected = nodes[g.getAttribute("data-task")] || selected;
    });

    svg.addEventListener(
      "wheel",
      function (ev) {
        ev.preventDefault();
        var p = toDrawing(svg, ev.clientX, ev.clientY);
        zoomBy(ev.deltaY < 0 ? STEP : 1 / STEP, p.x, p.y);
      },
      { passive: false }
    );

    var drag = null;
    svg.addEventListener("pointerdown", function (ev) {
      if (ev.button !== 0 || (ev.target.closest && ev.target.closest("a[href]"))) return;
      drag = { x: ev.clientX, y: ev.clientY, view: { x: view.x, y: view.y } };
      svg.setPointerCapture(ev.pointerId);
      svg.style.cursor = "grabbing";
    });
    svg.addEventListener("pointermove", function (ev) {
      if (!drag) return;
      var scale = view.w / (svg.clientWidth || full.w);
      view.x = drag.view.x - (ev.clientX - drag.x) * scale;
      view.y = drag.view.y - (ev.clientY - drag.y) * scale;
      apply();
    });
    function endDrag() {
      drag = null;
      svg.style.cursor = "grab";
    }
    svg.addEventListener("pointerup", endDrag);
    svg.addEventListener("pointercancel", endDrag);

    root.addEventListener("keydown", function (ev) {
      if (ev.target === ui.search || ev.target.tagName === "SELECT" || ev.altKey || ev.ctrlKey || ev.metaKey) return;
      var pan = view.w / 8;
      var handled = true;
      switch (ev.key) {
        case "+":
        case "=":
          zoomBy(STEP);
          break;
        case "-":
        case "_":
          zoomBy(1 / STEP);
          break;
        case "0":
          fitVisible();
          break;
        case "ArrowLeft":
          view.x -= pan;
          apply();
          break;
        case "ArrowRight":
          view.x += pan;
          apply();
          break;
        case "ArrowUp":
          view.y -= pan;
          apply();
          break;
        case "ArrowDown":
          view.y += pan;
          apply();
          break;
        case "/":
          ui.search.focus();
          break;
        default:
          handled = false;
      }
      if (handled) ev.preventDefault();
    });

    fitTo(full, 0);
    var scale = svg.clientWidth ? svg.clientWidth / view.w : 1;
    if (scale < MIN_OVERVIEW_SCALE) {
      // Too many tasks to read them all at once: start readable, at the top left.
      var f = READABLE_SCALE / scale;
      view = { x: full.x, y: full.y, w: view.w / f, h: view.h / f };
      apply();
      say(nodeList.length + " tasks: \u2212 or Fit shows them all, the search box finds one");
    } else {
      say(nodeList.length + " tasks");
    }
    root.setAttribute("data-graph-ready", "true");
  }

  function toolbar(root, svg) {
    var bar = document.createElement("div");
    bar.className = "graph-toolbar";
    bar.setAttribute("role", "toolbar");
    bar.setAttribute("aria-label", "Graph view");
    bar.style.cssText = "display:flex;flex-wrap:wrap;gap:.5em;align-items:center;margin:.5em 0";
    function find(id, make) {
      var el = document.getElementById(id);
      if (el) return el;
      el = make();
      el.id = id;
      bar.appendChild(el);
      return el;
    }
    function button(text, title) {
      return function () {
        var b = document.createElement("button");
        b.type = "button";
        b.textContent = text;
        b.title = title;
        b.setAttribute("aria-label", title);
        return b;
      };
    }
    var ui = {};
    ui.search = find("graph-search", function () {
      var i = document.createElement("input");
      i.type = "search";
      i.placeholder = "Find a task (/)";
      i.setAttribute("aria-label", "Find a task by name");
      i.autocomplete = "off";
      return i;
    });
    ui.zoomIn = find("graph-zoom-in", button("+", "Zoom in"));
    ui.zoomOut = find("graph-zoom-out", button("\u2212", "Zoom out"));
    ui.fit = find("graph-fit", button("Fit", "Fit the graph to the view"));
    ui.neighbours = find("graph-neighbours", function () {
      var b = button("Neighbourhood", "Show only the selected task with its upstream and downstream tasks")();
      b.setAttribute("aria-pressed", "false");
      return b;
    });
    ui.depth = find("graph-depth", function () {
      var s = document.createElement("select");
      s.setAttribute("aria-label", "Neighbourhood depth");
      [["1", "1 step"], ["2", "2 steps"], ["3", "3 steps"], ["0", "all"]].forEach(function (o) {
        var opt = document.createElement("option");
        opt.value = o[0];
        opt.textContent = o[1];
        s.appendChild(opt);
      });
      s.value = "2";
      return s;
    });
    ui.status = find("graph-status", function () {
      var s = document.createElement("span");
      s.setAttribute("role", "status");
      s.setAttribute("aria-live", "polite");
      return s;
    });
    if (bar.childNodes.length) root.insertBefore(bar, svg);
    return ui;
  }

  function toDrawing(svg, clientX, clientY) {
    var pt = svg.createSVGPoint();
    pt.x = clientX;
    pt.y = clientY;
    var m = svg.getScreenCTM();
    return m ? pt.matrixTransform(m.inverse()) : { x: 0, y: 0 };
  }

  function bounds(list) {
    var x0 = Infinity,
      y0 = Infinity,
      x1 = -Infinity,
      y1 = -Infinity;
    list.forEach(function (n) {
      x0 = Math.min(x0, n.x);
      y0 = Math.min(y0, n.y);
      x1 = Math.max(x1, n.x + n.w);
      y1 = Math.max(y1, n.y + n.h);
    });
    return { x: x0, y: y0, w: x1 - x0, h: y1 - y0 };
  }

  function parseBox(text) {
    var p = (text || "0 0 100 100").split(/[\s,]+/).map(parseFloat);
    return { x: p[0] || 0, y: p[1] || 0, w: p[2] || 100, h: p[3] || 100 };
  }

  function clamp(v, lo, hi) {
    return Math.max(lo, Math.min(hi, v));
  }

  function round(v) {
    return Math.round(v * 100) / 100;
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
