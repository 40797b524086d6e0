/* The browser's concept search: suggestions from the dataset's concepts as you type. */
"use strict";

(() => {
  const form = document.getElementById("search-form");
  const input = document.getElementById("concept-input");
  const list = document.getElementById("concept-list");
  if (!form || !input || !list) return;
  const dataset = encodeURIComponent(form.dataset.dataset);
  let timer = null;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      try {
        const concepts = await Annotator.api(`/api/v1/datasets/${dataset}/concepts?limit=15&q=${encodeURIComponent(input.value)}`);
        list.replaceChildren(...concepts.map((c) => Annotator.el("option", { value: c.text, label: `${c.text} (${c.pairs} pairs)` })));
      } catch (_) { /* suggestions are optional */ }
    }, 150);
  });
})();
