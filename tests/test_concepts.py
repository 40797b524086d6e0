"""Concept normalisation, singularisation and the groundability filter."""

from __future__ import annotations

import pytest

from annotator.concepts import clean_concepts, is_groundable, normalize_phrase, singularize


@pytest.mark.parametrize(
    ("plural", "singular"),
    [
        ("people", "person"),
        ("children", "child"),
        ("mice", "mouse"),
        ("leaves", "leaf"),
        ("knives", "knife"),
        ("wolves", "wolf"),
        ("teeth", "tooth"),
        ("glasses", "glass"),
        ("buses", "bus"),
        ("boxes", "box"),
        ("watches", "watch"),
        ("dishes", "dish"),
        ("berries", "berry"),
        ("cookies", "cookie"),
        ("tomatoes", "tomato"),
        ("shoes", "shoe"),
        ("horses", "horse"),
        ("houses", "house"),
        ("lenses", "lens"),
        ("skis", "ski"),
        ("taxis", "taxi"),
        ("firemen", "fireman"),
        ("sleeves", "sleeve"),
        ("cacti", "cactus"),
        ("t-shirts", "t-shirt"),
        ("cars", "car"),
        # unchanged: mass nouns, plural-only nouns, zero plurals, singulars in -s
        ("sheep", "sheep"),
        ("fish", "fish"),
        ("grass", "grass"),
        ("jeans", "jeans"),
        ("scissors", "scissors"),
        ("series", "series"),
        ("bus", "bus"),
        ("tennis", "tennis"),
        ("dress", "dress"),
        ("ramen", "ramen"),
    ],
)
def test_singularize(plural: str, singular: str) -> None:
    assert singularize(plural) == singular


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The Two Red Cars!", "red car"),
        ("a striped umbrella", "striped umbrella"),
        ("the man's hat", "hat"),  # possessor dropped, possessed head kept
        ("his cell phones", "cell phone"),
        ("a group of people", "person"),
        ("a pair of scissors", "scissors"),
        ("slice of pizza", "pizza"),
        ("the side of the road", "road"),
        ("one of the bookcases", "bookcase"),
        ("a cute little dog", "dog"),
        ("freshly baked bread rolls", "baked bread roll"),
        ("red double decker buses", "red double decker bus"),
        ("glasses", "glasses"),  # bare: eyewear
        ("reading glasses", "reading glasses"),
        ("wine glasses", "wine glass"),
        ("cups of coffee", "cup of coffee"),  # the head before "of" is singularised
        ("the dog's", "dog"),
        ("  ", None),
        ("the two", None),
    ],
)
def test_normalize_phrase(raw: str, expected: str | None) -> None:
    assert normalize_phrase(raw) == expected


@pytest.mark.parametrize(
    "phrase",
    ["dog", "red car", "tank top", "pizza slice", "framed picture", "orange", "parking lot"],
)
def test_groundable(phrase: str) -> None:
    assert is_groundable(phrase)


@pytest.mark.parametrize(
    "phrase",
    [
        "scene",
        "city scene",
        "view",
        "background",
        "daytime",
        "sunny day",
        "kitchen",
        "living room",
        "baseball game",
        "trick",
        "happiness",
        "red",
        "dark blue",
        "top",  # vague alone
        "piece",
        "picture",
        "it",
        "something",
        "a b c d e f g",  # too long to be a concept
    ],
)
def test_not_groundable(phrase: str) -> None:
    assert not is_groundable(phrase)


def test_clean_concepts_normalises_dedupes_filters_and_caps() -> None:
    raw = ["The dogs", "a dog", "background", "Red Cars", "red car", "a scene", "tree", "bench"]
    assert clean_concepts(raw) == ["dog", "red car", "tree", "bench"]
    assert clean_concepts(raw, max_per_image=2) == ["dog", "red car"]
    assert clean_concepts([]) == []
