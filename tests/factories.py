"""Builders of realistic COCO / SA-Co files for tests (every mask form COCO allows)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from annotator import masks


def disc(height: int, width: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def coco_dataset(seed: int = 0, n_images: int = 4) -> dict[str, Any]:
    """A COCO file with compressed RLE, uncompressed RLE (iscrowd), polygons, LVIS flags,
    an image without annotations, scores on some annotations."""
    rng = np.random.default_rng(seed)
    categories = [
        {"id": 1, "name": "red disc", "supercategory": "shape"},
        {"id": 2, "name": "blue square", "supercategory": "shape"},
        {"id": 7, "name": "green triangle", "supercategory": "shape"},
    ]
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    ann_id = 100
    for i in range(n_images):
        h, w = int(rng.integers(40, 90)), int(rng.integers(50, 120))
        image = {"id": 10 + i, "file_name": f"img_{i}.png", "width": w, "height": h}
        if i == n_images - 1:  # no annotations, one verified-absent concept
            image["neg_category_ids"] = [7]
            images.append(image)
            continue
        for k in range(2):
            m = disc(h, w, rng.uniform(10, h - 10), rng.uniform(10, w - 10), rng.uniform(4, 9))
            rle = masks.encode(m)
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image["id"],
                    "category_id": 1,
                    "segmentation": rle,
                    "area": int(m.sum()),
                    "bbox": masks.bbox(rle),
                    "iscrowd": 0,
                    **({"score": 0.9 - 0.1 * k} if i == 0 else {}),
                }
            )
            ann_id += 1
        x0, y0 = float(rng.integers(0, w // 2)), float(rng.integers(0, h // 2))
        poly = [x0, y0, x0 + 15.5, y0, x0 + 15.5, y0 + 12.25, x0, y0 + 12.25]
        annotations.append(
            {
                "id": ann_id,
                "image_id": image["id"],
                "category_id": 2,
                "segmentation": [poly],
                "area": 15.5 * 12.25,
                "bbox": [x0, y0, 15.5, 12.25],
                "iscrowd": 0,
            }
        )
        ann_id += 1
        if i == 1:  # a crowd region in uncompressed RLE, and LVIS-style flags
            crowd = np.zeros((h, w), bool)
            crowd[: h // 3, w // 2 :] = True
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image["id"],
                    "category_id": 1,
                    "segmentation": masks.to_uncompressed(masks.encode(crowd)),
                    "area": int(crowd.sum()),
                    "bbox": [w // 2, 0, w - w // 2, h // 3],
                    "iscrowd": 1,
                }
            )
            ann_id += 1
            image["not_exhaustive_category_ids"] = [2]
            image["neg_category_ids"] = [7]
        images.append(image)
    return {
        "info": {"description": "test"},
        "images": images,
        "categories": categories,
        "annotations": annotations,
    }


def saco_dataset(seed: int = 1) -> dict[str, Any]:
    """An SA-Co Gold-style file: pairs sharing images, negatives, both exhaustivity flags."""
    rng = np.random.default_rng(seed)
    pairs: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    ann_id = 1
    for i in range(3):
        h, w = int(rng.integers(50, 80)), int(rng.integers(60, 100))
        for j, phrase in enumerate(["striped umbrella", "white sneaker", "tabby cat"]):
            pair_id = len(pairs) + 1
            negative = j == 2
            pairs.append(
                {
                    "id": pair_id,
                    "file_name": f"sa_{i}.jpg",
                    "text_input": phrase,
                    "height": h,
                    "width": w,
                    "queried_category": str(j),
                    "is_instance_exhaustive": j != 1,
                    "is_pixel_exhaustive": j == 0,
                }
            )
            if negative:
                continue
            for _ in range(1 + j):
                m = disc(h, w, rng.uniform(8, h - 8), rng.uniform(8, w - 8), rng.uniform(3, 7))
                rle = masks.encode(m)
                x, y, bw, bh = masks.bbox(rle)
                annotations.append(
                    {
                        "id": ann_id,
                        "image_id": pair_id,
                        "source": "manual",
                        "area": m.sum() / (h * w),
                        "bbox": [x / w, y / h, bw / w, bh / h],
                        "segmentation": rle,
                        "category_id": 1,
                        "iscrowd": 0,
                    }
                )
                ann_id += 1
    return {
        "info": {},
        "images": pairs,
        "categories": [{"id": 1, "name": "object"}],
        "annotations": annotations,
    }


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def write_images(folder: Path, data: dict[str, Any]) -> Path:
    """PNG files matching the sizes in a COCO/SA-Co dict."""
    folder.mkdir(parents=True, exist_ok=True)
    done: set[str] = set()
    for i, image in enumerate(data["images"]):
        if image["file_name"] in done:
            continue
        done.add(image["file_name"])
        pixels = np.full((image["height"], image["width"], 3), (i * 37) % 256, np.uint8)
        pixels[0, 0] = (i, 255 - i, 7)  # every file distinct, so content hashes differ
        Image.fromarray(pixels).save(folder / image["file_name"])
    return folder
