/* Shared helpers of the annotator pages: JSON API calls (cookie auth + CSRF header),
   number and duration formatting, Plotly defaults. */
"use strict";

const Annotator = (() => {
  async function api(path, options = {}) {
    const opts = { credentials: "same-origin", headers: { Accept: "application/json" }, ...options };
    const method = (opts.method || "GET").toUpperCase();
    if (method !== "GET" && method !== "HEAD") {
      opts.headers = { ...opts.headers, "X-Annotator-CSRF": "1" };
      if (opts.json !== undefined) {
        opts.headers["Content-Type"] = "application/json";
        opts.body = JSON.stringify(opts.json);
      }
    }
    delete opts.json;
    const response = await fetch(path, opts);
    if (response.status === 401) {
      window.location.href = "/login?next=" + encodeURIComponent(window.location.pathname + window.location.search);
      throw new Error("not logged in");
    }
    const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
    if (!response.ok) {
      const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : response.statusText;
      throw new Error(detail);
    }
    return body;
  }

  function number(n, digits = 0) {
    if (n === null || n === undefined || Number.isNaN(n)) return "–";
    return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.round(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    const h = Math.floor(s / 3600);
    if (h < 48) return `${h} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(h / 24)} d ${h % 24} h`;
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child);
    return node;
  }

  const layout = (extra = {}) => ({
    margin: { l: 50, r: 20, t: 10, b: 40 },
    height: 280,
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "rgba(0,0,0,0)",
    font: { family: "system-ui, sans-serif", size: 12 },
    legend: { orientation: "h", y: -0.2 },
    ...extra,
  });

  function plot(id, traces, extra = {}, empty = "no data yet") {
    const node = document.getElementById(id);
    if (!node || !window.Plotly) return;
    const hasData = traces.some((t) => (t.y && t.y.length) || (t.values && t.values.length) || (t.z && t.z.length));
    const lay = layout(extra);
    if (!hasData) {
      lay.annotations = [{ text: empty, showarrow: false, font: { size: 14, color: "#888" }, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }];
      lay.xaxis = { visible: false };
      lay.yaxis = { visible: false };
    }
    window.Plotly.react(node, hasData ? traces : [], lay, { displayModeBar: false, responsive: true });
    node.dataset.rendered = "1";
  }

  document.addEventListener("change", (event) => {
    const target = event.target;
    if (target instanceof HTMLSelectElement && target.hasAttribute("data-autosubmit")) target.form.submit();
  });

  return { api, number, duration, el, plot };
})();
