"""Offline noun-phrase parser (measured on hand-labelled captions) and the LLM parser."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from annotator.backends import ConceptParser, resolve_backend
from annotator.miners.parsers import LlmParser, OfflineParser, chunk_noun_phrases, extract_json_list
from tests.models.tiny_vlm import cached_tiny_llm

CAPTIONS = Path(__file__).resolve().parents[1] / "fixtures" / "captions.jsonl"

# Floors just below the measured values (docs/concepts.md has the numbers and the command).
FLOORS = {"dev": (0.98, 0.98), "heldout": (0.96, 0.96), "all": (0.97, 0.97)}


def load_captions() -> list[dict[str, object]]:
    return [json.loads(line) for line in CAPTIONS.read_text().splitlines() if line.strip()]


def precision_recall(split: str) -> tuple[float, float, int]:
    """Micro precision/recall of phrases (sets per caption) on a split of the fixture."""
    rows = [r for r in load_captions() if split == "all" or r["split"] == split]
    parser = OfflineParser(max_per_image=1000)
    predicted = parser.parse([str(r["caption"]) for r in rows])
    tp = fp = fn = 0
    for row, phrases in zip(rows, predicted, strict=True):
        gold = set(row["phrases"])  # type: ignore[arg-type]
        found = set(phrases)
        tp, fp, fn = tp + len(gold & found), fp + len(found - gold), fn + len(gold - found)
    return tp / (tp + fp), tp / (tp + fn), len(rows)


def test_fixture_is_large_and_well_formed() -> None:
    rows = load_captions()
    assert len(rows) >= 100
    assert {r["split"] for r in rows} == {"dev", "heldout"}
    assert {r["source"] for r in rows} == {"coco", "alt_text", "vlm"}
    for row in rows:
        assert row["phrases"], row
        assert len(set(row["phrases"])) == len(row["phrases"]), row  # type: ignore[arg-type]


@pytest.mark.parametrize("split", ["dev", "heldout", "all"])
def test_offline_parser_precision_recall(split: str) -> None:
    precision, recall, n = precision_recall(split)
    min_p, min_r = FLOORS[split]
    assert precision >= min_p and recall >= min_r, (split, n, precision, recall)


def test_chunker_examples() -> None:
    assert chunk_noun_phrases("A man in a black dress holding an umbrella.") == [
        "man",
        "black dress",
        "umbrella",
    ]
    # possessor split off; colour conjunction kept; participle modifier kept
    assert chunk_noun_phrases("the woman's black and white striped bag") == [
        "woman",
        "black and white striped bag",
    ]
    assert chunk_noun_phrases("A dog sleeping on a stuffed chair") == ["dog", "stuffed chair"]


def test_offline_parser_contract() -> None:
    cls = resolve_backend("parser", "offline")
    assert cls is OfflineParser
    with OfflineParser(max_per_image=2) as parser:
        assert isinstance(parser, ConceptParser)
        assert parser.model_version.startswith("offline-np-chunker@")
        out = parser.parse(["Two dogs and a red frisbee on the grass.", ""])
    assert out == [["dog", "red frisbee"], []]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('["red car", "dog"]', ["red car", "dog"]),
        ('Sure! ```json\n["a cat", 3, "  "]\n``` done', ["a cat"]),
        ('[not json] then ["tree"]', ["tree"]),
        ("no list here", None),
        ("[", None),
    ],
)
def test_extract_json_list(text: str, expected: list[str] | None) -> None:
    assert extract_json_list(text) == expected


def test_llm_parser_end_to_end(tmp_path_factory: pytest.TempPathFactory) -> None:
    # A hand-wired tiny Llama whose greedy answer is the JSON list ["red car", "dogs"].
    answer = ['["red', 'car",', '"dogs"]']
    source = str(cached_tiny_llm(tmp_path_factory, answer))
    assert resolve_backend("parser", "llm") is LlmParser
    with LlmParser(source, max_new_tokens=8, batch_size=2) as parser:
        assert parser.generate(["a red car", "two dogs", "x"]) == ['["red car", "dogs"]'] * 3
        assert parser.parse(["a red car and two dogs"]) == [["red car", "dog"]]
        assert parser.model_version.startswith(Path(source).name + "@")


def test_llm_parser_invalid_output_gives_empty_list_and_warning(
    tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    source = str(cached_tiny_llm(tmp_path_factory))  # random weights: never a JSON list
    with (
        LlmParser(source, max_new_tokens=4, batch_size=2) as parser,
        caplog.at_level(logging.WARNING),
    ):
        batched = parser.parse(["a dog", "a red car on the street", "cat"])
        parser.batch_size = 1
        looped = parser.generate(["a dog", "a red car on the street", "cat"])
    assert batched == [[], [], []]
    assert "gave no JSON list" in caplog.text
    parser.batch_size = 3
    with parser:
        assert parser.generate(["a dog", "a red car on the street", "cat"]) == looped


if __name__ == "__main__":  # python -m tests.miners.test_parsers: print the measured table
    print("| split | captions | precision | recall |")
    print("|---|---:|---:|---:|")
    for name in ("dev", "heldout", "all"):
        p, r, count = precision_recall(name)
        print(f"| {name} | {count} | {p:.3f} | {r:.3f} |")
