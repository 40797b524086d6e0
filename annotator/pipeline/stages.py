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

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from threading import Lock
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy.orm import Session

from annotator import masks as mask_ops
from annotator import media
from annotator.backends import PairQuery, PhraseProposals
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
from annotator.errors import InvalidInputError
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
from annotator.verifiers.calibrated import FeaturedMaskQuery, proposal_features

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
    "verify",
]

STAGES: tuple[str, ...] = ("ingest", "caption", "parse", "propose", "verify", "route")


class BadItemError(InvalidInputError):
    """This image cannot go through this stage (and never will): record it, go on."""


@dataclass
class _Item:
    session: Session
    job_id: int
    dataset_id: int
    image: Image
    config: MiningConfig
    backends: Backends

    @property
    def thresholds(self) -> Thresholds:
        r = self.config.routing
        return Thresholds(
            accept_above=r.accept_above,
            reject_below=r.reject_below,
            ev_accept_above=r.ev_accept_above,
            ev_reject_below=r.ev_reject_below,
            review_non_exhaustive=r.review_non_exhaustive,
        )


# ------------------------------------------------------------------------------ per-process caches

_configs: dict[int, tuple[str, MiningConfig]] = {}
_images: OrderedDict[tuple[str, str | None], PILImage] = OrderedDict()
_images_lock = Lock()
_IMAGE_CACHE_SIZE = 4  # caption, propose and verify of one image often run back to back
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


def _load(image: Image) -> PILImage:
    key = (image.uri, image.sha256)
    with _images_lock:
        if key in _images:
            _images.move_to_end(key)
            return _images[key]
    try:
        loaded = load_image(media.local_path(image.uri))
    except InvalidInputError as exc:
        raise BadItemError(str(exc)) from exc
    with _images_lock:
        _images[key] = loaded
        while len(_images) > _IMAGE_CACHE_SIZE:
            _images.popitem(last=False)
    return loaded


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


# ---------------------------------------------------------------------------------------- ingest


def _ingest(item: _Item) -> JobItemStatus:
    image = item.image
    if (
        image.status == ImageStatus.READY
        and image.sha256
        and image.width
        and not media.is_url(image.uri)
    ):
        return JobItemStatus.DONE  # ingested by an earlier job
    name = image.file_name
    try:
        data = media.read_source(image.uri)
        info = media.inspect_image(data, name)
        decoded = load_image(data)
    except InvalidInputError as exc:
        raise BadItemError(str(exc)) from exc
    digest = media.sha256_hex(data)
    duplicate = mining.image_with_sha256(item.session, image.dataset_id, digest, image.id)
    if duplicate is not None:
        raise BadItemError(f"{name}: same bytes (sha256 {digest[:12]}) as image {duplicate}")
    if media.is_url(image.uri):
        image.uri = str(media.store_bytes(data, image.dataset_id, digest, info.extension))
    image.sha256 = digest
    image.width, image.height = decoded.size  # upright (EXIF orientation applied)
    image.status = ImageStatus.READY
    image.error = None
    with _images_lock:
        _images[(image.uri, digest)] = decoded
        while len(_images) > _IMAGE_CACHE_SIZE:
            _images.popitem(last=False)
    item.session.flush()
    return JobItemStatus.DONE


# --------------------------------------------------------------------------------------- caption


def _caption(item: _Item) -> JobItemStatus:
    captioner_spec = item.config.captioner
    if captioner_spec is None:
        return JobItemStatus.SKIPPED
    if item.image.alt_text and not item.config.caption_when_alt_text:
        return JobItemStatus.SKIPPED
    version = item.backends.model_version("captioner")
    if mining.captions_of(item.session, item.image.id, version):
        return JobItemStatus.DONE
    captioner = item.backends.captioner
    assert captioner is not None
    text = captioner.caption([_load(item.image)])[0]
    mining.add_caption(item.session, item.image.id, text, version)
    return JobItemStatus.DONE


# ----------------------------------------------------------------------------------------- parse


def _parse(item: _Item) -> JobItemStatus:
    session, image = item.session, item.image
    sources: list[tuple[str, PairOrigin]] = []
    if image.alt_text and image.alt_text.strip():
        sources.append((image.alt_text, PairOrigin.ALT_TEXT))
    if item.config.captioner is not None:
        version = item.backends.model_version("captioner")
        sources += [(c, PairOrigin.CAPTION) for c in mining.captions_of(session, image.id, version)]
    origins: dict[str, PairOrigin] = {}
    if sources:
        parsed = item.backends.parser.parse([text for text, _ in sources])
        for phrases, (_, origin) in zip(parsed, sources, strict=True):
            for phrase in clean_concepts(phrases):
                origins.setdefault(phrase, origin)  # alt-text (a person wrote it) wins
    kept = clean_concepts(origins, item.config.max_concepts)
    if kept:
        ids = repo.ensure_concepts(session, kept)
        mining.add_pairs(
            session, image.dataset_id, image.id, item.job_id,
            [(ids[p], origins[p]) for p in kept],
        )  # fmt: skip
    mining.adopt_pending_pairs(session, image.id, item.job_id)
    return JobItemStatus.DONE


# --------------------------------------------------------------------------------------- propose


def _proposal_rows(
    pair_id: int, job_id: int, found: PhraseProposals, version: str
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for k, rle in enumerate(found.masks):
        area = mask_ops.area(rle)
        if area == 0:
            continue  # an empty mask is no instance
        x, y, w, h = mask_ops.bbox(rle)
        rows.append(
            {
                "pair_id": pair_id, "job_id": job_id, "rle_counts": rle["counts"],
                "bbox_x": x, "bbox_y": y, "bbox_w": w, "bbox_h": h, "area": area,
                "score": float(found.scores[k]), "presence": float(found.presence),
                "model_version": version, "rank": len(rows),
            }
        )  # fmt: skip
    return rows


def _propose(item: _Item) -> JobItemStatus:
    session, image, config = item.session, item.image, item.config
    all_pairs = mining.job_pairs(session, image.id, item.job_id)
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
        return JobItemStatus.DONE
    version = item.backends.model_version("proposer")
    phrases = [p.phrase for p in pending] + candidates
    found = item.backends.proposer.propose(_load(image), phrases)
    by_phrase = {f.phrase: f for f in found}
    rows: list[dict[str, object]] = []
    for pair in pending:
        rows += _proposal_rows(pair.id, item.job_id, by_phrase[pair.phrase], version)
    if candidates:
        positive_masks = [m for p in pending if p.origin != PairOrigin.HARD_NEGATIVE
                          for m in by_phrase[p.phrase].masks]  # fmt: skip
        adversarial = select_adversarial(
            [by_phrase[c] for c in candidates], positive_masks, config.hard_negative_min_iou
        )
        if adversarial:
            kept = [a.phrase for a in adversarial]
            ids = repo.ensure_concepts(session, kept)
            mining.add_pairs(
                session, image.dataset_id, image.id, item.job_id,
                [(ids[p], PairOrigin.HARD_NEGATIVE) for p in kept], state=PairState.PROPOSED,
            )  # fmt: skip
            new_pairs = {
                p.phrase: p.id
                for p in mining.job_pairs(session, image.id, item.job_id, [PairState.PROPOSED])
                if p.origin == PairOrigin.HARD_NEGATIVE
            }
            for phrase in kept:
                if phrase in new_pairs:
                    rows += _proposal_rows(
                        new_pairs[phrase], item.job_id, by_phrase[phrase], version
                    )
    mining.add_proposals(session, rows)
    mining.set_pair_states(
        session, [{"id": p.id, "state": PairState.PROPOSED, "state_reason": None} for p in pending]
    )
    return JobItemStatus.DONE


# ---------------------------------------------------------------------------------------- verify


def _rle(counts: str, image: Image) -> mask_ops.RLE:
    assert image.height is not None and image.width is not None
    return {"size": [image.height, image.width], "counts": counts}


def _verify(item: _Item) -> JobItemStatus:
    session, image = item.session, item.image
    pairs = mining.job_pairs(session, image.id, item.job_id, [PairState.PROPOSED])
    if not pairs:
        return JobItemStatus.DONE
    proposals = mining.proposals_of(
        session, [p.id for p in pairs], item.backends.model_version("proposer")
    )
    picture = _load(image)
    mv_queries: list[FeaturedMaskQuery] = []
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
        for k, row in enumerate(rows):
            mv_queries.append(
                FeaturedMaskQuery(
                    image=picture,
                    phrase=pair.phrase,
                    mask=found.masks[k],
                    features=proposal_features(found, k),
                )
            )
            mv_targets.append((pair.id, row.id))
    verifier = item.backends.verifier
    mv_version = item.backends.model_version("verifier")
    ev_version = item.backends.model_version("ev")
    verdicts = verifier.verify_masks(mv_queries) if mv_queries else []
    rows_out: list[dict[str, object]] = []
    mv_by_proposal: dict[int, float] = {}
    for (pair_id, proposal_id), verdict in zip(mv_targets, verdicts, strict=True):
        mv_by_proposal[proposal_id] = verdict.p_accept
        rows_out.append(
            {
                "pair_id": pair_id, "proposal_id": proposal_id, "kind": VerificationKind.MV,
                "label": verdict.label, "p_accept": verdict.p_accept,
                "model_version": mv_version, "job_id": item.job_id,
            }
        )  # fmt: skip
    thresholds = item.thresholds
    ev_queries: list[PairQuery] = []
    for pair in pairs:
        rows = proposals[pair.id]
        question = ev_question(
            [mv_by_proposal[r.id] for r in rows],
            thresholds,
            hard_negative=pair.origin == PairOrigin.HARD_NEGATIVE,
        )
        shown = (
            [_rle(r.rle_counts, image) for r in rows
             if mv_by_proposal[r.id] >= thresholds.accept_above]
            if question == EvQuestion.EXHAUSTIVITY
            else []
        )  # fmt: skip
        ev_queries.append(PairQuery(image=picture, phrase=pair.phrase, masks=shown))
    for pair, verdict in zip(pairs, verifier.verify_pairs(ev_queries), strict=True):
        rows_out.append(
            {
                "pair_id": pair.id, "proposal_id": None, "kind": VerificationKind.EV,
                "label": verdict.label, "p_accept": verdict.p_accept,
                "model_version": ev_version, "job_id": item.job_id,
            }
        )  # fmt: skip
    mining.add_verifications(session, rows_out)
    mining.set_pair_states(session, [{"id": p.id, "state": PairState.VERIFIED} for p in pairs])
    return JobItemStatus.DONE


# ----------------------------------------------------------------------------------------- route


def _route(item: _Item) -> JobItemStatus:
    session, image = item.session, item.image
    pairs = mining.job_pairs(session, image.id, item.job_id, [PairState.VERIFIED])
    if not pairs:
        return JobItemStatus.DONE
    pair_ids = [p.id for p in pairs]
    proposals = mining.proposals_of(session, pair_ids, item.backends.model_version("proposer"))
    mv, ev = mining.verifications_of(
        session, pair_ids, item.backends.model_version("verifier"),
        item.backends.model_version("ev"),
    )  # fmt: skip
    thresholds = item.thresholds
    pair_rows: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    to_review: list[int] = []
    for pair in pairs:
        rows = proposals[pair.id]
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
        decision = route_pair(scores, thresholds)
        pair_rows.append(
            {
                "id": pair.id,
                "state": PairState(decision.outcome.value),
                "is_exhaustive": decision.is_exhaustive,
                "state_reason": decision.reason,
            }
        )
        if decision.outcome == PairOutcome.REVIEW:
            to_review.append(pair.id)
        by_id = {r.id: r for r in rows}
        for proposal_id in decision.accepted:
            r = by_id[proposal_id]
            x, y, w, h = r.bbox
            annotations.append(
                {
                    "dataset_id": image.dataset_id, "pair_id": pair.id,
                    "rle_counts": r.rle_counts, "bbox_x": x, "bbox_y": y, "bbox_w": w,
                    "bbox_h": h, "area": r.area, "iscrowd": False,
                    "source": AnnotationSource.AUTO, "score": mv[proposal_id][1],
                    "proposal_id": proposal_id, "model_version": r.model_version,
                }
            )  # fmt: skip
    mining.add_auto_annotations(session, annotations)
    mining.add_review_tasks(session, to_review)
    mining.set_pair_states(session, pair_rows)
    return JobItemStatus.DONE


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


def run_stage(session: Session, job_id: int, image_id: int, stage: str) -> None:
    """Run ``stage`` of ``image_id`` in ``job_id`` inside the caller's transaction.

    Returns early when the item is already finished (done, failed, skipped), when the job is
    not queued/running (cancelling, cancelled, done, failed), or when the job does not run this
    stage. A bad image is recorded on the item (status failed + error, later stages of the image
    skipped) and does not raise. Any other exception propagates: the edge rolls back and calls
    :func:`annotator.services.jobs.record_failure` in a new transaction.

    Raises:
        InvalidInputError: ``stage`` is not one of :data:`STAGES`.
        NotFoundError: no such job.
    """
    func = _STAGE_FUNCS.get(stage)
    if func is None:
        raise InvalidInputError(f"unknown stage {stage!r}: use one of {', '.join(STAGES)}")
    job = mining.get_job(session, job_id)
    if job.status not in _ACTIVE or job.dataset_id is None:
        return
    config = job_config(job.config, job_id)
    stages = config.stages
    if stage not in stages:
        return
    if not mining.claim_item(session, job_id, image_id, stage):
        return
    image = mining.get_image(session, image_id)
    item = _Item(session, job_id, job.dataset_id, image, config, get_backends(config))
    later = stages[stages.index(stage) + 1 :]
    try:
        # Stages raise BadItemError before their first write, so nothing needs rolling back.
        status = func(item)
    except BadItemError as exc:
        reason = str(exc)
        if stage == "ingest":
            image.status = ImageStatus.FAILED
            image.error = reason
        mining.set_item(session, job_id, image_id, stage, JobItemStatus.FAILED, reason)
        mining.skip_later(session, job_id, image_id, later, f"skipped: {stage} failed")
        session.flush()
        return
    mining.set_item(session, job_id, image_id, stage, status)
    session.flush()


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
