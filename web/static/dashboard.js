/* The dashboard: the jobs table with live progress (polled), the launch form, and the plots. */
"use strict";

(() => {
  const { api, number, duration, el, plot } = Annotator;
  const FINAL = new Set(["done", "cancelled", "failed"]);
  const progress = new Map();
  let lastFinished = null;

  async function refreshJobs() {
    const table = document.getElementById("jobs");
    if (!table) return;
    let jobs;
    try {
      jobs = await api("/api/v1/jobs?limit=15");
    } catch (err) {
      table.tBodies[0].replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "error", text: err.message })));
      return;
    }
    await Promise.all(
      jobs
        .filter((j) => j.kind === "mine" && (!FINAL.has(j.status) || !progress.has(j.id) || !FINAL.has(progress.get(j.id).status)))
        .map(async (j) => {
          try { progress.set(j.id, await api(`/api/v1/jobs/${j.id}/progress`)); } catch (_) { /* shown as – */ }
        }),
    );
    const rows = jobs.map((j) => {
      const p = progress.get(j.id);
      const pct = p && p.total ? (100 * p.finished) / p.total : j.status === "done" ? 100 : 0;
      const bar = el("div", { class: "bar" }, el("span", { style: `width:${pct.toFixed(1)}%` }));
      const label = p ? `${number(p.images_finished)} / ${number(p.images)} images` : j.kind === "export" ? (j.counters.annotations !== undefined ? `${number(j.counters.annotations)} masks` : "") : "";
      return el(
        "tr", { "data-job": j.id, "data-status": j.status },
        el("td", {}, el("a", { href: `/dashboard/jobs/${j.id}`, text: `#${j.id}` })),
        el("td", { text: j.kind }),
        el("td", { text: j.dataset || "–" }),
        el("td", {}, el("span", { class: `badge status-${j.status}`, text: j.status })),
        el("td", { class: "wide" }, bar, el("small", { class: "muted", text: label })),
        el("td", { text: p && p.rate ? `${number(p.rate, 2)}/s` : "–" }),
        el("td", { text: p && !FINAL.has(j.status) ? duration(p.eta_s) : "–" }),
        el("td", { text: new Date(j.created_at).toLocaleString() }),
      );
    });
    table.tBodies[0].replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 8, class: "muted", text: "no jobs yet" }))]));
    const active = jobs.some((j) => !FINAL.has(j.status));
    // A job that just ended changed the dataset: redraw the plots.
    const finished = jobs.filter((j) => FINAL.has(j.status)).map((j) => j.id).join(",");
    if (lastFinished !== null && finished !== lastFinished) charts();
    lastFinished = finished;
    setTimeout(refreshJobs, active ? 1000 : 5000);
  }

  function parseOptions(value, name) {
    if (!value) return undefined;
    try { return JSON.parse(value); } catch (_) { throw new Error(`${name}: options must be JSON, e.g. {"batch_size": 8}`); }
  }

  function launchBody(form) {
    const f = new FormData(form);
    const body = { dataset: f.get("dataset"), images: f.get("images"), hard_negatives: f.get("hard_negatives") === "on" };
    for (const kind of ["proposer", "captioner", "parser", "verifier"]) {
      const name = (f.get(`${kind}.name`) || "").trim();
      if (!name) continue;
      const spec = { name };
      const model = (f.get(`${kind}.model`) || "").trim();
      if (model) spec.model = model;
      const options = parseOptions((f.get(`${kind}.options`) || "").trim(), kind);
      if (options) spec.options = options;
      body[kind] = spec;
    }
    const routing = {};
    for (const key of ["accept_above", "reject_below", "target_precision"]) {
      const v = f.get(`routing.${key}`);
      if (v !== null && v !== "") routing[key] = Number(v);
    }
    if (Object.keys(routing).length) body.routing = routing;
    if (f.get("device")) body.device = f.get("device");
    return body;
  }

  function setupLaunch() {
    const form = document.getElementById("launch-form");
    if (!form) return;
    const result = document.getElementById("launch-result");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      result.className = "";
      result.textContent = "launching…";
      try {
        const job = await api("/api/v1/jobs", { method: "POST", json: launchBody(form) });
        result.replaceChildren("launched ", el("a", { href: `/dashboard/jobs/${job.id}`, text: `job #${job.id}` }));
        result.dataset.job = job.id;
        refreshJobs();
      } catch (err) {
        result.className = "error";
        result.textContent = err.message;
      }
    });
    // The button is disabled in the page until now: a click before the handler exists would
    // submit the form natively (a GET of this page with the fields in its URL), launching nothing.
    const button = document.getElementById("launch-button");
    button.disabled = false;
    button.removeAttribute("title");
  }

  async function charts() {
    const box = document.getElementById("charts");
    if (!box) return;
    const ds = encodeURIComponent(box.dataset.dataset);
    const [tp, routing, growth, agreement, review] = await Promise.all([
      api(`/api/v1/stats/throughput?dataset=${ds}&unit=hour`),
      api(`/api/v1/stats/routing?dataset=${ds}`),
      api(`/api/v1/datasets/${ds}/growth?unit=hour`),
      api(`/api/v1/metrics/agreement?dataset=${ds}`),
      api(`/api/v1/stats/review?dataset=${ds}&unit=day`),
    ]).catch((err) => { box.prepend(el("p", { class: "error", text: err.message })); return []; });
    if (!tp) return;
    plot("plot-throughput", Object.entries(tp.stages).map(([stage, ys]) => ({ type: "scatter", mode: "lines+markers", name: stage, x: tp.buckets, y: ys })), { yaxis: { title: "items" } });
    const labels = { auto_accepted: "auto-accepted", auto_negative: "auto-negative", to_review: "to review", reviewed: "reviewed", ungroundable: "ungroundable", in_progress: "in progress" };
    const keys = Object.keys(labels).filter((k) => routing.pairs[k] > 0);
    plot("plot-routing", [{ type: "pie", hole: 0.45, labels: keys.map((k) => labels[k]), values: keys.map((k) => routing.pairs[k]), sort: false, textinfo: "label+value" }], { showlegend: false });
    const c = growth.cumulative;
    plot("plot-growth", [
      { type: "scatter", mode: "lines", name: "pairs", x: growth.buckets, y: c.pairs },
      { type: "scatter", mode: "lines", name: "positives", x: growth.buckets, y: c.positives },
      { type: "scatter", mode: "lines", name: "negatives", x: growth.buckets, y: c.negatives },
      { type: "scatter", mode: "lines", name: "masks", x: growth.buckets, y: c.masks },
    ]);
    const m = agreement.confusion;
    plot("plot-agreement", agreement.reviewed_masks ? [{
      type: "heatmap", colorscale: "Blues", showscale: false,
      x: ["human: accept", "human: reject"], y: ["verifier: reject", "verifier: accept"],
      z: [[m.reject.accept, m.reject.reject], [m.accept.accept, m.accept.reject]],
      text: [[m.reject.accept, m.reject.reject], [m.accept.accept, m.accept.reject]], texttemplate: "%{text}",
    }] : [], { margin: { l: 110, r: 20, t: 10, b: 40 } }, "no mask reviewed by both yet");
    const a = agreement.auto_accept_precision;
    const pct = (v) => (v === null ? "–" : `${(100 * v).toFixed(1)}%`);
    document.getElementById("agreement-text").textContent =
      `${number(agreement.reviewed_masks)} masks judged by both; accuracy ${pct(agreement.accuracy)}. ` +
      `Precision of auto-accepts on reviewed samples: ${pct(a.precision)} (${number(a.auto_accepted_then_reviewed)} reviewed); ` +
      `reviewed masks above the accept threshold: ${pct(a.precision_above_threshold)} accepted (${number(a.reviewed_above_accept_threshold)}).`;
    plot("plot-reviewers", Object.entries(review.submissions).map(([who, ys]) => ({ type: "bar", name: who, x: review.buckets, y: ys })), { barmode: "stack", yaxis: { title: "submissions" } });
    plot("plot-leadtimes", Object.entries(review.lead_times_s).map(([who, ts]) => ({ type: "box", name: who, y: ts, boxpoints: false })), { yaxis: { title: "seconds per pair" }, showlegend: false });
  }

  document.addEventListener("DOMContentLoaded", () => {
    refreshJobs();
    setupLaunch();
    charts();
    setInterval(charts, 30000);
  });
})();
