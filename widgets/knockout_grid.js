// KnockoutGrid view: draws the grid and the answer bars; every computation happens in Python.
// The view sends actions ({action: "paint" | "window" | "clear"}) and redraws from the synced
// traitlet `view` ({cells, answer, error}); `setup` (layers, columns, thumbnails, question,
// sample id) never changes. Plain ESM, no imports: it works offline.

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

const percent = (p) => `${(100 * p).toFixed(1)}%`;
const smallPercent = (p) => (100 * p >= 0.1 ? `${(100 * p).toFixed(1)}%` : `${(100 * p).toExponential(1)}%`);
const signed = (x) => `${x > 0 ? "+" : x < 0 ? "−" : "±"}${Math.abs(x).toFixed(1)}\u2009%`;

function render({ model, el }) {
  const setup = model.get("setup");
  const root = h("div", { class: "fk fk-grid" });
  el.append(root);
  // which bench question this grid shows (a sample's id; empty for a hand-made prompt)
  if (setup.sample_id) root.dataset.sample = setup.sample_id;

  // ---------------------------------------------------------------- layout
  const title = h("div", { class: "fk-title" });
  const clearButton = h("button", { class: "fk-button", type: "button", text: "Clear", "data-role": "clear" });
  const windowInput = h("input", { class: "fk-window", type: "number", min: "1", step: "1", "aria-label": "window size" });
  const help = h("span", { class: "fk-help", text: "click: cut / restore · drag: paint · shift+click: cut a window" });
  const toolbar = h("div", { class: "fk-toolbar" }, [
    clearButton, h("label", { class: "fk-label" }, ["window ", windowInput, " layers"]), help,
  ]);
  const table = h("table", { class: "fk-table", "data-role": "grid" });
  const specLine = h("div", { class: "fk-spec", "data-role": "spec" });
  const scaleOptions = h("input", { type: "radio", name: "fk-scale", value: "options" });
  const scaleVocab = h("input", { type: "radio", name: "fk-scale", value: "vocab" });
  const scaleGroup = h("div", { class: "fk-scale", role: "radiogroup" }, [
    h("label", {}, [scaleOptions, " over options"]), h("label", {}, [scaleVocab, " whole vocabulary"]),
  ]);
  const bars = h("div", { class: "fk-bars", "data-role": "bars" });
  const summary = h("div", { class: "fk-summary", "data-role": "summary" });
  const legend = h("div", { class: "fk-legend" }, [
    h("span", { class: "fk-swatch fk-before" }), " before ",
    h("span", { class: "fk-swatch fk-after" }), " after ",
    h("span", { class: "fk-star", text: "★" }), " correct option",
  ]);
  const error = h("div", { class: "fk-error", role: "alert", "data-role": "error" });
  root.append(
    title,
    h("div", { class: "fk-body" }, [
      h("div", { class: "fk-left" }, [toolbar, table]),
      h("div", { class: "fk-right" }, [specLine, scaleGroup, bars, summary, legend, error]),
    ]),
  );
  // radio groups need a name unique to this view
  const group = `fk-scale-${Math.random().toString(36).slice(2)}`;
  scaleOptions.name = group;
  scaleVocab.name = group;

  // ------------------------------------------------------------------ grid
  const cellAt = new Map(); // "layer,col" -> td
  function buildGrid() {
    table.replaceChildren();
    cellAt.clear();
    const { columns, thumbnails: thumbs } = setup;
    const head = h("tr", {}, [h("th", { class: "fk-corner", text: "layer" })]);
    columns.forEach((column) => {
      const th = h("th", { class: "fk-colhead", title: column.title, scope: "col", "data-key": column.key });
      if (column.frame !== null && thumbs[column.frame]) {
        th.append(h("img", { class: "fk-thumb", src: thumbs[column.frame], alt: `frame ${column.frame}` }));
      }
      th.append(h("div", { text: column.label }));
      head.append(th);
    });
    const body = h("tbody");
    for (let layer = 0; layer < setup.num_layers; layer++) {
      const row = h("tr", {}, [h("th", { class: "fk-rowhead", text: String(layer), scope: "row" })]);
      columns.forEach((column, col) => {
        const td = h("td", {
          class: "fk-cell", "data-layer": String(layer), "data-col": String(col),
          title: `layer ${layer}: ${column.title}`,
        });
        cellAt.set(`${layer},${col}`, td);
        row.append(td);
      });
      body.append(row);
    }
    table.append(h("thead", {}, [head]), body);
    drawCells();
  }

  function drawCells() {
    const cut = new Set((model.get("view").cells || []).map(([l, c]) => `${l},${c}`));
    for (const [key, td] of cellAt) {
      td.classList.toggle("is-cut", cut.has(key));
      td.classList.remove("is-painting");
    }
    clearButton.disabled = cut.size === 0;
  }

  // ---------------------------------------------------------- painting
  let paint = null; // {cut: bool, cells: Map key -> [layer, col]}
  const cellOf = (target) => (target && target.closest ? target.closest("td.fk-cell") : null);
  const keyOf = (td) => `${td.dataset.layer},${td.dataset.col}`;

  function addToPaint(td) {
    if (!paint || !td || !root.contains(td) || paint.cells.has(keyOf(td))) return;
    paint.cells.set(keyOf(td), [Number(td.dataset.layer), Number(td.dataset.col)]);
    td.classList.add("is-painting");
    td.classList.toggle("is-cut", paint.cut);
  }

  function send(message) {
    root.classList.add("is-pending");
    summary.textContent = "computing…";
    model.send(message);
  }

  table.addEventListener("pointerdown", (event) => {
    const td = cellOf(event.target);
    if (!td || event.button !== 0) return;
    event.preventDefault();
    if (event.shiftKey) {
      send({ action: "window", layer: Number(td.dataset.layer), column: Number(td.dataset.col) });
      return;
    }
    paint = { cut: !td.classList.contains("is-cut"), cells: new Map() };
    addToPaint(td);
  });
  const onMove = (event) => {
    if (paint) addToPaint(cellOf(document.elementFromPoint(event.clientX, event.clientY)));
  };
  const onUp = () => {
    if (!paint) return;
    const { cut, cells } = paint;
    paint = null;
    send({ action: "paint", cut, cells: [...cells.values()] });
  };
  window.addEventListener("pointermove", onMove);
  window.addEventListener("pointerup", onUp);
  window.addEventListener("pointercancel", onUp);

  clearButton.addEventListener("click", () => send({ action: "clear" }));
  windowInput.addEventListener("change", () => {
    const size = Math.max(1, Math.round(Number(windowInput.value) || 1));
    model.set("window_size", size);
    model.save_changes();
  });
  for (const radio of [scaleOptions, scaleVocab]) {
    radio.addEventListener("change", () => {
      model.set("scale", radio.value);
      model.save_changes();
    });
  }

  // --------------------------------------------------------------- answer
  function drawAnswer() {
    const answer = model.get("view").answer;
    root.classList.remove("is-pending");
    if (!answer || !answer.letters) return;
    root.dataset.answerSpec = answer.spec;
    specLine.textContent = answer.spec_text === "no knockout" ? "No knockout: the clean run." : `Cut: ${answer.spec_text}`;
    const scale = model.get("scale");
    const key = scale === "options" ? "option_probs" : "probs";
    const before = answer.before[key];
    const after = answer.after[key];
    const top = scale === "options" ? 1 : Math.max(...before, ...after, 1e-12);
    const format = scale === "options" ? percent : smallPercent;
    bars.replaceChildren();
    answer.letters.forEach((letter, i) => {
      const isTrue = answer.true_option === i;
      const label = h("div", { class: "fk-bar-label" }, [
        h("span", { class: "fk-star", text: isTrue ? "★" : "" }),
        h("span", { class: "fk-letter", text: letter }),
        h("span", { class: "fk-option", text: answer.options[i] || "" }),
      ]);
      const track = (kind, p) => h("div", { class: "fk-track" }, [
        h("div", { class: "fk-barbox" }, [
          h("div", { class: `fk-bar fk-${kind}`, style: { width: `${(100 * p) / top}%` } }),
        ]),
        h("span", { class: "fk-value", "data-kind": kind, text: format(p) }),
      ]);
      bars.append(h("div", { class: `fk-bar-row${isTrue ? " is-true" : ""}`, "data-letter": letter }, [
        label, h("div", { class: "fk-tracks" }, [track("before", before[i]), track("after", after[i])]),
      ]));
    });
    const was = answer.before.predicted_letter;
    const now = answer.after.predicted_letter;
    summary.replaceChildren(
      h("span", {}, [`predicted ${was}`, was === now ? " (unchanged)" : ` → ${now}`, " · "]),
      h("span", { "data-role": "pct-change", text: `p(${answer.pct_change_letter}) ${signed(answer.pct_change)}` }),
    );
  }

  function drawMisc() {
    const question = setup.question;
    title.textContent = question;
    title.hidden = !question;
    windowInput.value = String(model.get("window_size"));
    scaleOptions.checked = model.get("scale") === "options";
    scaleVocab.checked = model.get("scale") === "vocab";
    const message = model.get("view").error;
    error.textContent = message ? `⚠ ${message}` : "";
    error.hidden = !message;
    if (message) root.classList.remove("is-pending");
  }

  const onView = () => { drawCells(); drawMisc(); drawAnswer(); };
  const onScale = () => { drawMisc(); drawAnswer(); };
  const onCustom = (message) => {
    if (message && message.event === "done") onView();
  };
  model.on("msg:custom", onCustom);
  model.on("change:view", onView);
  model.on("change:scale", onScale);
  model.on("change:window_size", drawMisc);

  buildGrid();
  drawMisc();
  drawAnswer();

  return () => {
    window.removeEventListener("pointermove", onMove);
    window.removeEventListener("pointerup", onUp);
    window.removeEventListener("pointercancel", onUp);
    model.off("msg:custom", onCustom);
    model.off("change:view", onView);
    model.off("change:scale", onScale);
    model.off("change:window_size", drawMisc);
  };
}

export default { render };
