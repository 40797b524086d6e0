"""Write a small, seeded example dataset: PNG images of coloured shapes with exact masks,
as a COCO file (polygons, RLE, a crowd region, LVIS-style negatives) and an SA-Co file.

    python examples/shapes.py OUT_DIR [--images 12] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from annotator import masks

SHAPES = {
    "red disc": (220, 40, 40),
    "blue square": (40, 80, 220),
    "green triangle": (40, 180, 60),
    "yellow star": (230, 200, 30),
}


def _shape(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if kind == "blue square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if kind == "green triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if kind == "yellow star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = np.pi / 2 + k * np.pi / 5
            pts.append((cx + rad * np.cos(a), cy - rad * np.sin(a)))
        return pts
    return [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 48)]


def make(out: Path, n_images: int = 12, seed: int = 0) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(seed)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    names = list(SHAPES)
    coco: dict = {
        "images": [],
        "annotations": [],
        "info": {"description": "annotator example"},
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
    }
    saco: dict = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "object"}]}
    for i in range(n_images):
        w, h = int(rng.integers(160, 320)), int(rng.integers(120, 240))
        background = tuple(int(v) for v in rng.integers(180, 255, 3))
        canvas = Image.new("RGB", (w, h), background)
        draw = ImageDraw.Draw(canvas)
        present = rng.choice(len(names), size=int(rng.integers(1, 3)), replace=False)
        file_name = f"shapes_{i:03d}.png"
        image_id = i + 1
        per_concept: dict[str, list[np.ndarray]] = {}
        for c in present:
            for _ in range(int(rng.integers(1, 4))):
                r = float(rng.uniform(10, min(w, h) / 6))
                cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
                poly = _shape(names[c], cx, cy, r)
                layer = Image.new("L", (w, h), 0)
                ImageDraw.Draw(layer).polygon(poly, fill=1)
                m = np.asarray(layer, bool)
                for other in per_concept.values():  # later shapes occlude earlier ones
                    for om in other:
                        om &= ~m
                draw.polygon(poly, fill=SHAPES[names[c]])
                per_concept.setdefault(names[c], []).append(m)
        canvas.save(images_dir / file_name)
        absent = [c for c in range(len(names)) if c not in present]
        coco["images"].append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": w,
                "height": h,
                "neg_category_ids": [c + 1 for c in absent[:1]],
            }
        )
        for concept, ms in per_concept.items():
            pair_id = len(saco["images"]) + 1
            saco["images"].append(
                {
                    "id": pair_id,
                    "file_name": file_name,
                    "text_input": concept,
                    "width": w,
                    "height": h,
                    "is_instance_exhaustive": True,
                    "is_pixel_exhaustive": True,
                }
            )
            for m in ms:
                if not m.any():
                    continue
                rle = masks.encode(m)
                ann = {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": names.index(concept) + 1,
                    "segmentation": rle,
                    "area": masks.area(rle),
                    "bbox": masks.bbox(rle),
                    "iscrowd": 0,
                }
                coco["annotations"].append(ann)
                x, y, bw, bh = masks.bbox(rle)
                saco["annotations"].append(
                    {
                        **ann,
                        "image_id": pair_id,
                        "category_id": 1,
                        "bbox": [x / w, y / h, bw / w, bh / h],
                        "area": masks.area(rle) / (w * h),
                    }
                )
        for c in absent[:1]:
            saco["images"].append(
                {
                    "id": len(saco["images"]) + 1,
                    "file_name": file_name,
                    "text_input": names[c],
                    "width": w,
                    "height": h,
                    "is_instance_exhaustive": True,
                    "is_pixel_exhaustive": True,
                }
            )
    coco_path, saco_path = out / "coco.json", out / "saco.json"
    coco_path.write_text(json.dumps(coco))
    saco_path.write_text(json.dumps(saco))
    return coco_path, saco_path, images_dir


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = make(args.out, args.images, args.seed)
    print("\n".join(str(p) for p in paths))
