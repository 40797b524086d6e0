"""COCO instance segmentation: validating parser and streaming writer.

Import maps COCO onto pairs: every (image, category) with annotations is a positive pair;
LVIS-style ``neg_category_ids`` are negative pairs (verified absent) and
``not_exhaustive_category_ids`` mark positive pairs whose instances are not all masked.
Without those fields a COCO file is taken as exhaustive for the pairs it annotates.

Export writes the same fields back, plus provenance per annotation (``source``, ``score``,
``model_version``, ``proposal_id``, ``review_id``), with RLE segmentation and pixel area/bbox.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from annotator.errors import InvalidInputError
from annotator.formats.common import (
    HashingWriter,
    ImportBundle,
    ImportedImage,
    ImportedPair,
    clean_phrase,
    dumps,
    entry,
    imported_annotation,
    optional_bool,
    positive_int,
    require,
    write_json_array,
)


def parse(data: Any) -> ImportBundle:
    """Validate a COCO dict and return what it says; raises ``InvalidInputError``."""
    if not isinstance(data, dict):
        raise InvalidInputError("a COCO file must be a JSON object with 'images' and 'categories'")
    images_in = require(data, "images", list, "COCO file")
    categories_in = require(data, "categories", list, "COCO file")
    annotations_in = data.get("annotations", [])
    if not isinstance(annotations_in, list):
        raise InvalidInputError("COCO file: 'annotations' must be a list")

    phrases: dict[Any, str] = {}
    seen_phrases: dict[str, Any] = {}
    for i, cat in enumerate(categories_in):
        where = entry("categories", i, cat)
        cat_id = require(cat, "id", int, where)
        phrase = clean_phrase(require(cat, "name", str, where), where)
        if cat_id in phrases:
            raise InvalidInputError(f"{where}: duplicate category id {cat_id}")
        if phrase in seen_phrases:
            raise InvalidInputError(
                f"{where}: category name {phrase!r} is also category id {seen_phrases[phrase]}"
            )
        phrases[cat_id] = phrase
        seen_phrases[phrase] = cat_id

    bundle = ImportBundle()
    by_id: dict[Any, ImportedImage] = {}
    not_exhaustive: dict[Any, set[Any]] = {}
    negatives: dict[Any, list[Any]] = {}
    for i, img in enumerate(images_in):
        where = entry("images", i, img)
        image_id = require(img, "id", (int, str), where)
        file_name = require(img, "file_name", str, where)
        if not file_name.strip():
            raise InvalidInputError(f"{where}: empty file_name")
        image = ImportedImage(
            file_name=file_name,
            width=positive_int(img, "width", where),
            height=positive_int(img, "height", where),
        )
        if image_id in by_id:
            raise InvalidInputError(f"{where}: duplicate image id {image_id!r}")
        if file_name in bundle.images:
            raise InvalidInputError(f"{where}: duplicate file_name {file_name!r}")
        by_id[image_id] = image
        bundle.images[file_name] = image
        for key, target in (("neg_category_ids", negatives), ("not_exhaustive_category_ids", None)):
            ids = img.get(key, [])
            if not isinstance(ids, list):
                raise InvalidInputError(f"{where}: {key!r} must be a list of category ids")
            for cat_id in ids:
                if cat_id not in phrases:
                    raise InvalidInputError(f"{where}: {key!r} names unknown category {cat_id!r}")
            if target is not None:
                target[image_id] = ids
            else:
                not_exhaustive[image_id] = set(ids)

    for i, ann in enumerate(annotations_in):
        where = entry("annotations", i, ann)
        image_id = require(ann, "image_id", (int, str), where)
        cat_id = require(ann, "category_id", int, where)
        found = by_id.get(image_id)
        if found is None:
            raise InvalidInputError(f"{where}: image_id {image_id!r} is not in 'images'")
        image = found
        if cat_id not in phrases:
            raise InvalidInputError(f"{where}: category_id {cat_id!r} is not in 'categories'")
        if "segmentation" not in ann:
            raise InvalidInputError(f"{where}: missing field 'segmentation' (boxes-only COCO?)")
        iscrowd = bool(optional_bool(ann, "iscrowd", where))
        score = ann.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
            raise InvalidInputError(f"{where}: field 'score' must be a number, got {score!r}")
        annotation = imported_annotation(
            ann["segmentation"], image, where, iscrowd=iscrowd, score=score
        )
        pair_key = (image.file_name, phrases[cat_id])
        pair = bundle.pairs.get(pair_key)
        if pair is None:
            pair = bundle.pairs[pair_key] = ImportedPair(
                file_name=image.file_name,
                phrase=phrases[cat_id],
                negative=False,
                is_exhaustive=cat_id not in not_exhaustive.get(image_id, ()),
            )
        pair.annotations.append(annotation)

    for image_id, ids in not_exhaustive.items():
        image = by_id[image_id]
        for cat_id in sorted(ids):
            # Present but not exhaustively masked, possibly with no mask at all yet.
            bundle.pairs.setdefault(
                (image.file_name, phrases[cat_id]),
                ImportedPair(image.file_name, phrases[cat_id], negative=False, is_exhaustive=False),
            )
    for image_id, ids in negatives.items():
        image = by_id[image_id]
        for cat_id in ids:
            pair_key = (image.file_name, phrases[cat_id])
            existing = bundle.pairs.get(pair_key)
            if existing is not None and not existing.negative:
                raise InvalidInputError(
                    f"image id {image_id!r} ({image.file_name!r}) lists category {cat_id} "
                    "in neg_category_ids but also has it annotated or not exhaustive"
                )
            bundle.pairs[pair_key] = ImportedPair(
                image.file_name, phrases[cat_id], negative=True, is_exhaustive=True
            )
    return bundle


def write(
    out: HashingWriter,
    *,
    info: Mapping[str, Any],
    images: Iterable[Sequence[dict[str, Any]]],
    categories: Iterable[Sequence[dict[str, Any]]],
    annotations: Iterable[Sequence[dict[str, Any]]],
) -> dict[str, int]:
    """Stream a COCO file; each section is an iterable of batches of JSON-ready dicts,
    consumed lazily, so no section is ever held whole in memory."""
    out.write(b'{"info":' + dumps(dict(info)) + b',\n"licenses":[],\n"images":')
    n_images = write_json_array(out, images)
    out.write(b',\n"categories":')
    n_categories = write_json_array(out, categories)
    out.write(b',\n"annotations":')
    n_annotations = write_json_array(out, annotations)
    out.write(b"}\n")
    return {"images": n_images, "categories": n_categories, "annotations": n_annotations}
