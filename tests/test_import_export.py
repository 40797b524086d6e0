"""Import -> export round trips through pycocotools, bad input, versions; on both backends."""

from __future__ import annotations

import copy
import hashlib
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools.coco import COCO
from sqlalchemy import Engine, func, select, update

from annotator import masks
from annotator.db.models import Annotation, Dataset, Image, Pair, PairState
from annotator.db.session import session_scope
from annotator.errors import ConflictError, InvalidInputError, NotFoundError
from annotator.services.exporting import export_dataset
from annotator.services.importing import import_file
from annotator.services.versions import create_version
from tests.factories import coco_dataset, saco_dataset, write_images, write_json


def load_coco(data: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = copy.deepcopy(data)
    coco.createIndex()
    return coco


def digest(mask: np.ndarray) -> str:
    return hashlib.sha1(
        np.packbits(mask.astype(bool)).tobytes() + str(mask.shape).encode()
    ).hexdigest()


def coco_content(data: dict[str, Any]) -> dict[str, Any]:
    """What a COCO file says, independent of ids: masks per (file, category), LVIS flags."""
    coco = load_coco(data)
    names = {c["id"]: c["name"] for c in data["categories"]}
    files = {i["id"]: i["file_name"] for i in data["images"]}
    pairs: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
    for ann in coco.dataset["annotations"]:
        mask = coco.annToMask(ann)
        pairs[(files[ann["image_id"]], names[ann["category_id"]])].append(
            (digest(mask), int(ann.get("iscrowd", 0)))
        )
    return {
        "pairs": {k: sorted(v) for k, v in pairs.items()},
        "neg": {
            (files[i["id"]], names[c])
            for i in data["images"]
            for c in i.get("neg_category_ids", [])
        },
        "not_exhaustive": {
            (files[i["id"]], names[c])
            for i in data["images"]
            for c in i.get("not_exhaustive_category_ids", [])
        },
        "images": {(i["file_name"], i["width"], i["height"]) for i in data["images"]},
    }


def saco_content(data: dict[str, Any]) -> dict[tuple[str, str], Any]:
    coco = load_coco(data)
    out: dict[tuple[str, str], Any] = {}
    for pair in data["images"]:
        anns = coco.imgToAnns[pair["id"]]
        out[(pair["file_name"], pair["text_input"])] = {
            "size": (pair["height"], pair["width"]),
            "exhaustive": pair["is_instance_exhaustive"],
            "pixel_exhaustive": pair["is_pixel_exhaustive"],
            "masks": sorted(digest(coco.annToMask(a)) for a in anns),
        }
    return out


def export_json(engine: Engine, name: str, fmt: str, version: str | None = None) -> dict[str, Any]:
    buf = io.BytesIO()
    with session_scope(engine) as session:
        export_dataset(session, name, fmt, buf, version=version)
    return json.loads(buf.getvalue())


def do_import(engine: Engine, name: str, fmt: str, path: Path, images: Path | None = None) -> Any:
    with session_scope(engine) as session:
        return import_file(session, name, fmt, path, images)


def counts(engine: Engine) -> dict[str, int]:
    with session_scope(engine) as s:
        return {
            m.__tablename__: s.scalar(select(func.count()).select_from(m)) or 0
            for m in (Dataset, Image, Pair, Annotation)
        }


# -------------------------------------------------------------------------------- round trips


def test_coco_round_trip_is_lossless(engine: Engine, tmp_path: Path) -> None:
    original = coco_dataset()
    result = do_import(engine, "shapes", "coco", write_json(tmp_path / "in.json", original))
    assert result.dataset_created
    assert result.annotations == len(original["annotations"])
    exported = export_json(engine, "shapes", "coco")
    assert coco_content(exported) == coco_content(original)
    # Exported masks are compressed RLE with pixel area and bbox computed from the mask.
    for ann in exported["annotations"]:
        rle = ann["segmentation"]
        assert isinstance(rle["counts"], str)
        assert ann["area"] == masks.area(rle)
        assert ann["bbox"] == masks.bbox(rle)
        assert ann["source"] == "import"
    scored = [a for a in exported["annotations"] if "score" in a]
    assert sorted(a["score"] for a in scored) == pytest.approx([0.8, 0.9])


@pytest.mark.parametrize("fmt", ["coco", "saco"])
def test_small_batches_give_the_same_bytes(engine: Engine, tmp_path: Path, fmt: str) -> None:
    """Every stream spans many batches (and the COCO image merge join interleaves two)."""
    do_import(engine, "shapes", "coco", write_json(tmp_path / "in.json", coco_dataset(n_images=7)))
    outputs = []
    for batch in (1, 2, 5000):
        buf = io.BytesIO()
        with session_scope(engine) as session:
            export_dataset(session, "shapes", fmt, buf, batch=batch)
        outputs.append(buf.getvalue())
    assert outputs[0] == outputs[1] == outputs[2]


def test_saco_round_trip_is_lossless(engine: Engine, tmp_path: Path) -> None:
    original = saco_dataset()
    result = do_import(engine, "gold", "saco", write_json(tmp_path / "gold.json", original))
    assert (result.positives, result.negatives) == (6, 3)
    exported = export_json(engine, "gold", "saco")
    assert saco_content(exported) == saco_content(original)
    assert exported["categories"] == [{"id": 1, "name": "object"}]
    for ann in exported["annotations"]:
        pair = next(p for p in exported["images"] if p["id"] == ann["image_id"])
        h, w = pair["height"], pair["width"]
        assert ann["area"] == pytest.approx(masks.area(ann["segmentation"]) / (h * w))
        x, y, bw, bh = masks.bbox(ann["segmentation"])
        assert ann["bbox"] == pytest.approx([x / w, y / h, bw / w, bh / h])


def test_saco_negatives_exported_to_coco_as_neg_category_ids(
    engine: Engine, tmp_path: Path
) -> None:
    do_import(engine, "gold", "saco", write_json(tmp_path / "gold.json", saco_dataset()))
    exported = export_json(engine, "gold", "coco")
    content = coco_content(exported)
    assert content["neg"] == {(f"sa_{i}.jpg", "tabby cat") for i in range(3)}
    # "white sneaker" pairs are not instance-exhaustive in the source.
    assert content["not_exhaustive"] == {(f"sa_{i}.jpg", "white sneaker") for i in range(3)}
    assert len(exported["images"]) == 3


def test_export_import_export_is_a_fixed_point(engine: Engine, tmp_path: Path) -> None:
    do_import(engine, "a", "coco", write_json(tmp_path / "in.json", coco_dataset(seed=3)))
    first = export_json(engine, "a", "coco")
    do_import(engine, "b", "coco", write_json(tmp_path / "first.json", first))
    second = export_json(engine, "b", "coco")
    assert coco_content(second) == coco_content(first)


def test_images_dir_is_located_hashed_and_size_checked(engine: Engine, tmp_path: Path) -> None:
    data = coco_dataset()
    folder = write_images(tmp_path / "imgs", data)
    do_import(engine, "shapes", "coco", write_json(tmp_path / "in.json", data), folder)
    with session_scope(engine) as s:
        rows = s.execute(select(Image.file_name, Image.uri, Image.sha256)).all()
    assert len(rows) == len(data["images"])
    for file_name, uri, sha in rows:
        assert Path(uri) == (folder / file_name).resolve()
        assert sha == hashlib.sha256((folder / file_name).read_bytes()).hexdigest()


def test_importing_more_images_reuses_known_ones(engine: Engine, tmp_path: Path) -> None:
    data = coco_dataset()
    do_import(engine, "shapes", "coco", write_json(tmp_path / "a.json", data))
    # Same images, a new concept: images are reused, pairs are new.
    extra = {
        "images": data["images"][:1],
        "categories": [{"id": 1, "name": "purple star"}],
        "annotations": [],
    }
    extra["images"][0]["neg_category_ids"] = [1]
    result = do_import(engine, "shapes", "coco", write_json(tmp_path / "b.json", extra))
    assert (result.images_added, result.images_reused, result.negatives) == (0, 1, 1)


# ---------------------------------------------------------------------------------- bad input


def _bad_coco_cases() -> list[tuple[str, Any, str]]:
    base = coco_dataset()
    cases: list[tuple[str, Any, str]] = []

    def case(name: str, message: str, edit: Any) -> None:
        data = copy.deepcopy(base)
        edit(data)
        cases.append((name, data, message))

    case(
        "unknown image",
        "annotations[2] (id 102): image_id 999 is not in 'images'",
        lambda d: d["annotations"][2].update(image_id=999),
    )
    case(
        "rle size",
        "annotations[0] (id 100) (image 'img_0.png'): RLE size [5, 5] does not match",
        lambda d: d["annotations"][0].update(segmentation=masks.encode(np.ones((5, 5), bool))),
    )
    case(
        "unknown category",
        "annotations[1] (id 101): category_id 42 is not in 'categories'",
        lambda d: d["annotations"][1].update(category_id=42),
    )
    case(
        "bad counts",
        "annotations[0] (id 100) (image 'img_0.png')",
        lambda d: d["annotations"][0]["segmentation"].update(counts="!!"),
    )
    case(
        "odd polygon",
        "annotations[2] (id 102) (image 'img_0.png')",
        lambda d: d["annotations"][2].update(segmentation=[[1.0, 2.0, 3.0]]),
    )
    case(
        "duplicate image id",
        "images[1] (id 10): duplicate image id 10",
        lambda d: d["images"][1].update(id=10),
    )
    case(
        "missing width",
        "images[0] (id 10): missing field 'width'",
        lambda d: d["images"][0].pop("width"),
    )
    case(
        "negative width",
        "images[0] (id 10): field 'width' must be positive",
        lambda d: d["images"][0].update(width=-3),
    )
    case(
        "neg unknown",
        "images[0] (id 10): 'neg_category_ids' names unknown category 99",
        lambda d: d["images"][0].update(neg_category_ids=[99]),
    )
    case(
        "neg contradicts",
        "lists category 1 in neg_category_ids but also has it annotated",
        lambda d: d["images"][0].update(neg_category_ids=[1]),
    )
    case(
        "duplicate category name",
        "categories[1] (id 2): category name 'red disc'",
        lambda d: d["categories"][1].update(name="red  disc"),
    )
    case(
        "no segmentation",
        "annotations[0] (id 100): missing field 'segmentation'",
        lambda d: d["annotations"][0].pop("segmentation"),
    )
    case("not an object", "a COCO file must be a JSON object", lambda d: d.clear() or None)
    return cases


@pytest.mark.parametrize(
    ("name", "data", "message"),
    _bad_coco_cases(),
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else "",
)
def test_bad_coco_is_rejected_whole(
    engine: Engine, tmp_path: Path, name: str, data: Any, message: str
) -> None:
    if name == "not an object":
        data = [1, 2]
    path = write_json(tmp_path / "bad.json", data)
    with pytest.raises(InvalidInputError) as info:
        do_import(engine, "shapes", "coco", path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert counts(engine) == {"datasets": 0, "images": 0, "pairs": 0, "annotations": 0}


def test_malformed_json_names_the_position(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(InvalidInputError, match=r"not valid JSON: .* line 2, column"):
        do_import(engine, "shapes", "coco", path)
    assert counts(engine)["datasets"] == 0


def test_bad_saco_entries(engine: Engine, tmp_path: Path) -> None:
    data = saco_dataset()
    bad = copy.deepcopy(data)
    bad["annotations"][3]["image_id"] = 77
    with pytest.raises(
        InvalidInputError, match=r"annotations\[3\] \(id 4\): image_id 77 is not in 'images'"
    ):
        do_import(engine, "g", "saco", write_json(tmp_path / "a.json", bad))
    bad = copy.deepcopy(data)
    bad["images"][1]["width"] += 1
    with pytest.raises(
        InvalidInputError, match=r"images\[1\] \(id 2\): 'sa_0.jpg' is \d+x\d+ here but"
    ):
        do_import(engine, "g", "saco", write_json(tmp_path / "b.json", bad))
    bad = copy.deepcopy(data)
    bad["images"][1]["text_input"] = bad["images"][0]["text_input"]
    with pytest.raises(InvalidInputError, match="duplicate pair"):
        do_import(engine, "g", "saco", write_json(tmp_path / "c.json", bad))
    bad = copy.deepcopy(data)
    bad["annotations"][0]["segmentation"]["size"] = [1, 1]
    with pytest.raises(
        InvalidInputError, match=r"RLE size \[1, 1\] does not match image height x width"
    ):
        do_import(engine, "g", "saco", write_json(tmp_path / "d.json", bad))
    assert counts(engine)["pairs"] == 0


def test_images_dir_problems_are_named(engine: Engine, tmp_path: Path) -> None:
    data = coco_dataset()
    folder = write_images(tmp_path / "imgs", data)
    (folder / "img_1.png").unlink()
    with pytest.raises(InvalidInputError, match=r"image 'img_1.png': not found under"):
        do_import(engine, "s", "coco", write_json(tmp_path / "a.json", data), folder)
    write_images(folder, data)
    data["images"][-1]["width"] += 1  # the image without annotations
    with pytest.raises(
        InvalidInputError, match=r"image 'img_3.png': file is \d+x\d+ but the annotation"
    ):
        do_import(engine, "s", "coco", write_json(tmp_path / "b.json", data), folder)
    data["images"][-1]["width"] -= 1
    data["images"][-1]["file_name"] = "../escape.png"
    with pytest.raises(InvalidInputError, match="points outside"):
        do_import(engine, "s", "coco", write_json(tmp_path / "c.json", data), folder)
    assert counts(engine)["images"] == 0


def test_reimport_conflicts_and_writes_nothing(engine: Engine, tmp_path: Path) -> None:
    path = write_json(tmp_path / "in.json", coco_dataset())
    do_import(engine, "shapes", "coco", path)
    before = counts(engine)
    with pytest.raises(ConflictError, match=r"pair\(s\) already exist in dataset 'shapes'"):
        do_import(engine, "shapes", "coco", path)
    assert counts(engine) == before


def test_unknown_dataset_and_version(engine: Engine) -> None:
    with pytest.raises(NotFoundError, match="no dataset named 'nope'"):
        export_json(engine, "nope", "coco")


# ----------------------------------------------------------------------------------- versions


def test_version_exports_are_byte_identical_after_changes(engine: Engine, tmp_path: Path) -> None:
    do_import(engine, "shapes", "coco", write_json(tmp_path / "a.json", coco_dataset()))
    with session_scope(engine) as s:
        version = create_version(s, "shapes", "v1", note="first")
        checksums = dict(version.checksums)
    outputs = {}
    for fmt in ("coco", "saco"):
        first = io.BytesIO()
        with session_scope(engine) as s:
            res = export_dataset(s, "shapes", fmt, first, version="v1")
        assert res.matches_version is True
        assert res.sha256 == checksums[fmt] == hashlib.sha256(first.getvalue()).hexdigest()
        outputs[fmt] = first.getvalue()
    live_before = export_json(engine, "shapes", "coco")

    # New data arrives: more images and pairs, an edit supersedes a mask, a pair flips state.
    more = coco_dataset(seed=9)
    for img in more["images"]:
        img["file_name"] = "new_" + img["file_name"]
    do_import(engine, "shapes", "coco", write_json(tmp_path / "b.json", more))
    with session_scope(engine) as s:
        first_ann = s.scalars(select(Annotation).order_by(Annotation.id)).first()
        assert first_ann is not None
        first_ann.superseded_at = func.now()
        s.execute(
            update(Pair).where(Pair.id == 1).values(state=PairState.IN_REVIEW, is_exhaustive=None)
        )

    for fmt in ("coco", "saco"):
        again = io.BytesIO()
        with session_scope(engine) as s:
            export_dataset(s, "shapes", fmt, again, version="v1")
        assert again.getvalue() == outputs[fmt]
    live_after = export_json(engine, "shapes", "coco")
    assert len(live_after["images"]) > len(live_before["images"])
    live_ids = {a["id"] for a in live_after["annotations"]}
    assert first_ann.id not in live_ids


def test_version_tags_are_unique_and_listed(engine: Engine, tmp_path: Path) -> None:
    do_import(engine, "shapes", "coco", write_json(tmp_path / "a.json", coco_dataset()))
    with session_scope(engine) as s:
        v = create_version(s, "shapes", "v1")
        assert (v.num_pairs, v.num_annotations) == (8, 10)  # 6 positive + 2 negative pairs
    with (
        pytest.raises(ConflictError, match="version 'v1' already exists"),
        session_scope(engine) as s,
    ):
        create_version(s, "shapes", "v1")
    with pytest.raises(NotFoundError, match=r"no version 'v2' \(versions: v1\)"):
        export_json(engine, "shapes", "coco", version="v2")
