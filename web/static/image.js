/* One image with its masks: COCO compressed RLE decoded here and drawn on a canvas over the
   image, one colour per instance; hovering shows the mask's concept, score and provenance. */
"use strict";

(() => {
  const { el, number } = Annotator;
  const data = JSON.parse(document.getElementById("image-data").textContent);
  const stage = document.getElementById("stage");
  const canvas = document.getElementById("masks");
  const photo = document.getElementById("photo");
  const tooltip = document.getElementById("tooltip");
  const showProposals = document.getElementById("show-proposals");

  /* COCO's compressed RLE string (pycocotools rleFrString) -> run lengths. */
  function rleCounts(s) {
    const counts = [];
    let p = 0;
    while (p < s.length) {
      let x = 0, k = 0, more = 1;
      while (more) {
        const c = s.charCodeAt(p) - 48;
        x |= (c & 0x1f) << (5 * k);
        more = c & 0x20;
        p++; k++;
        if (!more && (c & 0x10)) x |= -1 << (5 * k);
      }
      if (counts.length > 2) x += counts[counts.length - 2];
      counts.push(x);
    }
    return counts;
  }

  /* Runs alternate 0s and 1s in column-major order; calls fn(row-major index) per 1 pixel. */
  function eachPixel(counts, h, w, fn) {
    let idx = 0;
    for (let i = 0; i < counts.length; i++) {
      const run = counts[i];
      if (i % 2 === 1) {
        for (let j = idx; j < idx + run; j++) {
          const x = Math.floor(j / h), y = j - x * h;
          if (x < w) fn(y * w + x);
        }
      }
      idx += run;
    }
  }

  function colour(i) {
    const hue = (i * 137.508) % 360;
    const s = 0.75, l = 0.55;
    const a = s * Math.min(l, 1 - l);
    const f = (n) => { const k = (n + hue / 30) % 12; return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1)))); };
    return [f(0), f(8), f(4)];
  }

  const w = data.image.width, h = data.image.height;
  const instances = [];
  const pairs = new Map(data.pairs.map((p) => [p.pair_id, p]));
  for (const pair of data.pairs) {
    for (const m of pair.masks) instances.push({ ...m, pair, colour: colour(instances.length) });
  }
  // Larger masks first, so small ones stay visible (and hoverable) on top.
  const order = [...instances].sort((a, b) => b.area - a.area);
  let owner = new Int32Array(0);

  function visible(inst) {
    const toggle = document.querySelector(`input.toggle[data-pair="${inst.pair.pair_id}"]`);
    if (toggle && !toggle.checked) return false;
    return inst.kind !== "proposal" || showProposals.checked;
  }

  function draw() {
    if (!w || !h) return;
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(w, h);
    owner = new Int32Array(w * h).fill(-1);
    order.forEach((inst) => {
      if (!visible(inst)) return;
      if (!inst.bits) {
        inst.bits = new Uint8Array(w * h);
        eachPixel(rleCounts(inst.counts), h, w, (i) => { inst.bits[i] = 1; });
      }
      const idx = instances.indexOf(inst);
      for (let i = 0; i < inst.bits.length; i++) if (inst.bits[i]) owner[i] = idx;
    });
    for (let i = 0; i < owner.length; i++) {
      const o = owner[i];
      if (o < 0) continue;
      const inst = instances[o];
      const y = Math.floor(i / w), x = i - y * w;
      const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
        owner[i - 1] !== o || owner[i + 1] !== o || owner[i - w] !== o || owner[i + w] !== o;
      const [r, g, b] = inst.colour;
      img.data[4 * i] = r; img.data[4 * i + 1] = g; img.data[4 * i + 2] = b;
      img.data[4 * i + 3] = edge ? 255 : inst.kind === "proposal" ? 90 : 130;
    }
    ctx.putImageData(img, 0, 0);
    canvas.dataset.instances = String(order.filter(visible).length);
  }

  function describe(inst) {
    const lines = [
      [inst.pair.concept, `${inst.kind} #${inst.id}`],
      ["score", inst.score === null ? "–" : number(inst.score, 3)],
      ["source", inst.source],
      ["model", inst.model_version || "–"],
    ];
    if (inst.reviewer) lines.push(["reviewer", inst.reviewer]);
    if (inst.mv_p_accept !== null && inst.mv_p_accept !== undefined) lines.push(["verifier p(accept)", number(inst.mv_p_accept, 3)]);
    lines.push(["area", `${number(inst.area)} px`], ["pair", inst.pair.state]);
    return lines.map(([k, v]) => el("div", {}, el("b", { text: `${k}: ` }), String(v)));
  }

  canvas.addEventListener("mousemove", (event) => {
    const rect = canvas.getBoundingClientRect();
    const x = Math.floor(((event.clientX - rect.left) / rect.width) * w);
    const y = Math.floor(((event.clientY - rect.top) / rect.height) * h);
    const o = x >= 0 && y >= 0 && x < w && y < h ? owner[y * w + x] : -1;
    if (o < 0) { tooltip.hidden = true; return; }
    tooltip.replaceChildren(...describe(instances[o]));
    tooltip.hidden = false;
    tooltip.style.left = `${event.clientX - stage.getBoundingClientRect().left + 14}px`;
    tooltip.style.top = `${event.clientY - stage.getBoundingClientRect().top + 14}px`;
  });
  canvas.addEventListener("mouseleave", () => { tooltip.hidden = true; });

  for (const box of document.querySelectorAll(".swatches")) {
    const pair = pairs.get(Number(box.dataset.pair));
    for (const inst of instances.filter((i) => i.pair === pair)) {
      const [r, g, b] = inst.colour;
      box.append(el("span", { class: `swatch ${inst.kind}`, style: `background: rgb(${r},${g},${b})`, title: `${inst.kind} #${inst.id} · score ${inst.score === null ? "–" : inst.score.toFixed(3)} · ${inst.source}` }));
    }
  }
  document.addEventListener("change", (event) => {
    if (event.target.matches("input.toggle, #show-proposals")) draw();
  });
  if (location.hash) {
    const wanted = decodeURIComponent(location.hash.slice(1)).replace(/\+/g, " ");
    document.querySelector(`li[data-pair] b`) && document.querySelectorAll("li[data-pair]").forEach((li) => {
      if (li.querySelector("b").textContent === wanted) li.classList.add("highlight");
    });
  }
  if (photo.complete) draw(); else photo.addEventListener("load", draw);
  draw();
})();
