// flowkit OfflineChart: the live chart. Vega comes from the kernel, once per page (the bundle
// vl-convert made for altair's JupyterChart), never from a network.
const CACHE = "__flowkitOfflineVega";

function vegaModule(model, experimental) {
  const id = model.get("_bundle_id");
  const cache = (globalThis[CACHE] ??= new Map());
  if (!cache.has(id)) {
    // no time limit: while the kernel runs other cells, it answers when it is done with them
    const pending = experimental.invoke("vega_bundle", { id }, { signal: new AbortController().signal })
      .then(async ([reply, buffers]) => {
        if (!reply || reply.id !== id || !buffers || !buffers.length) throw new Error("no bundle");
        const source = new TextDecoder().decode(buffers[0]);
        const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
        try { return (await import(url)).default; } finally { URL.revokeObjectURL(url); }
      });
    pending.catch(() => cache.delete(id));
    cache.set(id, pending);
  }
  return cache.get(id);
}

async function render({ model, el, experimental }) {
  el.classList.add("fk-offline-chart");
  const note = document.createElement("div");
  note.className = "fk-offline-chart-note";
  note.style.cssText = "color: var(--jp-ui-font-color2, #616161); font-style: italic; padding: 4px 0;";
  note.textContent = "Loading the interactive chart (once the kernel has finished running cells)…";
  el.appendChild(note);
  let chart;
  try {
    if (!experimental || !experimental.invoke) throw new Error("this frontend cannot ask the kernel");
    chart = await vegaModule(model, experimental);
  } catch (error) {
    console.warn("flowkit: the interactive chart needs its kernel", error);
    note.textContent = "The interactive chart needs its kernel: run this cell again.";
    return;
  }
  const host = document.createElement("div");
  host.className = "fk-offline-chart-live";
  el.appendChild(host);
  await chart.render({ model, el: host });
  note.remove();
  el.dataset.live = "true";
}

export default { render };
