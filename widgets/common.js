// Shared by every flowkit widget view; each widget's module is this file followed by its own
// (widgets/assets.py joins them: plain ESM, no bundler, no imports, works offline).

// h("div", {class: "x", text: "hi", style: {color: "red"}}, [children]): one DOM element
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
