"""Hard-negative candidates from the dataset vocabulary and the adversarial filter."""

from __future__ import annotations

import numpy as np
import pytest

from annotator import masks
from annotator.backends import PhraseProposals
from annotator.miners.hard_negatives import propose_hard_negatives, select_adversarial


def test_modifier_and_colour_swaps() -> None:
    vocabulary = {
        "siamese cat": 5,
        "persian cat": 9,
        "cat": 50,  # hypernym of "tabby cat": would be present, never a negative
        "tabby cat": 3,
        "fluffy tabby cat": 2,  # hyponym: may well be present
        "blue car": 4,
        "red truck": 7,
        "dog": 8,
        "cup of coffee": 1,
        "cup of tea": 1,
    }
    found = propose_hard_negatives(["tabby cat", "red car"], vocabulary, max_per_concept=5)
    by_anchor = {(n.anchor, n.phrase): n for n in found}
    assert set(by_anchor) == {
        ("tabby cat", "persian cat"),
        ("tabby cat", "siamese cat"),
        ("red car", "blue car"),
    }
    assert by_anchor[("red car", "blue car")].relation == "colour_swap"
    assert by_anchor[("tabby cat", "siamese cat")].relation == "modifier_swap"
    # equally similar candidates: the more frequent one first
    assert [n.phrase for n in found[:2]] == ["persian cat", "siamese cat"]


def test_excludes_caps_and_plain_iterables() -> None:
    vocabulary = ["blue car", "green car", "white car", "red bus"]
    found = propose_hard_negatives(
        ["red car"], vocabulary, exclude={"green car"}, max_per_concept=1
    )
    assert [n.phrase for n in found] == ["blue car"]
    assert propose_hard_negatives(["red car", "red bus"], vocabulary, max_total=2)[-1].phrase in {
        "white car",
        "green car",
    }
    assert propose_hard_negatives(["dog"], vocabulary) == []


def _proposals(phrase: str, boxes: list[tuple[int, int, int, int]]) -> PhraseProposals:
    stack = np.zeros((len(boxes), 20, 20), dtype=bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        stack[i, y0:y1, x0:x1] = True
    return PhraseProposals(
        phrase=phrase,
        masks=masks.encode_many(stack),
        boxes=np.zeros((len(boxes), 4), np.float32),
        scores=np.ones(len(boxes), np.float32),
        presence=0.7,
    )


def test_select_adversarial_keeps_only_overlapping_candidates() -> None:
    positive = _proposals("tabby cat", [(0, 0, 10, 10)]).masks
    candidates = [
        _proposals("siamese cat", [(12, 12, 20, 20), (0, 0, 10, 9)]),  # IoU 0.9 with the cat
        _proposals("persian cat", [(5, 5, 15, 15)]),  # IoU 25/175
        _proposals("fox", []),
    ]
    kept = select_adversarial(candidates, positive, min_iou=0.5)
    assert [k.phrase for k in kept] == ["siamese cat"]
    assert kept[0].overlap == pytest.approx(0.9)
    assert kept[0].presence == pytest.approx(0.7)
    assert [k.phrase for k in select_adversarial(candidates, positive, min_iou=0.1)] == [
        "siamese cat",
        "persian cat",
    ]
    assert select_adversarial(candidates, [], min_iou=0.5) == []
    with pytest.raises(ValueError, match="min_iou"):
        select_adversarial(candidates, positive, min_iou=0.0)
