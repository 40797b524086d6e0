#!/usr/bin/env bash
# The main job, offline, on the embedded defaults (SQLite, in-process): set up, then run the
# demo: synthetic scenes with alt-text are mined by the shipped starter SAM 3 proposer, verified,
# routed, the review queue is answered by a SIMULATED reviewer (synthetic ground truth), and the
# dataset is exported as COCO and SA-Co; prints a summary and writes out/demo/report.html.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT=${OUT:-out/demo}
.venv/bin/annotator demo --out "$OUT" "$@"
.venv/bin/python - "$OUT" <<'PY'
import sys
from pycocotools.coco import COCO
out = sys.argv[1]
for name in ("demo.coco.json", "demo.saco.json"):
    coco = COCO(f"{out}/{name}")
    masks = [coco.annToMask(a) for a in coco.dataset["annotations"]]
    print(f"{name}: {len(coco.imgs)} images, {len(masks)} masks decoded with pycocotools")
PY
echo "done: report in $OUT/report.html"
