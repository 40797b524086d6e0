"""The web service's fast paths keep the behaviour of the plain ones: the token cache (a revoked
token stops working within its TTL, unknown tokens are never remembered, roles stay exact),
the progress cache (fresh, stale-while-refreshing, one refresh at a time), the one-query browser
pages (404s, filters, empty pages) and the image view, and the read-only sessions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, text

from annotator.db.models import Annotation, AnnotationSource, Image, ImageStatus, Review
from annotator.db.session import read_scope, session_scope
from annotator.services.users import add_user, revoke_user
from tests.web.conftest import Tokens
from tests.web.factories import Made, _rle_row, box_mask, make_browsable
from web.api.jobs import PROGRESS_STALE_S, PROGRESS_TTL_S, ProgressCache
from web.api.schemas import ProgressOut
from web.deps import TOKEN_CACHE_TTL_S, TokenCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def made(engine: Engine, tmp_path: Path) -> Made:
    with session_scope(engine) as session:
        return make_browsable(session, tmp_path / "images", n_images=5)


def test_a_revoked_token_stops_working_within_the_cache_ttl(
    client: TestClient, engine: Engine
) -> None:
    assert 0 < TOKEN_CACHE_TTL_S <= 10  # the documented revocation delay
    clock = Clock()
    client.app.state.token_cache = TokenCache(clock=clock)  # type: ignore[attr-defined]
    with session_scope(engine) as session:
        token = add_user(session, "leaving", "engineer")
    h = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/me", headers=h).json()["role"] == "engineer"
    with session_scope(engine) as session:
        revoke_user(session, "leaving")
    # Remembered: still in, for the rest of the TTL only.
    clock.now += TOKEN_CACHE_TTL_S / 2
    assert client.get("/api/v1/me", headers=h).status_code == 200
    clock.now += TOKEN_CACHE_TTL_S / 2 + 0.01
    for path in ("/api/v1/me", "/api/v1/datasets"):
        answer = client.get(path, headers=h)
        assert answer.status_code == 401 and answer.json()["detail"] == "invalid or revoked token"
    # The cookie-authenticated pages too.
    client.cookies.set("annotator_token", token)
    page = client.get("/browse/none", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")


def test_the_token_cache_remembers_only_valid_tokens_with_their_role(
    client: TestClient, tokens: Tokens
) -> None:
    cache: TokenCache = client.app.state.token_cache  # type: ignore[attr-defined]
    assert client.get("/api/v1/me", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/api/v1/me", headers=tokens.headers("revoked")).status_code == 401
    assert cache.get("nope") is None and cache.get(tokens.revoked) is None
    # A cached reviewer is still a reviewer: the role check is made on every request.
    h = tokens.headers("reviewer")
    for _ in range(2):
        assert client.get("/api/v1/me", headers=h).json()["role"] == "reviewer"
        refused = client.post("/api/v1/datasets", json={"name": "x"}, headers=h)
        assert refused.status_code == 403 and "needs the engineer role" in refused.json()["detail"]
    cached = cache.get(tokens.reviewer)
    assert cached is not None and cached.name == "reviewer-user"
    made = client.post("/api/v1/datasets", json={"name": "x"}, headers=tokens.headers("engineer"))
    assert made.status_code == 201


def test_token_cache_bounds() -> None:
    from annotator.db.models import UserRole
    from annotator.services.users import Principal

    clock = Clock()
    cache = TokenCache(2.0, max_entries=3, clock=clock)
    who = Principal(1, "a", UserRole.ADMIN)
    for i in range(3):
        cache.put(f"t{i}", who)
    assert cache.get("t0") == who
    cache.put("t3", who)  # full: starts over
    assert cache.get("t0") is None and cache.get("t3") == who
    clock.now += 2.0
    assert cache.get("t3") is None
    off = TokenCache(0)
    off.put("t", who)
    assert off.get("t") is None


def _progress(n: int) -> ProgressOut:
    return ProgressOut(
        job_id=1,
        status="running",
        images=n,
        images_finished=0,
        total=n,
        finished=0,
        elapsed_s=0.0,
        rate=None,
        eta_s=None,
        error=None,
        stages=[],
    )


def test_progress_cache_fresh_stale_and_one_refresh_at_a_time() -> None:
    clock = Clock()
    cache = ProgressCache(clock=clock)
    calls: list[int] = []

    async def compute() -> ProgressOut:
        calls.append(1)
        await asyncio.sleep(0.05)
        return _progress(len(calls))

    def images(body: bytes) -> int:
        return ProgressOut.model_validate_json(body).images

    async def scenario() -> None:
        # Nothing cached: concurrent requests wait for one shared computation.
        first = await asyncio.gather(*(cache.get_or_compute(1, compute) for _ in range(10)))
        assert len(calls) == 1 and {images(b) for b in first} == {1}
        # Fresh: no computation.
        clock.now += PROGRESS_TTL_S / 2
        assert images(await cache.get_or_compute(1, compute)) == 1 and len(calls) == 1
        # Stale: the old answer at once, and one refresh in the background.
        clock.now += PROGRESS_TTL_S
        stale = await asyncio.gather(*(cache.get_or_compute(1, compute) for _ in range(10)))
        assert {images(b) for b in stale} == {1}
        await asyncio.sleep(0.1)
        assert len(calls) == 2
        assert images(await cache.get_or_compute(1, compute)) == 2
        # Too stale to serve: the request waits for the new answer.
        clock.now += PROGRESS_STALE_S
        assert images(await cache.get_or_compute(1, compute)) == 3

        # A failing refresh fails the requests that wait for it, and is tried again later.
        async def broken() -> ProgressOut:
            raise RuntimeError("database down")

        with pytest.raises(RuntimeError):
            await cache.get_or_compute(2, broken)
        assert images(await cache.get_or_compute(2, compute)) == 4
        # A newer answer (a cancel writes one) is not overwritten by an older refresh.
        cache.put(5, _progress(50), at=clock.now)
        cache.put(5, _progress(40), at=clock.now - 1)
        assert images(await cache.get_or_compute(5, compute)) == 50

    asyncio.run(scenario())


def test_browser_pages_in_one_query_keep_their_answers(
    client: TestClient, tokens: Tokens, made: Made, engine: Engine
) -> None:
    h = tokens.headers("reviewer")
    for query in ("", "?concept=red%20car", "?state=positive", "?concept=red%20car&state=positive"):
        missing = client.get(f"/api/v1/datasets/nowhere/browse{query}", headers=h)
        assert missing.status_code == 404 and missing.json()["error"] == "NotFoundError", query
        assert "no dataset named 'nowhere'" in missing.json()["detail"]
    both = client.get(
        "/api/v1/datasets/shapes/browse?concept=Red%20Car%20&state=positive", headers=h
    ).json()
    assert both["kind"] == "pairs"
    assert [i["pair_id"] for i in both["items"]] == sorted(made.pair_ids["positive"], reverse=True)
    item = both["items"][0]
    assert set(item) == {
        *("pair_id", "image_id", "file_name", "width", "height", "concept", "state"),
        *("is_exhaustive", "masks"),
    }
    assert item["is_exhaustive"] is True and item["state"] == "positive" and item["masks"] == 2
    none = client.get("/api/v1/datasets/shapes/browse?concept=red%20car&state=negative", headers=h)
    assert none.json() == {"kind": "pairs", "items": [], "next_before": None}
    # Images: all of them, newest first, over keyset pages.
    seen: list[int] = []
    before = ""
    while True:
        page = client.get(f"/api/v1/datasets/shapes/browse?limit=2{before}", headers=h).json()
        seen += [i["image_id"] for i in page["items"]]
        if page["next_before"] is None:
            break
        before = f"&before={page['next_before']}"
    assert seen == sorted(made.image_ids, reverse=True)
    # An empty dataset is a page, not a 404.
    admin = tokens.headers("admin")
    created = client.post("/api/v1/datasets", json={"name": "empty"}, headers=admin)
    assert created.status_code == 201
    empty = client.get("/api/v1/datasets/empty/browse", headers=h).json()
    assert empty == {"kind": "images", "items": [], "next_before": None}
    # The HTML page: a bad state on an unknown dataset names the dataset first, as before.
    client.cookies.set("annotator_token", tokens.reviewer)
    page = client.get("/browse/nowhere?state=maybe")
    assert page.status_code == 200 and "no dataset named" in page.text


def test_image_view_without_pairs_and_unknown_images(
    client: TestClient, tokens: Tokens, made: Made, engine: Engine
) -> None:
    h = tokens.headers("reviewer")
    with session_scope(engine) as session:
        dataset_id = session.get(Image, made.image_ids[0]).dataset_id  # type: ignore[union-attr]
        bare = Image(
            dataset_id=dataset_id,
            file_name="bare.png",
            uri="bare.png",
            status=ImageStatus.FAILED,
            error="cannot decode",
        )
        session.add(bare)
        review = session.scalars(select(Review).where(Review.proposal_id.is_not(None))).first()
        assert review is not None
        # A person's fix on the first image's positive pair.
        session.add(
            Annotation(
                dataset_id=dataset_id,
                pair_id=made.pair_ids["positive"][0],
                score=None,
                source=AnnotationSource.HUMAN,
                review_id=review.id,
                model_version=None,
                **_rle_row(box_mask(48, 64, 1, 1, 9, 9)),
            )
        )
        session.flush()
        bare_id = bare.id
    view = client.get(f"/api/v1/images/{bare_id}", headers=h).json()
    assert view == {
        "image": {
            "id": bare_id,
            "dataset_id": dataset_id,
            "file_name": "bare.png",
            "width": None,
            "height": None,
            "status": "failed",
            "error": "cannot decode",
        },
        "pairs": [],
        "truncated": False,
    }
    assert client.get("/api/v1/images/999999", headers=h).json() == {
        "detail": "no image 999999",
        "error": "NotFoundError",
    }
    # Concepts in order, each mask with its provenance.
    full = client.get(f"/api/v1/images/{made.image_ids[0]}", headers=h).json()
    assert [p["concept"] for p in full["pairs"]] == ["red car", "striped umbrella", "tabby cat"]
    car = full["pairs"][0]
    masks = [(m["kind"], m["source"], m["reviewer"], m["score"]) for m in car["masks"]]
    auto = [("annotation", "auto", None, 0.9), ("annotation", "auto", None, 0.5)]
    human = ("annotation", "human", "alice", None)
    # Best score first; the person's mask has none, which PostgreSQL sorts first in a
    # descending order and SQLite last (as before these queries were rewritten).
    assert masks in ([human, *auto], [*auto, human])
    assert len(car["masks"]) == 3 and not full["truncated"]
    umbrella = full["pairs"][1]
    assert [(m["kind"], m["score"], m["mv_p_accept"]) for m in umbrella["masks"]] == [
        ("proposal", 0.9, 0.9),
        ("proposal", 0.5, 0.5),
    ]


def test_read_scope_leaves_no_transaction_open(engine: Engine, made: Made) -> None:
    with read_scope(engine) as session:
        assert session.execute(text("SELECT count(*) FROM images")).scalar_one() == 5
        if engine.dialect.name == "postgresql":
            # Autocommit: the statement ran in a transaction of its own, already over.
            status = session.connection().connection.dbapi_connection.info.transaction_status  # type: ignore[union-attr]
            assert status.name == "IDLE"
