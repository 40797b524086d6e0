"""Concept parsers: captions or alt-text -> raw noun phrases (cleaned by ``annotator.concepts``).

* :class:`OfflineParser` (``"offline"``, the default): a rule-based noun-phrase chunker with a
  compact lexicon. No downloads, no model, microseconds per caption. Measured on the hand-labelled
  captions in ``tests/fixtures/captions.jsonl`` (see ``docs/concepts.md``).
* :class:`LlmParser` (``"llm"``): an instruction-tuned causal LM (default
  ``settings.parser_model``) asked for a JSON list of noun phrases.

Both return, per caption, the phrases after :func:`annotator.concepts.clean_concepts`, so the two
are interchangeable downstream.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from annotator.backends import LazyModelBackend, NothingToLoad
from annotator.concepts import clean_concepts
from annotator.config import get_settings
from annotator.miners import lexicon as lx

if TYPE_CHECKING:
    import torch


def _words(text: str) -> list[str]:
    """The words of a word-list literal (``#`` lines are comments)."""
    return [
        w for line in text.splitlines() if not line.strip().startswith("#") for w in line.split()
    ]


__all__ = ["LlmParser", "OfflineParser", "chunk_noun_phrases", "extract_json_list"]

logger = logging.getLogger(__name__)

# --- offline chunker ----------------------------------------------------------------------------

# Clause breaks: punctuation and dashes between spaces.
_CLAUSE_SPLIT = re.compile(r"[.,;:!?()\[\]{}\"“”/|]+|\s[-–—]+\s|\n")
_CLOSE_UP = re.compile(r"\bclose\s+up\b")
_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+|[-'][a-z0-9]+)*['’]?|&")

# Coarse tags.
DET, NUM, ADJ, NOUN, VERB, AUX, PREP, BOUND, PRON, ADV, POSS, MOD, CJ = [
    "DET",
    "NUM",
    "ADJ",
    "NOUN",
    "VERB",
    "AUX",
    "PREP",
    "BOUND",
    "PRON",
    "ADV",
    "POSS",
    "MOD",
    "CJ",
]
_NP_TAGS = frozenset({ADJ, NOUN, MOD, CJ})
_NOMINAL_CONTEXT = frozenset({"DET", "NUM", "ADJ", "MOD", "POSS"})
_STARTERS = frozenset({DET, NUM, ADJ, MOD, PREP, POSS, BOUND, ADV, None})
# Adjectives that are nouns when nothing nominal follows ("an orange", "a baby", "the light").
_ADJ_NOUNS = frozenset(
    _words(
        """
        orange lime olive gold silver cream ivory copper bronze light baby adult male female
        glass metal plastic paper wood stone brick concrete steel iron leather rubber cotton
        wool denim silk velvet cardboard straw bamboo marble granite porcelain ceramic
        wicker double twin front back top bottom middle square
        """
    )
)
_NV_S_FORMS = frozenset(
    f for base in lx.NOUN_VERBS for f in lx.inflections(base) if f.endswith("s")
)
_NV_OTHER_FORMS = (
    frozenset(f for base in lx.NOUN_VERBS for f in lx.inflections(base) if not f.endswith("s"))
    - lx.NOUN_VERBS
)
# "double decker", "single bed": adjectives inside a phrase, not counts.
_NUMERAL_ADJECTIVES = frozenset({"double", "single", "triple", "twin"})
_PLURAL_IRREGULAR = frozenset(
    _words(
        """
        people men women children mice geese teeth feet police
        """
    )
)


def _looks_plural(word: str) -> bool:
    return word in _PLURAL_IRREGULAR or (
        word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3
    )


def _has_subject(prev_tag: str | None, prev_word: str) -> bool:
    if prev_tag == PRON:
        return prev_word in lx.SUBJECT_PRONOUNS
    return prev_tag == NOUN and not _looks_plural(prev_word)


def _lexical_tag(word: str) -> str | None:
    """Tag from the lexicon alone; ``None`` when the context has to decide."""
    if word.endswith(("'s", "s'", "’s")) and len(word) > 2 and word not in lx.AUXILIARIES:
        return None if word in {"it's", "that's", "there's", "here's", "what's"} else POSS
    if word in {"it's", "that's", "there's", "here's", "what's"}:
        return BOUND
    if word in lx.DETERMINERS:
        return DET
    if (word in lx.NUMBERS and word not in _NUMERAL_ADJECTIVES) or word.isdigit():
        return NUM
    if word in lx.PRONOUNS:
        return PRON
    if word in lx.AUXILIARIES:
        return AUX
    if word in lx.PREPOSITIONS:
        return PREP
    if word in lx.BOUNDARY_WORDS or word == "&":
        return BOUND
    if word in lx.NOUNS:
        return None if word.endswith(("ing", "ed")) else NOUN
    if word in lx.ADJECTIVES:
        return ADJ
    if word in lx.ADVERBS:
        return ADV
    return None


def _tag(words: list[str]) -> list[str]:
    """Coarse part-of-speech tags for one clause (left to right, using the tags so far)."""
    tags: list[str] = []
    for i, word in enumerate(words):
        prev_tag = tags[-1] if tags else None
        prev_word = words[i - 1] if i else ""
        nxt = words[i + 1] if i + 1 < len(words) else ""
        nxt_tag = _lexical_tag(nxt) if nxt else BOUND
        next_nominal = bool(nxt) and nxt_tag in (None, ADJ, NOUN)
        tag = _lexical_tag(word)
        if tag is not None:
            tags.append(tag)
            continue
        if word.endswith("ly") and len(word) > 4 and word not in lx.NOUNS:
            tags.append(ADV)
        elif word in lx.NOUNS:  # -ing / -ed nouns: "a painting", "children building a castle"
            # "children building a castle", "pedestrians crossing" vs "brick building"
            verb_like = prev_tag in (NOUN, PRON, AUX) and (
                nxt_tag in (DET, PRON, NUM) or _looks_plural(prev_word) or prev_tag == AUX
            )
            tags.append(VERB if verb_like and word.endswith("ing") else NOUN)
        elif word in _NV_S_FORMS:
            if (prev_tag == PRON and prev_word in lx.SUBJECT_PRONOUNS) or (
                prev_tag == NOUN
                and not _looks_plural(prev_word)
                and word in (lx.VERBS_AFTER_SINGULAR)
            ):
                tags.append(VERB)
            else:
                tags.append(NOUN)
        elif word in lx.NOUN_VERBS:
            after_subject = (prev_tag == NOUN and _looks_plural(prev_word)) or (
                prev_tag == PRON and prev_word in lx.SUBJECT_PRONOUNS
            )
            after_aux = prev_tag == AUX or prev_word == "to"
            tags.append(VERB if after_subject or after_aux else NOUN)
        elif (
            word in lx.VERBS
            and word.endswith("s")
            and prev_tag != NOUN
            and not _has_subject(prev_tag, prev_word)
        ):
            # a 3rd-person verb follows its subject (a noun, even a plural one as in "a vase of
            # roses sits"); elsewhere it is a plural noun: "eating leaves", "in sprinkles"
            tags.append(NOUN)
        elif (
            word in lx.VERBS
            and prev_tag in _NOMINAL_CONTEXT
            and not word.endswith(("ing", "ed", "en"))
        ):
            # a verb form right after a determiner or adjective is a noun: "french fries",
            # "two lounge chairs", "fallen leaves"
            tags.append(NOUN)
        elif (word.endswith("ing") and len(word) >= 5) or (
            word in _NV_OTHER_FORMS and word.endswith("ing")
        ):
            # "a sleeping cat", "running shoes" vs "a man riding a horse"
            modifier = prev_tag in _STARTERS and prev_tag != AUX and next_nominal
            tags.append(MOD if modifier else VERB)
        elif word in lx.VERBS or (word.endswith("ed") and len(word) > 4):
            participle = word.endswith(("ed", "en", "wn")) or word in {"lit", "cut", "hung"}
            if participle and next_nominal:
                if prev_tag == NOUN:
                    tags.append(MOD if word in lx.COMPOUND_PARTICIPLES else VERB)
                elif prev_tag == PRON:
                    tags.append(VERB)
                else:
                    tags.append(MOD)
            else:
                tags.append(VERB)
        else:
            tags.append(NOUN)  # captions are mostly nouns
    # "black and white cat": a colour conjunction inside a noun phrase.
    for i in range(1, len(words) - 2):
        if (
            words[i] in {"and", "&"}
            and words[i - 1] in lx.COLOURS
            and words[i + 1] in lx.COLOURS
            and tags[i + 2] in _NP_TAGS
        ):
            tags[i] = CJ
            tags[i - 1] = tags[i + 1] = ADJ
    return tags


def _emit(chunk: list[tuple[str, str]], out: list[str]) -> None:
    """Close a chunk: trim to its last nominal word and keep it if one is left."""
    while chunk and chunk[-1][1] != NOUN:
        word, tag = chunk[-1]
        if tag == ADJ and word in _ADJ_NOUNS:
            break
        chunk.pop()
    while chunk and chunk[0][1] == CJ:
        chunk.pop(0)
    if chunk:
        out.append(" ".join(word for word, _ in chunk))


def chunk_noun_phrases(text: str) -> list[str]:
    """Raw noun phrases (``adjective* noun+``, possessors split off) in order of appearance.

    >>> chunk_noun_phrases("A man in a black dress holding an umbrella.")
    ['man', 'black dress', 'umbrella']
    """
    phrases: list[str] = []
    text = _CLOSE_UP.sub("close-up", text.lower().replace("’", "'"))
    for clause in _CLAUSE_SPLIT.split(text):
        words = _WORD.findall(clause)
        if not words:
            continue
        tags = _tag(words)
        chunk: list[tuple[str, str]] = []
        for i, (word, tag) in enumerate(zip(words, tags, strict=True)):
            if tag == POSS:
                # "the man's hat": the possessor is a phrase of its own, the head starts anew.
                chunk.append((word[:-2] if word.endswith("'s") else word[:-1], NOUN))
                _emit(chunk, phrases)
                chunk = []
            elif tag in _NP_TAGS:
                # "glasses of wine" are drinking glasses, never eyewear.
                if word == "glasses" and i + 1 < len(words) and words[i + 1] == "of":
                    word = "glass"
                chunk.append((word, tag))
            else:
                _emit(chunk, phrases)
                chunk = []
        _emit(chunk, phrases)
    return phrases


class OfflineParser(NothingToLoad):
    """Rule-based noun-phrase parser; needs no model (``"offline"``, the default).

    Args:
        max_per_image: cap on phrases per caption (default ``settings.max_concepts_per_image``).
    """

    name = "offline"

    def __init__(self, *, max_per_image: int | None = None) -> None:
        self.max_per_image = max_per_image or get_settings().max_concepts_per_image

    @property
    def model_version(self) -> str:
        """``"offline-np-chunker@<version>"``: bump the version when the rules change."""
        return "offline-np-chunker@1"

    def parse(self, captions: Sequence[str]) -> list[list[str]]:
        """Cleaned, de-duplicated, groundable noun phrases per caption (same order)."""
        return [clean_concepts(chunk_noun_phrases(c), self.max_per_image) for c in captions]


# --- LLM parser ---------------------------------------------------------------------------------

LLM_SYSTEM_PROMPT = (
    "You extract visual concepts from image descriptions. Return only a JSON array of short "
    "noun phrases, one per distinct kind of visible object or stuff, each with at most its "
    'colour, material or pattern (for example "striped umbrella", "white sneaker"). '
    "No articles, no counts, no actions, no scenes, no abstract words."
)
_JSON_ARRAY = re.compile(r"\[[^\[\]]*\]", re.DOTALL)


def extract_json_list(text: str) -> list[str] | None:
    """The first JSON array of strings in ``text`` (code fences and chatter around it ignored).

    Returns ``None`` when there is no parseable array; non-string items are dropped.
    """
    for match in _JSON_ARRAY.finditer(text):
        try:
            value = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(value, list):
            return [item.strip() for item in value if isinstance(item, str) and item.strip()]
    return None


@dataclass
class _Loaded:
    model: Any
    tokenizer: Any
    device: torch.device


class LlmParser(LazyModelBackend):
    """Noun phrases from an instruction-tuned causal LM, asked for a JSON list (``"llm"``).

    Args:
        model: hub id or local directory (default ``settings.parser_model``); the tokenizer must
            have a chat template.
        device: ``auto``, ``cpu`` or ``cuda[:N]`` (default ``settings.device``).
        max_new_tokens: bound on the answer length (greedy decoding).
        batch_size: captions per ``generate`` call (left padding).
        max_per_image: cap on phrases per caption.
    """

    name = "llm"

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        max_new_tokens: int = 128,
        batch_size: int = 8,
        max_per_image: int | None = None,
    ) -> None:
        settings = get_settings()
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError("batch_size and max_new_tokens must be at least 1")
        self.source = model or settings.parser_model
        self.device_setting = device or settings.device
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.max_per_image = max_per_image or settings.max_concepts_per_image
        self._loaded: _Loaded | None = None

    def load(self) -> None:
        """Load the model and tokenizer (once per process; idempotent)."""
        if self._loaded is not None:
            return
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from annotator import modeling

        device = modeling.resolve_device(self.device_setting)
        tokenizer = modeling.load_pretrained(
            AutoTokenizer.from_pretrained,
            self.source,
            what="the parser tokenizer",
            needs_weights=False,
        )
        model = modeling.load_pretrained(
            AutoModelForCausalLM.from_pretrained,
            self.source,
            what="the parser language model",
            device=device,
            dtype=modeling.default_dtype(device),
        )
        self._loaded = _Loaded(model=model, tokenizer=tokenizer, device=device)

    def release(self) -> None:
        self._loaded = None

    def prompt(self, caption: str) -> list[dict[str, str]]:
        """The chat messages for one caption."""
        return [
            {"role": "system", "content": LLM_SYSTEM_PROMPT},
            {"role": "user", "content": f"Description: {caption}\nNoun phrases as a JSON array:"},
        ]

    def generate(self, captions: Sequence[str]) -> list[str]:
        """The model's raw answers (greedy), one per caption."""
        import torch

        self.load()
        assert self._loaded is not None
        model, tokenizer = self._loaded.model, self._loaded.tokenizer
        answers: list[str] = []
        for start in range(0, len(captions), self.batch_size):
            batch = captions[start : start + self.batch_size]
            texts = [
                tokenizer.apply_chat_template(
                    self.prompt(c), tokenize=False, add_generation_prompt=True
                )
                for c in batch
            ]
            encoded = _left_padded(tokenizer, texts).to(self._loaded.device)
            with torch.inference_mode():
                output = model.generate(
                    **encoded,
                    do_sample=False,
                    max_new_tokens=self.max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new_tokens = output[:, encoded["input_ids"].shape[1] :]
            answers.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        return answers

    def parse(self, captions: Sequence[str]) -> list[list[str]]:
        """Cleaned noun phrases per caption; an answer without a JSON list gives ``[]`` (logged)."""
        results: list[list[str]] = []
        for caption, answer in zip(captions, self.generate(captions), strict=True):
            phrases = extract_json_list(answer)
            if phrases is None:
                logger.warning(
                    "parser model %s gave no JSON list for caption %.60r (answer %.80r)",
                    self.source,
                    caption,
                    answer,
                )
                phrases = []
            results.append(clean_concepts(phrases, self.max_per_image))
        return results


def _left_padded(tokenizer: Any, texts: list[str]) -> Any:
    """Tokenise a batch with left padding (generation continues from the right edge).

    The chat template already holds the special tokens, so none are added again.
    """
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer(
        texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
    )
