"""Constraints carry the invariants: each violation is refused by the database itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, insert, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from annotator.db.models import (
    Annotation,
    AnnotationSource,
    Concept,
    Dataset,
    Image,
    Pair,
    PairOrigin,
    Proposal,
    Verification,
    VerificationKind,
)
from annotator.db.session import session_factory

RLE = "PPYo1"


def _world(session: Session) -> dict[str, int]:
    ds = Dataset(name="d")
    session.add(ds)
    session.flush()
    img = Image(dataset_id=ds.id, file_name="a.jpg", uri="a.jpg", width=10, height=10, sha256="ab")
    concept = Concept(text="cat")
    session.add_all([img, concept])
    session.flush()
    pair = Pair(dataset_id=ds.id, image_id=img.id, concept_id=concept.id, origin=PairOrigin.CAPTION)
    session.add(pair)
    session.flush()
    prop = Proposal(
        pair_id=pair.id,
        rle_counts=RLE,
        bbox_x=0,
        bbox_y=0,
        bbox_w=1,
        bbox_h=1,
        area=1,
        score=0.9,
        model_version="m@1",
        rank=0,
    )
    session.add(prop)
    session.flush()
    return {
        "dataset": ds.id,
        "image": img.id,
        "concept": concept.id,
        "pair": pair.id,
        "proposal": prop.id,
    }


def _proposal(ids: dict[str, int], **kw: Any) -> dict[str, Any]:
    row = {
        "pair_id": ids["pair"],
        "rle_counts": RLE,
        "bbox_x": 0,
        "bbox_y": 0,
        "bbox_w": 1,
        "bbox_h": 1,
        "area": 1,
        "score": 0.5,
        "model_version": "m@1",
        "rank": 1,
    }
    return {**row, **kw}


def _annotation(ids: dict[str, int], **kw: Any) -> dict[str, Any]:
    row = {
        "dataset_id": ids["dataset"],
        "pair_id": ids["pair"],
        "rle_counts": RLE,
        "bbox_x": 0,
        "bbox_y": 0,
        "bbox_w": 1,
        "bbox_h": 1,
        "area": 1,
        "iscrowd": False,
        "source": AnnotationSource.IMPORT,
    }
    return {**row, **kw}


VIOLATIONS: dict[str, Callable[[Session, dict[str, int]], Any]] = {
    "duplicate dataset name": lambda s, ids: s.execute(insert(Dataset).values(name="d")),
    "duplicate file name in dataset": lambda s, ids: s.execute(
        insert(Image).values(
            dataset_id=ids["dataset"], file_name="a.jpg", uri="x", width=1, height=1
        )
    ),
    "duplicate content hash in dataset": lambda s, ids: s.execute(
        insert(Image).values(dataset_id=ids["dataset"], file_name="b.jpg", uri="x", sha256="ab")
    ),
    "zero width": lambda s, ids: s.execute(
        insert(Image).values(
            dataset_id=ids["dataset"], file_name="c.jpg", uri="x", width=0, height=3
        )
    ),
    "duplicate concept": lambda s, ids: s.execute(insert(Concept).values(text="cat")),
    "duplicate pair": lambda s, ids: s.execute(
        insert(Pair).values(
            dataset_id=ids["dataset"],
            image_id=ids["image"],
            concept_id=ids["concept"],
            origin="caption",
        )
    ),
    "duplicate proposal rank": lambda s, ids: s.execute(
        insert(Proposal).values(**_proposal(ids, rank=0))
    ),
    "negative rank": lambda s, ids: s.execute(insert(Proposal).values(**_proposal(ids, rank=-1))),
    "pair of unknown image": lambda s, ids: s.execute(
        insert(Pair).values(
            dataset_id=ids["dataset"], image_id=999, concept_id=ids["concept"], origin="caption"
        )
    ),
    "MV without proposal": lambda s, ids: s.execute(
        insert(Verification).values(
            pair_id=ids["pair"],
            kind=VerificationKind.MV,
            label="accept",
            p_accept=0.5,
            model_version="v",
        )
    ),
    "EV on a proposal": lambda s, ids: s.execute(
        insert(Verification).values(
            pair_id=ids["pair"],
            proposal_id=ids["proposal"],
            kind=VerificationKind.EV,
            label="accept",
            p_accept=0.5,
            model_version="v",
        )
    ),
    "p_accept above 1": lambda s, ids: s.execute(
        insert(Verification).values(
            pair_id=ids["pair"],
            proposal_id=ids["proposal"],
            kind=VerificationKind.MV,
            label="accept",
            p_accept=1.5,
            model_version="v",
        )
    ),
    "auto annotation without proposal": lambda s, ids: s.execute(
        insert(Annotation).values(**_annotation(ids, source=AnnotationSource.AUTO))
    ),
    "human annotation without review": lambda s, ids: s.execute(
        insert(Annotation).values(**_annotation(ids, source=AnnotationSource.HUMAN))
    ),
    "unknown pair state (raw SQL)": lambda s, ids: s.execute(
        text("UPDATE pairs SET state = 'bogus' WHERE id = :id"), {"id": ids["pair"]}
    ),
}


@pytest.mark.parametrize("violation", list(VIOLATIONS))
def test_database_refuses(engine: Engine, violation: str) -> None:
    with session_factory(engine)() as session, session.begin():
        ids = _world(session)
    with (
        session_factory(engine)() as session,
        pytest.raises((IntegrityError, StatementError)),
        session.begin(),
    ):
        VIOLATIONS[violation](session, ids)


def test_valid_rows_are_accepted(engine: Engine) -> None:
    with session_factory(engine)() as session, session.begin():
        ids = _world(session)
        session.execute(insert(Proposal).values(**_proposal(ids, rank=1)))
        session.execute(insert(Proposal).values(**_proposal(ids, rank=0, model_version="m@2")))
        session.execute(
            insert(Annotation).values(
                **_annotation(ids, source="auto", proposal_id=ids["proposal"])
            )
        )
        session.execute(
            insert(Verification).values(
                pair_id=ids["pair"], kind="ev", label="accept", p_accept=1.0, model_version="v"
            )
        )
