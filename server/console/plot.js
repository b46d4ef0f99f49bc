// Small SVG bar charts, drawn by hand: one or two series over labelled periods.

const NS = "http://www.w3.org/2000/svg";
const W = 480;
const H = 160;
const PAD = { left: 36, right: 8, top: 8, bottom: 22 };

function el(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/// A bar chart of `series` ([{name, cls, values}], values aligned with `labels`), with a
/// title and a description for assistive technology, and every `tick`-th label shown.
export function bars(title, labels, series, { tick = 1 } = {}) {
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "plot" });
  svg.append(el("title", {}, title));
  const totals = series.map((s) => `${s.name}: ${s.values.reduce((a, b) => a + b, 0)}`);
  svg.append(el("desc", {}, `${title}. ${totals.join(", ")}.`));
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const slot = plotW / Math.max(1, labels.length);
  const barW = Math.max(1, (slot * 0.8) / series.length);
  const y = (v) => PAD.top + plotH - (v / max) * plotH;
  // Axis and two gridlines: 0, half, max.
  for (const v of [0, max / 2, max]) {
    svg.append(el("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(
      el("text", { x: PAD.left - 4, y: y(v) + 4, "text-anchor": "end", class: "axis" },
        Number.isInteger(v) ? v : v.toFixed(1))
    );
  }
  series.forEach((s, si) => {
    s.values.forEach((v, i) => {
      const x = PAD.left + i * slot + slot * 0.1 + si * barW;
      const r = el("rect", {
        x: x.toFixed(1),
        y: y(v).toFixed(1),
        width: barW.toFixed(1),
        height: (PAD.top + plotH - y(v)).toFixed(1),
        class: `bar ${s.cls}`,
      });
      r.append(el("title", {}, `${labels[i]}: ${v} ${s.name}`));
      svg.append(r);
    });
  });
  labels.forEach((label, i) => {
    if (i % tick !== 0) return;
    svg.append(
      el("text", { x: PAD.left + i * slot + slot / 2, y: H - 6, "text-anchor": "middle", class: "axis" }, label)
    );
  });
  return svg;
}

/// The legend of `series`, as HTML.
export function legend(series) {
  const ul = document.createElement("ul");
  ul.className = "legend";
  for (const s of series) {
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `swatch ${s.cls}`;
    li.append(swatch, document.createTextNode(s.name));
    ul.append(li);
  }
  return ul;
}
