"""The stages of a mining job, one plain function each: ``stage(session, job_id, image_id)``.

::

    ingest -> caption -> parse -> propose -> verify -> route

* **ingest** reads the bytes (local file or URL, bounded), hashes them, refuses bad images
  (0 bytes, unknown format, corrupt, over ``ANNOTATOR_MAX_IMAGE_PIXELS``), decodes the upright
  image (EXIF orientation; grayscale, CMYK, 16-bit, alpha and palette to RGB) for its size, and
  keeps downloaded bytes under the media root. A second image with the same bytes in the dataset
  is refused as a duplicate.
* **caption** asks the captioner (skipped for images with alt-text unless
  ``caption_when_alt_text``; absent when the job has no captioner).
* **parse** turns captions and alt-text into cleaned noun phrases and pending pairs.
* **propose** runs the proposer once per image over all its phrases, plus hard-negative
  candidates from the dataset's vocabulary; only adversarial candidates (masks overlapping a
  present concept's masks) become pairs (origin ``hard_negative``).
* **verify** asks MV per proposal and EV per pair.
* **route** turns the scores into positives (with automatic annotations), negatives and review
  tasks, each with its reason (:mod:`annotator.routing`).

Every stage runs inside the caller's transaction and only flushes; the edge commits. It returns
early when its item is finished (``job_items`` unique (job, image, stage)), and its writes are
INSERT ... ON CONFLICT DO NOTHING on natural keys, so running it twice adds nothing. A bad image is
recorded on its item (status ``failed`` with the reason) and its later stages are ``skipped``;
the job goes on.
"""

from __future__ import annotations

import logging
import traceback
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from threading import Lock
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

import numpy as np
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from annotator import masks as mask_ops
from annotator import media
from annotator.backends import Captioner, ConceptParser, MaskQuery, PairQuery, PhraseProposals
from annotator.concepts import clean_concepts, head_index
from annotator.db import mining
from annotator.db import repositories as repo
from annotator.db.models import (
    AnnotationSource,
    Image,
    ImageStatus,
    JobItemStatus,
    JobStatus,
    PairOrigin,
    PairState,
    VerificationKind,
)
from annotator.errors import ConfigError, InvalidInputError, ModelLoadError, NotFoundError
from annotator.images import load_image
from annotator.miners.hard_negatives import propose_hard_negatives, select_adversarial
from annotator.pipeline.backends import Backends, get_backends
from annotator.pipeline.config import MiningConfig
from annotator.routing import (
    EvQuestion,
    MaskScore,
    PairOutcome,
    PairScores,
    Thresholds,
    ev_question,
    route_pair,
)
from annotator.verifiers.calibrated import FeaturedMaskQuery, proposal_features_all
from annotator.verifiers.scores import FeaturedPairQuery

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "STAGES",
    "BadItemError",
    "caption",
    "clear_caches",
    "ingest",
    "job_config",
    "parse",
    "propose",
    "route",
    "run_stage",
    "run_stage_batch",
    "verify",
]

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("ingest", "caption", "parse", "propose", "verify", "route")


class BadItemError(InvalidInputError):
    """This image cannot go through this stage (and never will): record it, go on."""


# An image as a stage sees it (see run_stage_batch).
StageImage = Image | mining.ImageRow


@dataclass
class _Item:
    session: Session
    job_id: int
    dataset_id: int
    image: StageImage
    config: MiningConfig
    backends: Backends

    @property
    def thresholds(self) -> Thresholds:
        return self.config.routing.thresholds()


# ------------------------------------------------------------------------------ per-process caches

_configs: dict[int, tuple[str, MiningConfig]] = {}
_images: OrderedDict[tuple[str, str | None], PILImage] = OrderedDict()
_images_lock = Lock()
# Caption, propose and verify of a batch of images run back to back on one worker: keep a few
# batches' worth of decoded images (at most this many, and this many pixels: ~256 MB of RGB).
_IMAGE_CACHE_SIZE = 32
_IMAGE_CACHE_PIXELS = 85_000_000
_vocabularies: dict[tuple[str, int], dict[str, Counter[str]]] = {}


def clear_caches() -> None:
    """Forget the per-process caches (job configs, decoded images, vocabularies)."""
    _configs.clear()
    with _images_lock:
        _images.clear()
    _vocabularies.clear()


def job_config(raw: dict[str, object], job_id: int) -> MiningConfig:
    """The validated config of a job (parsed once per process and job)."""
    key = repr(sorted(raw.items()))
    cached = _configs.get(job_id)
    if cached is None or cached[0] != key:
        cached = (key, MiningConfig.model_validate(raw))
        _configs[job_id] = cached
    return cached[1]


def _load(image: StageImage) -> PILImage:
    key = (image.uri, image.sha256)
    with _images_lock:
        if key in _images:
            _images.move_to_end(key)
            return _images[key]
    try:
        loaded = load_image(media.local_path(image.uri))
    except InvalidInputError as exc:
        raise BadItemError(str(exc)) from exc
    _remember(key, loaded)
    return loaded


def _remember(key: tuple[str, str | None], image: PILImage) -> None:
    with _images_lock:
        _images[key] = image
        _images.move_to_end(key)
        pixels = sum(i.width * i.height for i in _images.values())
        while len(_images) > 1 and (
            len(_images) > _IMAGE_CACHE_SIZE or pixels > _IMAGE_CACHE_PIXELS
        ):
            _, dropped = _images.popitem(last=False)
            pixels -= dropped.width * dropped.height


def _head(phrase: str) -> str:
    tokens = phrase.split()
    return tokens[head_index(tokens)]


def _vocabulary(item: _Item) -> dict[str, Counter[str]]:
    """The dataset's concept vocabulary by head noun, read once per job and process (hard
    negatives are proposed after every image of the job was parsed, so it no longer changes)."""
    key = (str(item.session.get_bind().engine.url), item.job_id)
    vocab = _vocabularies.get(key)
    if vocab is None:
        vocab = {}
        for phrase, count in mining.concept_vocabulary(item.session, item.dataset_id).items():
            vocab.setdefault(_head(phrase), Counter())[phrase] = count
        if len(_vocabularies) > 16:
            _vocabularies.clear()
        _vocabularies[key] = vocab
    return vocab


# What a stage made of one image: its item's status, or why it failed (BadItemError: a bad
# image, recorded as failed at once; any other exception: a failed attempt, tried again while
# the job's max_attempts allow).
ItemResult = JobItemStatus | Exception
# Errors no image is to blame for: they end the whole batch (the database is gone or the
# transaction unusable, a model cannot load, the job or an image is missing).
_PROPAGATE: tuple[type[BaseException], ...] = (
    SQLAlchemyError, ModelLoadError, ConfigError, NotFoundError, ImportError,
)  # fmt: skip


_T = TypeVar("_T")
_P = ParamSpec("_P")
# What _attempt returns for an image that failed (its reason is in the results).
_FAILED: Any = object()


def _attempt(
    results: dict[int, ItemResult],
    image_id: int,
    single: bool,
    work: Callable[_P, _T],
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> _T:
    """Run ``work(*args, **kwargs)``, one image's part of a batch. A bad image
    (``BadItemError``) is recorded in ``results``; any other failure too (a failed attempt:
    nothing of this image is written), except in a batch of one, where it propagates as is.
    Errors no image is to blame for (``_PROPAGATE``) always propagate. Returns ``_FAILED``
    when the image failed."""
    try:
        return work(*args, **kwargs)
    except BadItemError as exc:
        results[image_id] = exc
    except _PROPAGATE:
        raise
    except Exception as exc:
        if single:
            raise
        results[image_id] = exc
    return cast("_T", _FAILED)


def _single(batch: Callable[[list[_Item]], dict[int, ItemResult]], item: _Item) -> JobItemStatus:
    result = batch([item])[item.image.id]
    if isinstance(result, Exception):
        raise result
    return result


# ---------------------------------------------------------------------------------------- ingest


def _ingest_batch(items: list[_Item]) -> dict[int, ItemResult]:
    """Ingest several images of one dataset: each is read, checked and decoded in turn; the
    duplicate check is one query for the whole batch (and, within the batch, the first image
    with given bytes keeps them, as one by one), and the images' rows are written in one flush.

    Only a bad image is pinned on its item (``BadItemError``); any other error propagates."""
    session = items[0].session
    results: dict[int, ItemResult] = {}
    read: list[tuple[_Item, bytes, media.ImageInfo, PILImage, str]] = []
    for item in items:
        image = item.image
        assert isinstance(image, Image)  # ingest's images are ORM objects (run_stage_batch)
        if (
            image.status == ImageStatus.READY
            and image.sha256
            and image.width
            and not media.is_url(image.uri)
        ):
            results[image.id] = JobItemStatus.DONE  # ingested by an earlier job
            continue
        try:
            data = media.read_source(image.uri)
            info = media.inspect_image(data, image.file_name)
            decoded = load_image(data)
        except InvalidInputError as exc:
            results[image.id] = BadItemError(str(exc))
            continue
        read.append((item, data, info, decoded, media.sha256_hex(data)))
    # A job's images are of one dataset.
    owners = mining.images_with_sha256(session, items[0].dataset_id, [d for *_, d in read])
    for item, data, info, decoded, digest in read:
        image = item.image
        assert isinstance(image, Image)
        duplicate = next((i for i in owners.get(digest, ()) if i != image.id), None)
        if duplicate is not None:
            results[image.id] = BadItemError(
                f"{image.file_name}: same bytes (sha256 {digest[:12]}) as image {duplicate}"
            )
            continue
        # Later images of this batch with the same bytes are duplicates of this one.
        owners.setdefault(digest, []).append(image.id)
        if media.is_url(image.uri):
            image.uri = str(media.store_bytes(data, image.dataset_id, digest, info.extension))
        image.sha256 = digest
        image.width, image.height = decoded.size  # upright (EXIF orientation applied)
        image.status = ImageStatus.READY
        image.error = None
        _remember((image.uri, digest), decoded)
        results[image.id] = JobItemStatus.DONE
    session.flush()
    return results


def _ingest(item: _Item) -> JobItemStatus:
    return _single(_ingest_batch, item)


# --------------------------------------------------------------------------------------- caption


def _caption_batch(items: list[_Item]) -> dict[int, ItemResult]:
    """Caption several images of one job: existing captions read in one query, the new ones
    written in one insert. The captioner runs per image."""
    first = items[0]
    results: dict[int, ItemResult] = {}
    if first.config.captioner is None:
        return {item.image.id: JobItemStatus.SKIPPED for item in items}
    wanted: list[_Item] = []
    for item in items:
        if item.image.alt_text and not item.config.caption_when_alt_text:
            results[item.image.id] = JobItemStatus.SKIPPED
        else:
            wanted.append(item)
    version = first.backends.model_version("captioner")
    existing = mining.captions_many(first.session, [item.image.id for item in wanted], version)
    captioner = first.backends.captioner
    assert captioner is not None
    rows: list[dict[str, object]] = []
    for item in wanted:
        image = item.image
        results[image.id] = JobItemStatus.DONE
        if existing[image.id]:
            continue
        text = _attempt(results, image.id, len(items) == 1, _caption_image, captioner, image)
        if text is _FAILED:
            continue
        rows.append({"image_id": image.id, "text": text, "model_version": version})
    mining.add_captions(first.session, rows)
    return results


def _caption(item: _Item) -> JobItemStatus:
    return _single(_caption_batch, item)


def _caption_image(captioner: Captioner, image: StageImage) -> str:
    return captioner.caption([_load(image)])[0]


# ----------------------------------------------------------------------------------------- parse


def _image_concepts(
    parser: ConceptParser, sources: list[tuple[str, PairOrigin]], max_concepts: int
) -> tuple[list[str], dict[str, PairOrigin]]:
    """An image's cleaned concepts (at most ``max_concepts``) and where each came from."""
    origins: dict[str, PairOrigin] = {}
    if sources:
        parsed = parser.parse([text for text, _ in sources])
        for phrases, (_, origin) in zip(parsed, sources, strict=True):
            for phrase in clean_concepts(phrases):
                origins.setdefault(phrase, origin)  # alt-text (a person wrote it) wins
    return clean_concepts(origins, max_concepts), origins


def _parse_batch(items: list[_Item]) -> dict[int, ItemResult]:
    """Parse several images of one job: captions read in one query; concepts, pairs and the
    adoption of pending pairs written in one statement each. The parser runs per image."""
    first = items[0]
    session, job_id, config = first.session, first.job_id, first.config
    captions: dict[int, list[str]] = {}
    if config.captioner is not None:
        version = first.backends.model_version("captioner")
        captions = mining.captions_many(session, [item.image.id for item in items], version)
    results: dict[int, ItemResult] = {}
    found: list[tuple[StageImage, list[str], dict[str, PairOrigin]]] = []
    for item in items:
        image = item.image
        sources: list[tuple[str, PairOrigin]] = []
        if image.alt_text and image.alt_text.strip():
            sources.append((image.alt_text, PairOrigin.ALT_TEXT))
        sources += [(c, PairOrigin.CAPTION) for c in captions.get(image.id, [])]
        done = _attempt(
            results, image.id, len(items) == 1,
            _image_concepts, item.backends.parser, sources, config.max_concepts,
        )  # fmt: skip
        if done is _FAILED:
            continue
        kept, origins = done
        found.append((image, kept, origins))
        results[image.id] = JobItemStatus.DONE
    ids = repo.ensure_concepts(session, [p for _, kept, _ in found for p in kept])
    mining.add_pairs_many(
        session,
        [
            {
                "dataset_id": image.dataset_id, "image_id": image.id, "concept_id": ids[p],
                "origin": origins[p], "state": PairState.PENDING, "job_id": job_id,
            }
            for image, kept, origins in found
            for p in kept
        ],
    )  # fmt: skip
    mining.adopt_pending_pairs_many(session, [image.id for image, _, _ in found], job_id)
    return results


def _parse(item: _Item) -> JobItemStatus:
    return _single(_parse_batch, item)


# --------------------------------------------------------------------------------------- propose


def _proposal_rows(
    pair_id: int, job_id: int, found: PhraseProposals, version: str
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    areas = mask_ops.areas(found.masks)
    boxes = mask_ops.bboxes(found.masks)
    for k, rle in enumerate(found.masks):
        area = int(areas[k])
        if area == 0:
            continue  # an empty mask is no instance
        x, y, w, h = (float(v) for v in boxes[k])
        rows.append(
            {
                "pair_id": pair_id, "job_id": job_id, "rle_counts": rle["counts"],
                "bbox_x": x, "bbox_y": y, "bbox_w": w, "bbox_h": h, "area": area,
                "score": float(found.scores[k]), "presence": float(found.presence),
                "model_version": version, "rank": len(rows),
            }
        )  # fmt: skip
    return rows


@dataclass
class _Proposed:
    """What the proposer found for one image, before anything is written."""

    pending: list[mining.PairRow]
    by_phrase: dict[str, PhraseProposals]
    adversarial: list[str]  # hard-negative candidates kept (become pairs)


def _propose_image(item: _Item, all_pairs: list[mining.PairRow]) -> _Proposed | None:
    """The proposer's work for one image (no writes); ``None`` when there is nothing to do."""
    session, image, config = item.session, item.image, item.config
    pending = [p for p in all_pairs if p.state == PairState.PENDING]
    present = [p.phrase for p in all_pairs if p.origin != PairOrigin.HARD_NEGATIVE]
    candidates: list[str] = []
    if config.hard_negatives and present:
        vocab = _vocabulary(item)
        nearby: Counter[str] = Counter()
        for head in {_head(p) for p in present}:
            nearby.update(vocab.get(head, {}))
        candidates = [
            n.phrase
            for n in propose_hard_negatives(
                present,
                nearby,
                exclude=mining.image_phrases(session, image.id),
                max_per_concept=config.hard_negatives_per_concept,
            )
        ]
    if not pending and not candidates:
        return None
    phrases = [p.phrase for p in pending] + candidates
    found = item.backends.proposer.propose(_load(image), phrases)
    by_phrase = {f.phrase: f for f in found}
    adversarial: list[str] = []
    if candidates:
        positive_masks = [m for p in pending if p.origin != PairOrigin.HARD_NEGATIVE
                          for m in by_phrase[p.phrase].masks]  # fmt: skip
        adversarial = [
            a.phrase
            for a in select_adversarial(
                [by_phrase[c] for c in candidates], positive_masks, config.hard_negative_min_iou
            )
        ]
    return _Proposed(pending, by_phrase, adversarial)


def _propose_batch(items: list[_Item]) -> dict[int, ItemResult]:
    """Propose for several images of one job: their pairs read in one query, their proposals
    and pair states written in one statement each. The proposer runs per image."""
    first = items[0]
    session, job_id = first.session, first.job_id
    version = first.backends.model_version("proposer")
    pairs_of = mining.job_pairs_many(session, [item.image.id for item in items], job_id)
    results: dict[int, ItemResult] = {}
    rows: list[dict[str, object]] = []
    proposed: list[dict[str, object]] = []
    for item in items:
        image = item.image
        work = _attempt(
            results, image.id, len(items) == 1, _propose_image, item, pairs_of[image.id]
        )
        if work is _FAILED:
            continue
        results[image.id] = JobItemStatus.DONE
        if work is None:
            continue
        for pair in work.pending:
            rows += _proposal_rows(pair.id, job_id, work.by_phrase[pair.phrase], version)
        if work.adversarial:
            kept = work.adversarial
            ids = repo.ensure_concepts(session, kept)
            mining.add_pairs(
                session, image.dataset_id, image.id, job_id,
                [(ids[p], PairOrigin.HARD_NEGATIVE) for p in kept], state=PairState.PROPOSED,
            )  # fmt: skip
            new_pairs = {
                p.phrase: p.id
                for p in mining.job_pairs(session, image.id, job_id, [PairState.PROPOSED])
                if p.origin == PairOrigin.HARD_NEGATIVE
            }
            for phrase in kept:
                if phrase in new_pairs:
                    found = work.by_phrase[phrase]
                    rows += _proposal_rows(new_pairs[phrase], job_id, found, version)
        proposed += [
            {"id": p.id, "state": PairState.PROPOSED, "state_reason": None} for p in work.pending
        ]
    mining.add_proposals(session, rows)
    mining.set_pair_states(session, proposed)
    return results


def _propose(item: _Item) -> JobItemStatus:
    return _single(_propose_batch, item)


# ---------------------------------------------------------------------------------------- verify


def _rle(counts: str, image: StageImage) -> mask_ops.RLE:
    assert image.height is not None and image.width is not None
    return {"size": [image.height, image.width], "counts": counts}


def _verify_batch(items: list[_Item]) -> dict[int, ItemResult]:
    """Verify several images of one job: their pairs and proposals read in one query each,
    their verifications written in one insert. The verifier is asked per image, so an
    image's answers do not depend on which images share its batch."""
    first = items[0]
    session, job_id, backends = first.session, first.job_id, first.backends
    pairs_of = mining.job_pairs_many(
        session, [item.image.id for item in items], job_id, [PairState.PROPOSED]
    )
    proposals = mining.proposals_of(
        session,
        [p.id for pairs in pairs_of.values() for p in pairs],
        backends.model_version("proposer"),
    )
    results: dict[int, ItemResult] = {}
    rows_out: list[dict[str, object]] = []
    verified: list[dict[str, object]] = []
    for item in items:
        image = item.image
        pairs = pairs_of[image.id]
        if not pairs:
            results[image.id] = JobItemStatus.DONE
            continue
        # A failed attempt (CUDA out of memory, a bug): this image's rows are not written, the
        # others' are.
        done = _attempt(results, image.id, len(items) == 1, _verify_image, item, pairs, proposals)
        if done is _FAILED:
            continue
        image_rows, image_verified = done
        rows_out += image_rows
        verified += image_verified
        results[image.id] = JobItemStatus.DONE
    mining.add_verifications(session, rows_out)
    mining.set_pair_states(session, verified)
    return results


def _verify_image(
    item: _Item, pairs: list[mining.PairRow], proposals: dict[int, list[mining.ProposalRow]]
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """One image's verifications and verified pair states (not written yet)."""
    image, job_id, backends = item.image, item.job_id, item.backends
    verifier = backends.verifier
    mv_version = backends.model_version("verifier")
    ev_version = backends.model_version("ev")
    thresholds = item.thresholds
    score_floor = float(item.config.proposer.options.get("score_threshold", 0.5))
    picture = _load(image)
    # Proposal features (an IoU matrix per pair) only for verifiers that read them.
    featured = getattr(verifier, "reads_features", True)
    rows_out: list[dict[str, object]] = []
    mv_queries: list[MaskQuery] = []
    mv_targets: list[tuple[int, int]] = []  # (pair id, proposal id)
    for pair in pairs:
        rows = proposals[pair.id]
        if not rows:
            continue
        found = PhraseProposals(
            phrase=pair.phrase,
            masks=[_rle(r.rle_counts, image) for r in rows],
            boxes=np.asarray([r.bbox for r in rows], dtype=np.float32).reshape(-1, 4),
            scores=np.asarray([r.score for r in rows], dtype=np.float32),
            presence=float(rows[0].presence if rows[0].presence is not None else 1.0),
        )
        if featured:  # one IoU matrix per pair, not one per proposal
            for rle, features in zip(found.masks, proposal_features_all(found), strict=True):
                mv_queries.append(FeaturedMaskQuery(picture, pair.phrase, rle, features=features))
        else:
            mv_queries += [MaskQuery(picture, pair.phrase, rle) for rle in found.masks]
        mv_targets += [(pair.id, row.id) for row in rows]
    verdicts = verifier.verify_masks(mv_queries) if mv_queries else []
    mv_by_proposal: dict[int, float] = {}
    for (pair_id, proposal_id), verdict in zip(mv_targets, verdicts, strict=True):
        mv_by_proposal[proposal_id] = verdict.p_accept
        rows_out.append(
            {
                "pair_id": pair_id, "proposal_id": proposal_id, "kind": VerificationKind.MV,
                "label": verdict.label, "p_accept": verdict.p_accept,
                "model_version": mv_version, "job_id": job_id,
            }
        )  # fmt: skip
    ev_queries: list[PairQuery] = []
    for pair in pairs:
        rows = proposals[pair.id]
        question = ev_question(
            [mv_by_proposal[r.id] for r in rows],
            thresholds,
            hard_negative=pair.origin == PairOrigin.HARD_NEGATIVE,
        )
        shown_rows = (
            [r for r in rows if mv_by_proposal[r.id] >= thresholds.accept_above]
            if question == EvQuestion.EXHAUSTIVITY
            else []
        )
        shown_ids = {r.id for r in shown_rows}
        ev_queries.append(
            FeaturedPairQuery(
                image=picture,
                phrase=pair.phrase,
                masks=[_rle(r.rle_counts, image) for r in shown_rows],
                presence=rows[0].presence if rows else None,
                unshown_scores=[r.score for r in rows if r.id not in shown_ids],
                score_floor=score_floor,
            )
        )
    for pair, verdict in zip(pairs, verifier.verify_pairs(ev_queries), strict=True):
        rows_out.append(
            {
                "pair_id": pair.id, "proposal_id": None, "kind": VerificationKind.EV,
                "label": verdict.label, "p_accept": verdict.p_accept,
                "model_version": ev_version, "job_id": job_id,
            }
        )  # fmt: skip
    return rows_out, [{"id": p.id, "state": PairState.VERIFIED} for p in pairs]


def _verify(item: _Item) -> JobItemStatus:
    return _single(_verify_batch, item)


# ----------------------------------------------------------------------------------------- route


def _route_batch(items: list[_Item]) -> dict[int, ItemResult]:
    """Route several images of one job: pairs, proposals and verifications read in one query
    each, annotations, review tasks and pair states written in one statement each."""
    first = items[0]
    session, job_id, backends = first.session, first.job_id, first.backends
    pairs_of = mining.job_pairs_many(
        session, [item.image.id for item in items], job_id, [PairState.VERIFIED]
    )
    pair_ids = [p.id for pairs in pairs_of.values() for p in pairs]
    proposals = mining.proposals_of(session, pair_ids, backends.model_version("proposer"))
    mv, ev = mining.verifications_of(
        session, pair_ids, backends.model_version("verifier"), backends.model_version("ev")
    )
    pair_rows: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    to_review: list[int] = []
    results: dict[int, ItemResult] = {}
    for item in items:
        decided = _attempt(
            results, item.image.id, len(items) == 1,
            _route_image, item, pairs_of[item.image.id], proposals, mv, ev,
        )  # fmt: skip
        if decided is _FAILED:
            continue
        for pair_row, review, accepted in decided:
            pair_rows.append(pair_row)
            to_review += review
            annotations += accepted
        results[item.image.id] = JobItemStatus.DONE
    mining.add_auto_annotations(session, annotations)
    mining.add_review_tasks(session, to_review)
    mining.set_pair_states(session, pair_rows)
    return results


def _route_image(
    item: _Item,
    pairs: list[mining.PairRow],
    proposals: dict[int, list[mining.ProposalRow]],
    mv: dict[int, tuple[str, float]],
    ev: dict[int, tuple[str, float]],
) -> list[tuple[dict[str, object], list[int], list[dict[str, object]]]]:
    return [_route_pair(item, pair, proposals[pair.id], mv, ev) for pair in pairs]


def _route_pair(
    item: _Item,
    pair: mining.PairRow,
    rows: list[mining.ProposalRow],
    mv: dict[int, tuple[str, float]],
    ev: dict[int, tuple[str, float]],
) -> tuple[dict[str, object], list[int], list[dict[str, object]]]:
    """One pair's routing: its new state, ``[its id]`` when it goes to review, its automatic
    annotations (nothing written yet)."""
    ev_label, ev_p = ev.get(pair.id, ("", None))
    scores = PairScores(
        pair_id=pair.id,
        masks=[
            MaskScore(
                r.id,
                mv[r.id][1] if r.id in mv else float("nan"),
                mv[r.id][0] if r.id in mv else "",
            )
            for r in rows
        ],
        ev_p_accept=ev_p,
        ev_label=ev_label,
        hard_negative=pair.origin == PairOrigin.HARD_NEGATIVE,
    )
    decision = route_pair(scores, item.thresholds)
    state = {
        "id": pair.id,
        "state": PairState(decision.outcome.value),
        "is_exhaustive": decision.is_exhaustive,
        "state_reason": decision.reason,
    }
    review = [pair.id] if decision.outcome == PairOutcome.REVIEW else []
    by_id = {r.id: r for r in rows}
    annotations: list[dict[str, object]] = []
    for proposal_id in decision.accepted:
        r = by_id[proposal_id]
        x, y, w, h = r.bbox
        annotations.append(
            {
                "dataset_id": item.image.dataset_id, "pair_id": pair.id,
                "rle_counts": r.rle_counts, "bbox_x": x, "bbox_y": y, "bbox_w": w,
                "bbox_h": h, "area": r.area, "iscrowd": False,
                "source": AnnotationSource.AUTO, "score": mv[proposal_id][1],
                "proposal_id": proposal_id, "model_version": r.model_version,
            }
        )  # fmt: skip
    return state, review, annotations


def _route(item: _Item) -> JobItemStatus:
    return _single(_route_batch, item)


# ------------------------------------------------------------------------------------ run_stage

_STAGE_FUNCS: dict[str, Callable[[_Item], JobItemStatus]] = {
    "ingest": _ingest,
    "caption": _caption,
    "parse": _parse,
    "propose": _propose,
    "verify": _verify,
    "route": _route,
}
_ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)


# Stages that read and write a whole batch of images at once (the others run image by image
# inside the batch's transaction).
_BATCH_FUNCS: dict[str, Callable[[list[_Item]], dict[int, ItemResult]]] = {
    "ingest": _ingest_batch,
    "caption": _caption_batch,
    "parse": _parse_batch,
    "propose": _propose_batch,
    "verify": _verify_batch,
    "route": _route_batch,
}


def run_stage(session: Session, job_id: int, image_id: int, stage: str) -> None:
    """Run ``stage`` of ``image_id`` in ``job_id`` inside the caller's transaction.

    Returns early when the item is already finished (done, failed, skipped), when the job is
    not queued/running (cancelling, cancelled, done, failed), or when the job does not run this
    stage. A bad image is recorded on the item (status failed + error, later stages of the image
    skipped) and does not raise. Any other exception propagates: the edge rolls back and calls
    :func:`annotator.services.jobs.record_failure` in a new transaction.

    Raises:
        InvalidInputError: ``stage`` is not one of :data:`STAGES`.
        NotFoundError: no such job, or no such image.
    """
    run_stage_batch(session, job_id, [image_id], stage)


def run_stage_batch(
    session: Session, job_id: int, image_ids: Sequence[int], stage: str
) -> list[int]:
    """:func:`run_stage` for several images of one job, in the caller's one transaction.

    Per image the outcome is that of :func:`run_stage` (finished items are left alone, a bad
    image is recorded and the others go on), and so are the rows: a batch writes exactly what
    its images run one by one would. What is shared is the per-message cost: the job is read
    once, the items are claimed and settled in one statement each, and every stage but ingest
    reads and writes all its images' rows in one statement each (the models still run per
    image, so no image's results depend on its batch).

    Returns the images whose attempt failed in a way the stage could pin on one image (the
    captioner, parser, proposer or verifier raising for it; the other images' rows are
    written): their items are pending again (or failed, when the job's ``max_attempts`` are
    used up), for the caller to run again later. Any other error propagates and the caller's
    transaction rolls back as a whole (the edge then runs the images one by one to find the
    one at fault).

    Raises:
        InvalidInputError: ``stage`` is not one of :data:`STAGES`.
        NotFoundError: no such job, or one of the images does not exist.
    """
    func = _STAGE_FUNCS.get(stage)
    if func is None:
        raise InvalidInputError(f"unknown stage {stage!r}: use one of {', '.join(STAGES)}")
    job = mining.job_row(session, job_id)
    if job.status not in _ACTIVE or job.dataset_id is None:
        return []
    config = job_config(job.config, job_id)
    stages = config.stages
    if stage not in stages:
        return []
    claimed = sorted(mining.claim_items(session, job_id, list(dict.fromkeys(image_ids)), stage))
    if not claimed:
        return []
    # Ingest fills in its images (ORM objects, written by the flush below); the later stages
    # read theirs as plain rows (loading 8 images as objects costs ~0.3 ms of CPU more).
    ingested: dict[int, Image] = {}
    images: Mapping[int, StageImage]
    if stage == "ingest":
        images = ingested = mining.get_images(session, claimed)
    else:
        images = mining.image_rows(session, claimed)
    missing = [i for i in claimed if i not in images]
    if missing:
        raise NotFoundError(f"no image {missing[0]}")
    backends = get_backends(config)
    items = [_Item(session, job_id, job.dataset_id, images[i], config, backends) for i in claimed]
    batch = _BATCH_FUNCS.get(stage)
    results: dict[int, ItemResult]
    if batch is not None:
        results = batch(items)
    else:
        results = {}
        for item in items:
            try:
                # Stages raise BadItemError before their first write: nothing to roll back.
                results[item.image.id] = func(item)
            except BadItemError as exc:
                results[item.image.id] = exc
    later = stages[stages.index(stage) + 1 :]
    by_status: dict[JobItemStatus, list[int]] = {}
    retry: list[int] = []
    for image_id, result in results.items():
        if isinstance(result, BadItemError):
            reason = str(result)
            if stage == "ingest":
                ingested[image_id].status = ImageStatus.FAILED
                ingested[image_id].error = reason
            mining.set_item(session, job_id, image_id, stage, JobItemStatus.FAILED, reason)
            mining.skip_later(session, job_id, image_id, later, f"skipped: {stage} failed")
        elif isinstance(result, Exception):
            log.warning("job %s: %s of image %s failed: %s", job_id, stage, image_id, result)
            error = "".join(traceback.format_exception_only(result)).strip()[:2000]
            status = mining.fail_claimed_item(
                session, job_id, image_id, stage, error, max_attempts=config.max_attempts
            )
            if status == JobItemStatus.FAILED:
                mining.skip_later(session, job_id, image_id, later, f"skipped: {stage} failed")
            else:
                retry.append(image_id)
        else:
            by_status.setdefault(result, []).append(image_id)
    for status, ids in by_status.items():
        mining.set_items(session, job_id, ids, stage, status)
    session.flush()
    return retry


def _stage(name: str) -> Callable[[Session, int, int], None]:
    def run(session: Session, job_id: int, image_id: int) -> None:
        run_stage(session, job_id, image_id, name)

    run.__name__ = run.__qualname__ = name
    run.__doc__ = f"The {name} stage of ``image_id`` in ``job_id`` (see :func:`run_stage`)."
    return run


ingest = _stage("ingest")
caption = _stage("caption")
parse = _stage("parse")
propose = _stage("propose")
verify = _stage("verify")
route = _stage("route")
