/* The one chart layer, browser side (the server side is annotation/charts.py, which writes each chart's JSON).
 *
 * Draws every <figure data-chart-source="ID"> from <script type="application/json" id="ID"> with the vendored
 * Chart.js: axes with titles, values on hover rounded to 4 significant digits; line charts get a smoothing slider
 * (TensorBoard's debiased EMA; the raw curve stays faint behind), a log-scale switch and one line per series (several
 * DPO runs overlay on one chart). When htmx swaps in new data (the DPO run page polls), charts update in place and
 * keep the reader's smoothing and scale. No inline script or handler anywhere: works under a strict CSP. */
(function () {
  "use strict";
  if (typeof window.Chart === "undefined") return;
  const Chart = window.Chart;
  const PALETTE = ["#5b8cff", "#f5a524", "#2fbf71", "#e5484d", "#b57bff", "#22c3d6", "#ff7ab6", "#a3e635"];
  const FG = "#e8eaf0", MUTED = "#9aa3b2", GRID = "#2c3240";
  const numberFormat = new Intl.NumberFormat("en", { maximumSignificantDigits: 4 });
  const live = new Map(); // figure -> {chart, text, state}

  Chart.defaults.color = MUTED;
  Chart.defaults.borderColor = GRID;
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;

  function fmt(v) {
    return v === null || v === undefined || !Number.isFinite(v) ? "n/a" : numberFormat.format(v);
  }

  function ema(points, weight) {
    // TensorBoard's smoothing: an exponential moving average, debiased for the first points.
    let last = 0, n = 0;
    return points.map(function (p) {
      if (!weight) return { x: p[0], y: p[1] };
      last = last * weight + (1 - weight) * p[1];
      n += 1;
      return { x: p[0], y: last / (1 - Math.pow(weight, n)) };
    });
  }

  function axis(title, extra) {
    return Object.assign({ title: { display: Boolean(title), text: title, color: FG }, ticks: { callback: tickLabel },
                           grid: { color: GRID } }, extra || {});
  }

  function tickLabel(value) {
    // Category axes hand over an index; numeric axes a value.
    return this.type === "category" ? this.getLabelForValue(value) : fmt(value);
  }

  function stateKey(fig) { return "videodpo-chart:" + location.pathname + ":" + fig.dataset.chartSource; }

  function loadState(fig, spec) {
    const base = { smoothing: spec.smoothing || 0, log: false };
    try { return Object.assign(base, JSON.parse(sessionStorage.getItem(stateKey(fig)) || "{}")); }
    catch (e) { return base; }
  }

  function saveState(fig, state) {
    try { sessionStorage.setItem(stateKey(fig), JSON.stringify(state)); } catch (e) { /* private mode */ }
  }

  // -- datasets per kind ----------------------------------------------------------------------------------------
  function lineData(spec, state) {
    const datasets = [];
    spec.series.forEach(function (s, i) {
      const color = PALETTE[i % PALETTE.length];
      datasets.push({ label: s.name, data: ema(s.points, state.smoothing), borderColor: color, backgroundColor: color,
                      borderWidth: 2, pointRadius: s.points.length === 1 ? 3 : 0, tension: 0 });
      if (state.smoothing > 0) {
        datasets.push({ label: s.name + " (raw)", data: ema(s.points, 0), borderColor: color + "40",
                        backgroundColor: color + "40", borderWidth: 1, pointRadius: 0, raw: true });
      }
    });
    return { datasets: datasets };
  }

  function allPositive(spec) {
    return spec.series.every(function (s) { return s.points.every(function (p) { return p[1] > 0; }); });
  }

  function lineConfig(spec, state) {
    return {
      type: "line",
      data: lineData(spec, state),
      options: {
        animation: false, responsive: true, maintainAspectRatio: false, parsing: false, normalized: true,
        interaction: { mode: "nearest", axis: "x", intersect: false },
        scales: {
          x: axis(spec.x_label, { type: "linear" }),
          y: axis(spec.y_label, { type: state.log && allPositive(spec) ? "logarithmic" : "linear" }),
        },
        plugins: {
          legend: { labels: { color: FG, filter: function (item, data) { return !data.datasets[item.datasetIndex].raw; } } },
          tooltip: { callbacks: {
            title: function (items) { return items.length ? spec.x_label + " " + fmt(items[0].parsed.x) : ""; },
            label: function (item) { return item.dataset.label + ": " + fmt(item.parsed.y); },
          } },
        },
      },
    };
  }

  const missingLabels = {
    // "n/a" where a bar has no value (e.g. no gold judged yet), so a missing bar does not read as zero.
    id: "videodpoMissing",
    afterDatasetsDraw: function (chart) {
      const values = chart.data.datasets[0].data, y = chart.scales.y, ctx = chart.ctx;
      ctx.save();
      ctx.fillStyle = MUTED; ctx.textBaseline = "middle";
      values.forEach(function (v, i) { if (v === null) ctx.fillText("n/a", chart.chartArea.left + 6, y.getPixelForValue(i)); });
      ctx.restore();
    },
  };

  function barConfig(spec) {
    return {
      plugins: [missingLabels],
      type: "bar",
      data: { labels: spec.labels, datasets: [{ label: spec.value_label, data: spec.values, backgroundColor: PALETTE[0],
                                                 barPercentage: 0.8 }] },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false, indexAxis: "y",
        scales: { x: axis(spec.value_label, { min: spec.min, max: spec.max }), y: axis("", { ticks: { color: FG } }) },
        plugins: { legend: { display: false }, tooltip: { callbacks: {
          label: function (item) { return spec.value_label + ": " + fmt(spec.values[item.dataIndex]); },
        } } },
      },
    };
  }

  const referenceLine = {
    id: "videodpoReference",
    afterDatasetsDraw: function (chart, args, options) {
      if (options.value === null || options.value === undefined) return;
      const x = chart.scales.x.getPixelForValue(options.value), area = chart.chartArea, ctx = chart.ctx;
      ctx.save();
      ctx.strokeStyle = MUTED; ctx.setLineDash([3, 3]);
      ctx.beginPath(); ctx.moveTo(x, area.top); ctx.lineTo(x, area.bottom); ctx.stroke();
      ctx.restore();
    },
  };

  function intervalConfig(spec) {
    const ranges = spec.labels.map(function (_, i) {
      return spec.low[i] === null || spec.high[i] === null ? null : [spec.low[i], spec.high[i]];
    });
    const points = spec.labels.map(function (label, i) { return { x: spec.values[i], y: label }; });
    return {
      type: "bar",
      data: { labels: spec.labels, datasets: [
        { label: "95% interval", data: ranges, backgroundColor: PALETTE[0] + "66", barPercentage: 0.35, order: 2 },
        { type: "line", label: spec.value_label, data: points, showLine: false, pointRadius: 5, pointHoverRadius: 7,
          backgroundColor: PALETTE[0], borderColor: FG, order: 1 },
      ] },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false, indexAxis: "y",
        scales: { x: axis(spec.value_label, { grace: "5%", beginAtZero: false }), y: axis("", { ticks: { color: FG } }) },
        plugins: {
          legend: { labels: { color: FG } },
          videodpoReference: { value: spec.reference },
          tooltip: { callbacks: { label: function (item) {
            const i = item.dataIndex;
            return spec.value_label + " " + fmt(spec.values[i]) + " (95% " + fmt(spec.low[i]) + " to " + fmt(spec.high[i]) + ")";
          } } },
        },
      },
      plugins: [referenceLine],
    };
  }

  function config(spec, state) {
    if (spec.kind === "line") return lineConfig(spec, state);
    if (spec.kind === "interval") return intervalConfig(spec);
    return barConfig(spec);
  }

  // -- controls of line charts ----------------------------------------------------------------------------------
  function controls(fig, entry) {
    const box = document.createElement("div");
    box.className = "chart-controls";
    const smooth = document.createElement("label");
    const range = document.createElement("input");
    Object.assign(range, { type: "range", min: "0", max: "0.99", step: "0.01", value: String(entry.state.smoothing) });
    range.className = "chart-smoothing";
    const shown = document.createElement("output");
    shown.textContent = entry.state.smoothing.toFixed(2);
    smooth.append("Smoothing ", range, " ", shown);
    const log = document.createElement("label");
    const box2 = document.createElement("input");
    Object.assign(box2, { type: "checkbox", checked: entry.state.log });
    box2.className = "chart-log";
    log.append(box2, " log scale");
    box.append(smooth, log);
    range.addEventListener("input", function () {
      entry.state.smoothing = Number(range.value);
      shown.textContent = entry.state.smoothing.toFixed(2);
      redraw(fig, entry);
    });
    box2.addEventListener("change", function () { entry.state.log = box2.checked; redraw(fig, entry); });
    entry.logBox = box2;
    fig.append(box);
  }

  function redraw(fig, entry) {
    saveState(fig, entry.state);
    const next = config(entry.spec, entry.state);
    entry.chart.data = next.data;
    entry.chart.options.scales = next.options.scales;
    if (entry.logBox) {
      entry.logBox.disabled = !allPositive(entry.spec);
      entry.logBox.parentElement.title = entry.logBox.disabled ? "a log scale needs values above 0" : "";
    }
    entry.chart.update("none");
  }

  // -- lifecycle ------------------------------------------------------------------------------------------------
  function sourceText(fig) {
    const el = document.getElementById(fig.dataset.chartSource);
    return el ? el.textContent : null;
  }

  function build(fig) {
    const text = sourceText(fig);
    if (text === null) return;
    const spec = JSON.parse(text);
    const area = fig.querySelector(".chart-area");
    if (spec.kind !== "line") area.style.height = Math.max(120, 26 * spec.labels.length + 70) + "px";
    const canvas = document.createElement("canvas");
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", spec.title);
    area.replaceChildren(canvas);
    const entry = { spec: spec, text: text, state: loadState(fig, spec) };
    entry.chart = new Chart(canvas, config(spec, entry.state));
    live.set(fig, entry);
    if (spec.kind === "line") { controls(fig, entry); redraw(fig, entry); }
    fig.dataset.chartReady = "1";
  }

  function refresh() {
    live.forEach(function (entry, fig) {
      if (!document.contains(fig)) { entry.chart.destroy(); live.delete(fig); return; }
      const text = sourceText(fig);
      if (text !== null && text !== entry.text) {
        entry.text = text;
        entry.spec = JSON.parse(text);
        redraw(fig, entry);
      }
    });
    document.querySelectorAll("figure[data-chart-source]").forEach(function (fig) { if (!live.has(fig)) build(fig); });
  }

  refresh();
  document.addEventListener("htmx:afterSettle", refresh);
  window.videodpoCharts = live;
})();
