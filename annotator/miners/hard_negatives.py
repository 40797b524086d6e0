"""Hard negatives: phrases that look like a present concept but name something absent.

As in the SAM 3 data engine, candidates come from two places and are then filtered:

1. :func:`propose_hard_negatives` (pure): siblings of a present concept in the dataset's own
   concept vocabulary — same head noun, different modifiers ("tabby cat" -> "siamese cat",
   "red car" -> "blue car", "tennis racket" -> "badminton racket");
   :class:`LlmHardNegatives` optionally asks an instruction model for visually similar phrases.
2. The proposer runs on the candidates, and :func:`select_adversarial` keeps a candidate only
   when its masks overlap the positive concept's masks: the model confuses the two, so a verified
   "absent" label for it is informative. EV then verifies the survivors as negatives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from annotator import masks as mask_ops
from annotator.concepts import COLOURS, clean_concepts, head_index
from annotator.miners.parsers import LlmParser, extract_json_list

if TYPE_CHECKING:
    from annotator.backends import PhraseProposals
    from annotator.masks import RLE

__all__ = [
    "AdversarialNegative",
    "HardNegative",
    "LlmHardNegatives",
    "propose_hard_negatives",
    "select_adversarial",
]


@dataclass(frozen=True)
class HardNegative:
    """A candidate negative phrase and the present concept (``anchor``) it resembles.

    ``relation`` is ``"colour_swap"`` (only a colour differs), ``"modifier_swap"`` (same head,
    other modifiers) or ``"llm"``; ``score`` in (0, 1] ranks candidates (higher = more similar).
    """

    phrase: str
    anchor: str
    relation: str
    score: float


@dataclass(frozen=True)
class AdversarialNegative:
    """A hard negative the proposer confuses with its anchor: ``overlap`` is the largest IoU
    between one of its masks and one of the anchor's masks; ``presence`` is the proposer's."""

    phrase: str
    overlap: float
    presence: float


def _split(phrase: str) -> tuple[tuple[str, ...], str, tuple[str, ...]]:
    """(modifiers, head, complement) of a normalised phrase: "cup of coffee" -> ((), cup, (of,
    coffee)); "red sports car" -> ((red, sports), car, ())."""
    tokens = phrase.split()
    h = head_index(tokens)
    return tuple(tokens[:h]), tokens[h], tuple(tokens[h + 1 :])


def _similarity(anchor: str, candidate: str) -> tuple[str, float] | None:
    """How ``candidate`` relates to ``anchor`` as a hard negative, or ``None`` if it does not.

    Same head and complement, both modified, and neither's modifiers a subset of the other's
    (a subset means one phrase is a hypernym of the other, e.g. "cat" / "tabby cat", and the
    "negative" would be present).
    """
    a_mods, a_head, a_tail = _split(anchor)
    c_mods, c_head, c_tail = _split(candidate)
    if a_head != c_head or a_tail != c_tail or not a_mods or not c_mods:
        return None
    a_set, c_set = set(a_mods), set(c_mods)
    if a_set <= c_set or c_set <= a_set:
        return None
    differing = a_set ^ c_set
    if differing <= COLOURS and len(a_mods) == len(c_mods):
        return "colour_swap", 1.0
    # More shared modifiers = closer siblings ("red sports car" / "blue sports car").
    return "modifier_swap", 0.6 + 0.3 * len(a_set & c_set) / len(a_set | c_set)


def propose_hard_negatives(
    present: Sequence[str],
    vocabulary: Iterable[str] | Mapping[str, int],
    *,
    exclude: Iterable[str] = (),
    max_per_concept: int = 3,
    max_total: int | None = None,
) -> list[HardNegative]:
    """Candidate hard negatives for one image from the dataset's concept vocabulary.

    Args:
        present: the image's (normalised) concepts.
        vocabulary: concepts seen elsewhere in the dataset; a mapping gives their counts, and
            more frequent concepts rank first among equally similar candidates.
        exclude: phrases never to propose (already paired with this image).
        max_per_concept: candidates per present concept.
        max_total: overall cap (``None``: no cap).

    Returns:
        Candidates ordered by anchor (in ``present`` order), then score, count and phrase;
        each phrase appears once (for its first anchor). Pure and deterministic.
    """
    counts: Mapping[str, int] = (
        vocabulary if isinstance(vocabulary, Mapping) else dict.fromkeys(vocabulary, 0)
    )
    taken = set(present) | set(exclude)
    out: list[HardNegative] = []
    for anchor in present:
        found: list[HardNegative] = []
        for candidate in counts:
            if candidate in taken:
                continue
            relation = _similarity(anchor, candidate)
            if relation is not None:
                found.append(HardNegative(candidate, anchor, relation[0], relation[1]))
        found.sort(key=lambda n: (-n.score, -counts[n.phrase], n.phrase))
        for negative in found[:max_per_concept]:
            taken.add(negative.phrase)
            out.append(negative)
            if max_total is not None and len(out) >= max_total:
                return out
    return out


def select_adversarial(
    candidate_proposals: Sequence[PhraseProposals],
    positive_masks: Sequence[RLE],
    min_iou: float = 0.5,
) -> list[AdversarialNegative]:
    """Keep the candidates whose proposed masks overlap the positive concept's masks.

    Args:
        candidate_proposals: the proposer's output for the candidate phrases on this image.
        positive_masks: masks of the positive (anchor) concept on the same image (accepted
            annotations or its proposals), COCO RLEs of the image size.
        min_iou: a candidate survives when some mask of it has IoU >= ``min_iou`` with some
            positive mask.

    Returns:
        The survivors in input order with their largest overlap.
    """
    if not 0.0 < min_iou <= 1.0:
        raise ValueError(f"min_iou must be in (0, 1], got {min_iou}")
    kept: list[AdversarialNegative] = []
    if not positive_masks:
        return kept
    for proposals in candidate_proposals:
        if not proposals.masks:
            continue
        overlap = float(mask_ops.iou_matrix(proposals.masks, positive_masks).max())
        if overlap >= min_iou:
            kept.append(AdversarialNegative(proposals.phrase, overlap, float(proposals.presence)))
    return kept


HARD_NEGATIVE_SYSTEM_PROMPT = (
    "You help build a segmentation dataset. Given a short noun phrase for an object in a photo, "
    "list other short noun phrases for objects that look similar but are different things "
    '(for example for "tabby cat": "siamese cat", "fox"; for "red car": "red truck", '
    '"blue car"). Return only a JSON array of strings.'
)


class LlmHardNegatives(LlmParser):
    """Visually similar phrases from an instruction model (optional source of hard negatives).

    Same model loading, batching and JSON handling as :class:`LlmParser`; the answer for each
    concept is cleaned by :func:`annotator.concepts.clean_concepts` and never contains the
    concept itself.
    """

    name = "llm-hard-negatives"

    def prompt(self, caption: str) -> list[dict[str, str]]:
        """The chat messages for one concept (``caption`` is the concept phrase here)."""
        return [
            {"role": "system", "content": HARD_NEGATIVE_SYSTEM_PROMPT},
            {"role": "user", "content": f"Phrase: {caption}\nSimilar phrases as a JSON array:"},
        ]

    def similar(self, concepts: Sequence[str], per_concept: int = 3) -> list[list[HardNegative]]:
        """Up to ``per_concept`` hard-negative candidates per concept, in answer order."""
        results: list[list[HardNegative]] = []
        for concept, answer in zip(concepts, self.generate(concepts), strict=True):
            phrases = [p for p in clean_concepts(extract_json_list(answer) or []) if p != concept]
            results.append([HardNegative(p, concept, "llm", 0.5) for p in phrases[:per_concept]])
        return results
