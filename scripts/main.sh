#!/usr/bin/env bash
# The main job, offline, on the embedded defaults (SQLite, in-process): set up, then run the
# richest end-to-end path: generate an example dataset, import it (COCO and SA-Co), freeze a
# version, export it in both formats and check the exports load in pycocotools.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-out/example}
rm -rf "$OUT" && mkdir -p "$OUT"
export ANNOTATOR_DATABASE_URL="sqlite:///$OUT/annotator.db"
A=.venv/bin/annotator
.venv/bin/python examples/shapes.py "$OUT/data" >/dev/null
$A db upgrade
$A import shapes "$OUT/data/coco.json" --format coco --images "$OUT/data/images"
$A import shapes-saco "$OUT/data/saco.json" --format saco --images "$OUT/data/images"
$A versions create shapes v1 --note "example import"
$A export shapes --format coco --out "$OUT/shapes.coco.json" --version v1
$A export shapes --format saco --out "$OUT/shapes.saco.json" --version v1
$A export shapes-saco --format coco --out "$OUT/shapes-saco.coco.json"
$A datasets list
.venv/bin/python - "$OUT" <<'PY'
import sys
from pycocotools.coco import COCO
out = sys.argv[1]
for name in ("shapes.coco.json", "shapes.saco.json", "shapes-saco.coco.json"):
    coco = COCO(f"{out}/{name}")
    masks = [coco.annToMask(a) for a in coco.dataset["annotations"]]
    print(f"{name}: {len(coco.imgs)} images, {len(masks)} masks decoded, "
          f"{sum(int(m.sum()) for m in masks):,} mask pixels")
PY
echo "done: exports in $OUT"
