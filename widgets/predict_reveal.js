// PredictReveal view: empty axes to click on; Python computes the reveal and the verdict.

const SVG = "http://www.w3.org/2000/svg";
const W = 720, H = 400, M = { top: 20, right: 24, bottom: 58, left: 80 };

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  if (text !== undefined) el.textContent = text;
  return el;
}

// h("div", {class: "x", text: "hi"}, [children]): one DOM element.
// (Repeated in each widget's module: anywidget loads a module from a Blob URL, so modules cannot share an import.)
function h(tag, attrs = {}, children = []) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
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
  const root = h("div", { class: "fk fk-predict", "data-role": "predict" });
  const prompt = h("div", { class: "fk-prompt" });
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "fk-svg", role: "img" });
  const reveal = h("button", { class: "fk-button is-primary", type: "button", "data-role": "reveal", text: "Reveal" });
  const again = h("button", { class: "fk-button", type: "button", "data-role": "again", text: "Try again" });
  const status = h("span", { class: "fk-status", "data-role": "status" });
  const verdict = h("div", { class: "fk-verdict", "data-role": "verdict", "aria-live": "polite" });
  root.append(prompt, svg, h("div", { class: "fk-toolbar" }, [reveal, again, status]), verdict);
  el.append(root);

  const scales = () => {
    const setup = model.get("setup");
    const [x0, x1] = setup.x_domain, [y0, y1] = setup.y_domain;
    return {
      x: (v) => M.left + ((W - M.left - M.right) * (v - x0)) / (x1 - x0),
      y: (v) => M.top + ((H - M.top - M.bottom) * (y1 - v)) / (y1 - y0),
      xInv: (px) => x0 + ((px - M.left) * (x1 - x0)) / (W - M.left - M.right),
      yInv: (py) => y1 - ((py - M.top) * (y1 - y0)) / (H - M.top - M.bottom),
    };
  };

  svg.addEventListener("click", (event) => {
    if (model.get("revealed")) return;
    const box = svg.getBoundingClientRect();
    const px = ((event.clientX - box.left) * W) / box.width, py = ((event.clientY - box.top) * H) / box.height;
    const { xInv, yInv } = scales();
    const setup = model.get("setup");
    const x = setup.kind === "value_at" ? setup.at : xInv(px);
    model.set("guess", { x, y: Math.round(yInv(py) * 10) / 10 });
    model.save_changes();
  });
  reveal.addEventListener("click", () => { model.set("revealed", true); model.save_changes(); });
  again.addEventListener("click", () => { model.set("revealed", false); model.set("guess", {}); model.save_changes(); });

  function draw() {
    const setup = model.get("setup");
    if (!setup.x_domain) return;
    const guess = model.get("guess"), result = model.get("result"), revealed = model.get("revealed");
    const { x, y } = scales();
    prompt.textContent = setup.prompt;
    svg.replaceChildren();
    svg.setAttribute("aria-label", setup.prompt);
    for (const t of ticks(setup.y_domain[0], setup.y_domain[1], 6)) {
      svg.append(s("line", { x1: M.left, x2: W - M.right, y1: y(t), y2: y(t), class: "fk-gridline" }));
      svg.append(s("text", { x: M.left - 8, y: y(t) + 5, class: "fk-tick", "text-anchor": "end" }, `${t}`));
    }
    for (const t of ticks(setup.x_domain[0], setup.x_domain[1], 10)) {
      svg.append(s("text", { x: x(t), y: H - M.bottom + 22, class: "fk-tick", "text-anchor": "middle" }, `${t}`));
    }
    if (setup.y_domain[0] < 0 && setup.y_domain[1] > 0) {
      svg.append(s("line", { x1: M.left, x2: W - M.right, y1: y(0), y2: y(0), class: "fk-zero" }));
    }
    if (setup.at !== null && setup.at !== undefined) {
      svg.append(s("line", { x1: x(setup.at), x2: x(setup.at), y1: M.top, y2: H - M.bottom, class: "fk-at" }));
    }
    svg.append(s("text", { x: (M.left + W - M.right) / 2, y: H - 12, class: "fk-axis", "text-anchor": "middle" }, setup.x_title));
    svg.append(s("text", { x: 18, y: (M.top + H - M.bottom) / 2, class: "fk-axis", "text-anchor": "middle",
      transform: `rotate(-90 18 ${(M.top + H - M.bottom) / 2})` }, setup.y_title));
    if (revealed && result.points) {
      const pts = result.points;
      if (pts.length && pts[0].lo !== undefined && pts[0].lo !== null) {
        const upper = pts.map((p) => `${x(p.x).toFixed(1)},${y(p.hi).toFixed(1)}`);
        const lower = pts.slice().reverse().map((p) => `${x(p.x).toFixed(1)},${y(p.lo).toFixed(1)}`);
        svg.append(s("polygon", { points: upper.concat(lower).join(" "), class: "fk-band" }));
      }
      svg.append(s("path", { d: pts.map((p, j) => `${j ? "L" : "M"}${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`).join(""),
        class: "fk-curve", "data-role": "curve" }));
      const t = result.truth;
      const ring = s("circle", { cx: x(t.x), cy: y(t.y), r: 11, class: "fk-truth", "data-role": "truth" });
      ring.append(s("title", {}, `${t.x}: ${t.y.toFixed(1)}`));
      svg.append(ring);
    }
    if (guess && guess.x !== undefined) {
      const gx = x(guess.x), gy = y(guess.y);
      const mark = s("g", { "data-role": "guess", "data-x": guess.x, "data-y": guess.y });
      mark.append(s("line", { x1: gx - 10, x2: gx + 10, y1: gy - 10, y2: gy + 10, class: "fk-guess" }));
      mark.append(s("line", { x1: gx - 10, x2: gx + 10, y1: gy + 10, y2: gy - 10, class: "fk-guess" }));
      svg.append(mark);
    }
    reveal.disabled = revealed || !(guess && guess.x !== undefined);
    again.disabled = !revealed;
    status.textContent = revealed ? "" : guess && guess.x !== undefined
      ? `your guess: ${guess.x.toFixed ? Number(guess.x.toFixed(3)) : guess.x}, ${guess.y}` : "click on the chart to place your guess";
    verdict.textContent = revealed && result.verdict ? result.verdict : "";
  }

  const names = ["change:setup", "change:guess", "change:result", "change:revealed"];
  for (const name of names) model.on(name, draw);
  draw();
  return () => { for (const name of names) model.off(name, draw); };
}

export default { render };
