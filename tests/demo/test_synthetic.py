"""The synthetic world: seeded, reproducible, with exact masks and honest negatives."""

from __future__ import annotations

import numpy as np
import pytest

from annotator.datasets.synthetic import (
    COLOURS,
    PATTERNED,
    all_phrases,
    instances_of,
    make_scene,
)
from annotator.miners.parsers import OfflineParser


def test_same_seed_same_scene_other_seed_other_scene() -> None:
    a, b, c = make_scene(7), make_scene(7), make_scene(8)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.alt_text == b.alt_text and a.positives == b.positives and a.negatives == b.negatives
    for x, y in zip(a.objects, b.objects, strict=True):
        assert np.array_equal(x.mask, y.mask)
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))


@pytest.mark.parametrize("seed", range(12))
def test_masks_are_exact_after_occlusion(seed: int) -> None:
    scene = make_scene(seed, size=112)
    pixels = np.asarray(scene.image).astype(np.int32)
    taken = np.zeros(scene.size, dtype=bool)
    for obj in scene.objects:
        assert obj.mask.shape == scene.size and obj.mask.dtype == bool
        assert obj.area > 0
        assert not (taken & obj.mask).any(), "visible masks of two objects overlap"
        taken |= obj.mask
        # Every visible pixel carries this object's paint: its colour or the texture's shade.
        base = np.array(COLOURS[obj.colour])
        inside = pixels[obj.mask]
        near = np.minimum(
            np.abs(inside - base).max(1), np.abs(inside - (base * 0.55).astype(int)).max(1)
        )
        assert (near <= 30).mean() > 0.99
    # An object that the next ones hide is never hidden by more than half (min_visible).
    assert len(scene.objects) >= 1


def test_phrases_positives_negatives_and_alt_text_agree() -> None:
    parser = OfflineParser()
    for seed in range(20):
        scene = make_scene(seed, size=112)
        for phrase, indices in scene.positives.items():
            assert indices == instances_of(phrase, scene.objects) and indices
            assert len(scene.masks_of(phrase)) == len(indices)
        assert scene.negatives and len(set(scene.negatives)) == len(scene.negatives)
        for phrase in scene.negatives:
            assert phrase in all_phrases() and scene.masks_of(phrase) == []
        # The alt-text names present things only, in phrases the offline parser recovers.
        parsed = set(parser.parse([scene.alt_text])[0])
        assert parsed and parsed <= set(scene.positives), (scene.alt_text, parsed)


def test_hard_negatives_come_first() -> None:
    scene = make_scene(3)
    shapes = {o.shape for o in scene.objects}
    colours = {o.colour for o in scene.objects}
    first = scene.negatives[0].split()
    assert first[1] in shapes or first[0] in colours
    assert {p.split()[0] for p in all_phrases()} == set(COLOURS) | set(PATTERNED)
