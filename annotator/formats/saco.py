"""SA-Co (Gold/Silver) JSON: validating parser and streaming writer.

SA-Co is COCO-like, but each ``images[i]`` is an image-phrase *pair*: ``file_name``,
``text_input``, ``height``, ``width``, ``is_instance_exhaustive``, ``is_pixel_exhaustive``.
A pair with no annotations is a negative (the phrase is verified absent). Annotations carry an
RLE ``segmentation`` and a *normalised* ``bbox`` / ``area``; ``category_id`` is always 1.
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

CATEGORY = {"id": 1, "name": "object"}


def parse(data: Any) -> ImportBundle:
    """Validate an SA-Co dict and return what it says; raises ``InvalidInputError``."""
    if not isinstance(data, dict):
        raise InvalidInputError("an SA-Co file must be a JSON object with 'images'")
    pairs_in = require(data, "images", list, "SA-Co file")
    annotations_in = data.get("annotations", [])
    if not isinstance(annotations_in, list):
        raise InvalidInputError("SA-Co file: 'annotations' must be a list")

    bundle = ImportBundle()
    by_id: dict[Any, ImportedPair] = {}
    for i, item in enumerate(pairs_in):
        where = entry("images", i, item)
        pair_id = require(item, "id", (int, str), where)
        file_name = require(item, "file_name", str, where)
        if not file_name.strip():
            raise InvalidInputError(f"{where}: empty file_name")
        phrase = clean_phrase(require(item, "text_input", str, where), where)
        width = positive_int(item, "width", where)
        height = positive_int(item, "height", where)
        image = bundle.images.get(file_name)
        if image is None:
            image = bundle.images[file_name] = ImportedImage(file_name, width, height)
        elif (image.width, image.height) != (width, height):
            raise InvalidInputError(
                f"{where}: {file_name!r} is {width}x{height} here but "
                f"{image.width}x{image.height} in an earlier pair"
            )
        if pair_id in by_id:
            raise InvalidInputError(f"{where}: duplicate pair id {pair_id!r}")
        if (file_name, phrase) in bundle.pairs:
            raise InvalidInputError(f"{where}: duplicate pair ({file_name!r}, {phrase!r})")
        pair = ImportedPair(
            file_name=file_name,
            phrase=phrase,
            negative=True,  # until an annotation says otherwise
            is_exhaustive=optional_bool(item, "is_instance_exhaustive", where),
            is_pixel_exhaustive=optional_bool(item, "is_pixel_exhaustive", where),
        )
        by_id[pair_id] = pair
        bundle.pairs[(file_name, phrase)] = pair

    for i, ann in enumerate(annotations_in):
        where = entry("annotations", i, ann)
        pair_id = require(ann, "image_id", (int, str), where)
        target = by_id.get(pair_id)
        if target is None:
            raise InvalidInputError(f"{where}: image_id {pair_id!r} is not in 'images'")
        pair = target
        if "segmentation" not in ann:
            raise InvalidInputError(f"{where}: missing field 'segmentation'")
        score = ann.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
            raise InvalidInputError(f"{where}: field 'score' must be a number, got {score!r}")
        pair.annotations.append(
            imported_annotation(
                ann["segmentation"],
                bundle.images[pair.file_name],
                where,
                iscrowd=bool(optional_bool(ann, "iscrowd", where)),
                score=score,
            )
        )
        pair.negative = False
    return bundle


def write(
    out: HashingWriter,
    *,
    info: Mapping[str, Any],
    pairs: Iterable[Sequence[dict[str, Any]]],
    annotations: Iterable[Sequence[dict[str, Any]]],
) -> dict[str, int]:
    """Stream an SA-Co file (pairs as ``images``, one category); sections come in batches."""
    out.write(b'{"info":' + dumps(dict(info)) + b',\n"images":')
    n_pairs = write_json_array(out, pairs)
    out.write(b',\n"categories":[' + dumps(CATEGORY) + b'],\n"annotations":')
    n_annotations = write_json_array(out, annotations)
    out.write(b"}\n")
    return {"images": n_pairs, "annotations": n_annotations}
