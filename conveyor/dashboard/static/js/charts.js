// Two small charts drawn as inline SVG: stacked bars of finished tasks and a
// step line of the failure rate. Labels are HTML beside the SVG so they stay
// readable however wide the chart is drawn.

import { fmtNumber, h, svg } from "./dom.js";

const W = 600;
const H = 120;

function frame(svgEl, { top, bottomLeft, bottomRight, legend, caption }) {
  return h(
    "figure",
    { class: "chart" },
    h("figcaption", {}, caption),
    legend ? h("ul", { class: "legend" }, legend.map(([cls, text]) => h("li", {}, h("span", { class: `swatch ${cls}`, "aria-hidden": "true" }), text))) : null,
    h("div", { class: "chart-plot" }, h("span", { class: "axis-top" }, top), svgEl),
    h("div", { class: "axis-bottom" }, h("span", {}, bottomLeft), h("span", {}, bottomRight)),
  );
}

function niceMax(n) {
  if (n <= 4) return Math.max(1, n);
  const p = 10 ** Math.floor(Math.log10(n));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= n) return m * p;
  return 10 * p;
}

function spanLabel(buckets) {
  const minutes = Math.round((buckets.length * (buckets[1] ? buckets[1].timestamp - buckets[0].timestamp : 60)) / 60);
  return minutes >= 120 ? `${Math.round(minutes / 60)} h ago` : `${minutes} min ago`;
}

/** Stacked bars: success, failure, cancelled per bucket. */
export function throughputChart(buckets, totals) {
  const max = niceMax(Math.max(0, ...buckets.map((b) => b.total)));
  const bw = W / Math.max(1, buckets.length);
  const gap = bw > 4 ? 1 : 0;
  const plot = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    preserveAspectRatio: "none",
    role: "img",
    "aria-label": `Tasks finished per bucket: ${fmtNumber(totals.success)} succeeded, ${fmtNumber(totals.failure)} failed, ${fmtNumber(totals.cancelled)} cancelled`,
    class: "plot",
  });
  plot.append(svg("line", { x1: 0, x2: W, y1: H - 0.5, y2: H - 0.5, class: "baseline" }));
  buckets.forEach((b, i) => {
    let y = H;
    for (const [key, cls] of [["success", "s-success"], ["failure", "s-failure"], ["cancelled", "s-cancelled"]]) {
      const n = b[key];
      if (!n) continue;
      const height = (n / max) * (H - 4);
      y -= height;
      plot.append(
        svg("rect", { x: i * bw + gap / 2, y, width: Math.max(0.5, bw - gap), height, class: cls }, svg("title", {}, `${new Date(b.timestamp * 1000).toLocaleTimeString()}: ${n} ${key}`)),
      );
    }
  });
  return frame(plot, {
    caption: "Finished per minute",
    top: `${fmtNumber(max)}`,
    bottomLeft: spanLabel(buckets),
    bottomRight: "now",
    legend: [
      ["s-success", `Succeeded ${fmtNumber(totals.success)}`],
      ["s-failure", `Failed ${fmtNumber(totals.failure)}`],
      ["s-cancelled", `Cancelled ${fmtNumber(totals.cancelled)}`],
    ],
  });
}

/** A step line of the share of finished tasks that failed, per bucket; gaps where nothing finished. */
export function failureRateChart(buckets, overall) {
  const bw = W / Math.max(1, buckets.length);
  const y = (rate) => H - 2 - rate * (H - 4);
  const plot = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    preserveAspectRatio: "none",
    role: "img",
    "aria-label": overall === null ? "Failure rate: nothing finished" : `Failure rate over the window: ${Math.round(overall * 100)} %`,
    class: "plot",
  });
  plot.append(svg("line", { x1: 0, x2: W, y1: H - 0.5, y2: H - 0.5, class: "baseline" }));
  plot.append(svg("line", { x1: 0, x2: W, y1: y(0.5), y2: y(0.5), class: "gridline" }));
  let d = "";
  let prev = false;
  buckets.forEach((b, i) => {
    if (b.failure_rate === null || b.failure_rate === undefined) {
      prev = false;
      return;
    }
    const yy = y(b.failure_rate).toFixed(1);
    d += prev ? ` V ${yy} H ${((i + 1) * bw).toFixed(1)}` : ` M ${(i * bw).toFixed(1)} ${yy} H ${((i + 1) * bw).toFixed(1)}`;
    prev = true;
    if (b.failure_rate > 0) {
      plot.append(svg("rect", { x: i * bw, y: y(b.failure_rate), width: bw, height: H - y(b.failure_rate), class: "s-failure-area" }));
    }
  });
  if (d) plot.append(svg("path", { d: d.trim(), class: "rate-line", "vector-effect": "non-scaling-stroke" }));
  return frame(plot, {
    caption: "Failure rate",
    top: "100 %",
    bottomLeft: spanLabel(buckets),
    bottomRight: "now",
    legend: [["s-rate", overall === null ? "Nothing finished" : `${(overall * 100).toFixed(1)} % of finished tasks failed`]],
  });
}
