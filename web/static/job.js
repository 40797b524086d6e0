/* One job: live progress per stage, rate, ETA (polled every second while it runs), its
   throughput and routing plots, failed items, cancel / resume. */
"use strict";

(() => {
  const { api, number, duration, el, plot } = Annotator;
  const FINAL = new Set(["done", "cancelled", "failed"]);
  const box = document.getElementById("job");
  if (!box) return;
  const id = box.dataset.job;
  let lastPlot = 0;

  function render(p) {
    const status = document.getElementById("job-status");
    status.textContent = p.status;
    status.dataset.status = p.status;
    status.className = `badge status-${p.status}`;
    document.getElementById("job-images").textContent = `${number(p.images_finished)} / ${number(p.images)}`;
    document.getElementById("job-rate").textContent = p.rate ? number(p.rate, 2) : "–";
    document.getElementById("job-eta").textContent = FINAL.has(p.status) ? "–" : duration(p.eta_s);
    document.getElementById("job-elapsed").textContent = duration(p.elapsed_s);
    const rows = p.stages.map((s) => {
      const pct = s.total ? (100 * (s.done + s.failed + s.skipped)) / s.total : 0;
      return el("tr", { "data-stage": s.stage },
        el("td", { text: s.stage }),
        el("td", { class: "wide" }, el("div", { class: "bar" }, el("span", { style: `width:${pct.toFixed(1)}%` }))),
        el("td", { text: number(s.done) }), el("td", { text: number(s.failed) }),
        el("td", { text: number(s.skipped) }), el("td", { text: number(s.pending) }));
    });
    document.querySelector("#stages tbody").replaceChildren(...rows);
    const error = document.getElementById("job-error");
    error.hidden = !p.error;
    error.textContent = p.error || "";
  }

  async function plots() {
    const [tp, routing, errors, job] = await Promise.all([
      api(`/api/v1/jobs/${id}/throughput?unit=minute`),
      api(`/api/v1/stats/routing?job_id=${id}`),
      api(`/api/v1/jobs/${id}/errors`),
      api(`/api/v1/jobs/${id}`),
    ]);
    plot("plot-job-throughput", Object.entries(tp.stages).map(([stage, ys]) => ({ type: "bar", name: stage, x: tp.buckets, y: ys })), { barmode: "group" });
    const r = routing.pairs;
    const labels = { auto_accepted: "auto-accepted", auto_negative: "auto-negative", to_review: "to review", reviewed: "reviewed", ungroundable: "ungroundable", in_progress: "in progress" };
    const keys = Object.keys(labels);
    plot("plot-job-routing", [{ type: "bar", x: keys.map((k) => labels[k]), y: keys.map((k) => r[k]), marker: { color: ["#2e7d32", "#6d4c41", "#f9a825", "#1565c0", "#9e9e9e", "#b0bec5"] } }]);
    const list = document.getElementById("job-errors");
    list.replaceChildren(...(errors.length ? errors.map((e) => el("li", { text: `${e.stage} · image ${e.image_id} (${e.file_name}): ${e.error}` })) : [el("li", { text: "none" })]));
    document.getElementById("job-counters").textContent = JSON.stringify(job.counters, null, 2);
  }

  async function poll() {
    if (box.dataset.kind !== "mine") { plots(); return; }
    let p;
    try { p = await api(`/api/v1/jobs/${id}/progress`); } catch (err) { setTimeout(poll, 3000); return; }
    render(p);
    const now = Date.now();
    if (now - lastPlot > 5000 || FINAL.has(p.status)) { lastPlot = now; plots().catch(() => {}); }
    if (!FINAL.has(p.status)) setTimeout(poll, 1000);
  }

  async function act(action) {
    try {
      await api(`/api/v1/jobs/${id}/${action}`, { method: "POST", json: {} });
      poll();
    } catch (err) {
      const error = document.getElementById("job-error");
      error.hidden = false;
      error.textContent = err.message;
    }
  }

  // The buttons are served disabled: a click before these handlers exist would be lost.
  for (const action of ["cancel", "resume"]) {
    const button = document.getElementById(`${action}-button`);
    if (!button) continue;
    button.addEventListener("click", () => act(action));
    button.disabled = false;
    button.removeAttribute("title");
  }
  document.addEventListener("DOMContentLoaded", poll);
})();
