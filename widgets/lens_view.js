// LensView view: frame thumbnails with the words their video tokens decode to.
// Python computes the whole table (lens x layer x frame -> words); the view only indexes it.

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

const LENSES = [
  ["embedding", "embedding lens", "hidden · Eᵀ (the paper's lens for video tokens)"],
  ["logit", "logit lens", "final norm + lm_head"],
];
const BADGES = { spatial: "S", temporal: "T" };
const BADGE_TEXT = { spatial: "#fff", temporal: "#000" }; // readable on blue / on orange
const badge = (kind, colors) =>
  h("span", { class: "fk-badge", style: `background:${colors[kind]};color:${BADGE_TEXT[kind]}`, text: BADGES[kind] });

function render({ model, el }) {
  const root = h("div", { class: "fk fk-lens" });
  el.append(root);
  const title = h("div", { class: "fk-title" });
  const lensButtons = LENSES.map(([kind, label, tip]) =>
    h("button", { class: "fk-button", type: "button", "data-kind": kind, title: tip, text: label }));
  const slider = h("input", { class: "fk-slider", type: "range", min: "0", step: "1", "aria-label": "layer" });
  const layerLabel = h("span", { class: "fk-layer-label", "data-role": "layer" });
  const setup = model.get("setup"); // sent once: num_layers, frame_labels, thumbnails, kind_colors, question, ranked
  const colors = setup.kind_colors;
  const legend = h("div", { class: "fk-legend" }, [
    badge("spatial", colors), " spatial word  ", badge("temporal", colors), " temporal word",
  ]);
  const frames = h("div", { class: "fk-frames", "data-role": "frames" });
  const ranked = h("div", { class: "fk-ranked", "data-role": "ranked", text: setup.ranked || "" });
  root.append(
    title,
    ranked,
    h("div", { class: "fk-toolbar" }, [...lensButtons, h("label", { class: "fk-label" }, [slider, layerLabel])]),
    frames,
    legend,
  );

  function draw() {
    const kind = model.get("kind");
    const layer = model.get("layer");
    const table = model.get("table");
    const thumbs = setup.thumbnails;
    title.textContent = setup.question;
    title.hidden = !setup.question;
    slider.max = String(setup.num_layers - 1);
    slider.value = String(layer);
    layerLabel.textContent = `after layer ${layer}`;
    for (const button of lensButtons) button.classList.toggle("is-active", button.dataset.kind === kind);
    frames.replaceChildren();
    const rows = (table[kind] || [])[layer] || [];
    setup.frame_labels.forEach((label, i) => {
      const card = h("div", { class: "fk-frame", "data-frame": String(i) });
      if (thumbs[i]) card.append(h("img", { class: "fk-frame-img", src: thumbs[i], alt: label }));
      card.append(h("div", { class: "fk-frame-label", text: label }));
      const list = h("ol", { class: "fk-words" });
      for (const word of rows[i] || []) {
        const item = h("li", { class: `fk-word is-${word.kind}`, title: `${Math.round(100 * word.share)}% of the frame's tokens` });
        if (BADGES[word.kind]) item.append(badge(word.kind, colors));
        item.append(h("span", { class: "fk-word-text", text: word.word }), h("span", { class: "fk-count", text: `×${word.tokens}` }));
        list.append(item);
      }
      card.append(list);
      frames.append(card);
    });
  }

  lensButtons.forEach((button) => button.addEventListener("click", () => {
    model.set("kind", button.dataset.kind);
    model.save_changes();
  }));
  slider.addEventListener("input", () => {
    model.set("layer", Number(slider.value));
    model.save_changes();
  });

  const names = ["change:kind", "change:layer", "change:table"];
  for (const name of names) model.on(name, draw);
  draw();
  return () => { for (const name of names) model.off(name, draw); };
}

export default { render };
