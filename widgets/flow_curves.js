// FlowCurves view: an SVG line chart of % change vs window centre for the chosen task.
// Python supplies the series, colours and axis extents; the view only draws them.

const SVG = "http://www.w3.org/2000/svg";
const DASHES = ["", "8 4", "2 4", "10 4 2 4", "4 4", "12 6", "2 2", "6 2 2 2"];
const W = 720, H = 420, M = { top: 20, right: 24, bottom: 58, left: 76 };

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  if (text !== undefined) el.textContent = text;
  return el;
}

// h("div", {class: "x", text: "hi", style: {color: "red"}}, [children]): one DOM element.
// (Repeated in each widget's module: anywidget loads a module from a Blob URL, so modules cannot share an import.)
function h(tag, attrs = {}, children = []) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "style" && typeof value === "object") Object.assign(el.style, value);
    else el.setAttribute(key, value);
  }
  for (const child of children) el.append(child);
  return el;
}

function ticks(lo, hi, count) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const step = [1, 2, 5, 10].map((m) => m * 10 ** Math.floor(Math.log10(raw))).find((v) => v >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(Math.round(v * 1e6) / 1e6);
  return out;
}

function render({ model, el }) {
  const root = h("div", { class: "fk fk-flow" });
  const select = h("select", { class: "fk-select", "aria-label": "task" });
  const legend = h("div", { class: "fk-legend", "data-role": "legend" });
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "fk-svg", role: "img" });
  root.append(h("div", { class: "fk-toolbar" }, [h("label", { class: "fk-label" }, ["task ", select])]), svg, legend);
  el.append(root);

  select.addEventListener("change", () => {
    model.set("task", select.value);
    model.save_changes();
  });

  function draw() {
    const series = model.get("series");
    const task = model.get("task");
    const hidden = new Set(model.get("hidden"));
    if (!series.tasks) return;
    select.replaceChildren(...series.tasks.map((t) => h("option", { value: t, text: t })));
    select.value = task;

    const L = series.num_layers;
    const [y0, y1] = series.y_domain;
    const x = (v) => M.left + ((W - M.left - M.right) * v) / Math.max(1, L - 1);
    const y = (v) => M.top + ((H - M.top - M.bottom) * (y1 - v)) / (y1 - y0);
    svg.replaceChildren();
    svg.setAttribute("aria-label", `% change vs window centre for ${task}`);
    svg.append(s("rect", { x: x(0), y: M.top, width: x((L - 1) / 2) - x(0), height: H - M.top - M.bottom, class: "fk-half" }));
    for (const t of ticks(y0, y1, 6)) {
      svg.append(s("line", { x1: M.left, x2: W - M.right, y1: y(t), y2: y(t), class: "fk-gridline" }));
      svg.append(s("text", { x: M.left - 8, y: y(t) + 5, class: "fk-tick", "text-anchor": "end" }, `${t}`));
    }
    for (const t of ticks(0, L - 1, Math.min(10, L - 1 || 1))) {
      svg.append(s("text", { x: x(t), y: H - M.bottom + 22, class: "fk-tick", "text-anchor": "middle" }, `${t}`));
    }
    svg.append(s("line", { x1: M.left, x2: W - M.right, y1: y(0), y2: y(0), class: "fk-zero" }));
    svg.append(s("text", { x: (M.left + W - M.right) / 2, y: H - 12, class: "fk-axis", "text-anchor": "middle" },
      "window centre (layer)"));
    svg.append(s("text", { x: 18, y: (M.top + H - M.bottom) / 2, class: "fk-axis", "text-anchor": "middle",
      transform: `rotate(-90 18 ${(M.top + H - M.bottom) / 2})` }, "% change in p(answer)"));

    const curves = series.curves[task] || {};
    series.edge_groups.forEach((edgeGroup, i) => {
      const points = curves[edgeGroup];
      if (!points || hidden.has(edgeGroup)) return;
      const color = series.colors[edgeGroup];
      const path = points.map(([c, p], j) => `${j ? "L" : "M"}${x(c).toFixed(1)},${y(p).toFixed(1)}`).join("");
      svg.append(s("path", { d: path, stroke: color, "stroke-dasharray": DASHES[i % DASHES.length], class: "fk-line",
        "data-edge-group": edgeGroup }));
      for (const [c, p, n] of points) {
        const dot = s("circle", { cx: x(c), cy: y(p), r: 4, fill: color, class: "fk-dot" });
        dot.append(s("title", {}, `${series.labels[edgeGroup]} · centre ${c}: ${p.toFixed(1)} %${n === null ? "" : ` (n=${n})`}`));
        svg.append(dot);
      }
    });

    legend.replaceChildren(...series.edge_groups.map((edgeGroup, i) => {
      const item = h("button", { class: `fk-legend-item${hidden.has(edgeGroup) ? " is-hidden" : ""}`, type: "button",
        title: "click to show / hide", "data-edge-group": edgeGroup });
      const swatch = s("svg", { width: 36, height: 14, class: "fk-swatch" });
      swatch.append(s("line", { x1: 2, x2: 34, y1: 7, y2: 7, stroke: series.colors[edgeGroup],
        "stroke-dasharray": DASHES[i % DASHES.length], "stroke-width": 4 }));
      item.append(swatch, document.createTextNode(` ${series.labels[edgeGroup]}`));
      item.addEventListener("click", () => {
        const next = new Set(model.get("hidden"));
        if (next.has(edgeGroup)) next.delete(edgeGroup); else next.add(edgeGroup);
        model.set("hidden", series.edge_groups.filter((g) => next.has(g)));
        model.save_changes();
      });
      return item;
    }));
  }

  const names = ["change:series", "change:task", "change:hidden"];
  for (const name of names) model.on(name, draw);
  draw();
  return () => { for (const name of names) model.off(name, draw); };
}

export default { render };
