"""Mining jobs in-process on the tiny models: rows, idempotency, cancel/resume, failures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from annotator.db import mining
from annotator.db.models import (
    Annotation,
    AnnotationSource,
    Caption,
    Image,
    ImageStatus,
    Job,
    JobItem,
    JobItemStatus,
    JobStatus,
    Pair,
    PairOrigin,
    PairState,
    Proposal,
    ReviewTask,
    ReviewTaskStatus,
    Verification,
    VerificationKind,
)
from annotator.db.session import session_scope
from annotator.errors import ConflictError
from annotator.pipeline.config import MiningConfig
from annotator.pipeline.runner import launch_job, relaunch_job, run_job_inline
from annotator.pipeline.stages import STAGES, run_stage
from annotator.services import jobs
from tests.pipeline import fakes
from tests.pipeline.conftest import add_dataset
from tests.pipeline.helpers import dataset_rows, table_counts

MakeConfig = Callable[..., MiningConfig]


def _dataset_id(engine: Engine, name: str) -> int:
    from annotator.db import repositories as repo

    with session_scope(engine) as session:
        return repo.get_dataset(session, name).id


def test_job_in_process_completes_with_expected_rows(
    engine: Engine, image_dir: Path, alt_text_file: Path, make_config: MakeConfig
) -> None:
    add_dataset(engine, "shapes", image_dir, alt_text_file)
    config = make_config()
    job_id, status = launch_job(engine, "shapes", config)
    assert status == JobStatus.DONE
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.started_at and job.finished_at
        items = session.scalars(select(JobItem).where(JobItem.job_id == job_id)).all()
        assert len(items) == 4 * len(STAGES)
        by_stage: dict[str, list[JobItem]] = {}
        for item in items:
            by_stage.setdefault(item.stage, []).append(item)
        # Images with alt-text skip the captioner; d.jpg has none and is captioned.
        assert sorted(i.status.value for i in by_stage["caption"]) == [
            "done",
            "skipped",
            "skipped",
            "skipped",
        ]
        for stage in ("ingest", "parse", "propose", "verify", "route"):
            assert {i.status for i in by_stage[stage]} == {JobItemStatus.DONE}, stage
        assert all(i.attempts == 1 for i in items if i.status == JobItemStatus.DONE)

        images = session.scalars(select(Image)).all()
        assert all(
            i.status == ImageStatus.READY and i.sha256 and i.width == 64 and i.height == 48
            for i in images
        )
        captions = session.scalars(select(Caption)).all()
        assert len(captions) == 1 and captions[0].model_version.startswith(
            Path(config.captioner.model).name + "@"
        )  # type: ignore[union-attr]

        pairs = session.execute(select(Pair, Image.file_name).join(Image)).all()
        alt_pairs = {(f, p.concept.text) for p, f in pairs if p.origin == PairOrigin.ALT_TEXT}
        assert alt_pairs == {
            ("a.png", "red car"), ("a.png", "striped umbrella"), ("b.png", "blue car"),
            ("b.png", "tree"), ("sub/c.png", "tabby cat"), ("sub/c.png", "wooden table"),
        }  # fmt: skip
        # "red car" and "blue car" are colour swaps: each is a hard-negative candidate on the other
        # image, kept only where the proposer's masks overlap the present concept's.
        for pair, file_name in pairs:
            if pair.origin == PairOrigin.HARD_NEGATIVE:
                assert pair.concept.text in {"red car", "blue car"}
                assert (file_name, pair.concept.text) not in alt_pairs
            assert pair.job_id == job_id
            assert pair.state in (
                PairState.POSITIVE,
                PairState.NEGATIVE,
                PairState.IN_REVIEW,
                PairState.UNGROUNDABLE,
            )
            assert pair.state_reason

        version = session.scalars(select(Proposal.model_version).distinct()).all()
        assert len(version) == 1 and version[0].startswith(
            Path(config.proposer.model or "").name + "@"
        )
        for pair, _ in pairs:
            props = session.scalars(
                select(Proposal).where(Proposal.pair_id == pair.id).order_by(Proposal.rank)
            ).all()
            assert [p.rank for p in props] == list(range(len(props)))
            assert len(props) <= 5 and all(p.area > 0 and p.job_id == job_id for p in props)
            mv = session.scalars(
                select(Verification).where(
                    Verification.pair_id == pair.id, Verification.kind == VerificationKind.MV
                )
            ).all()
            assert sorted(v.proposal_id for v in mv) == sorted(p.id for p in props)
            ev = session.scalars(
                select(Verification).where(
                    Verification.pair_id == pair.id, Verification.kind == VerificationKind.EV
                )
            ).all()
            assert len(ev) == 1 and 0.0 <= ev[0].p_accept <= 1.0
            tasks = session.scalars(select(ReviewTask).where(ReviewTask.pair_id == pair.id)).all()
            assert len(tasks) == (1 if pair.state == PairState.IN_REVIEW else 0)
            assert all(t.status == ReviewTaskStatus.OPEN for t in tasks)
            anns = session.scalars(select(Annotation).where(Annotation.pair_id == pair.id)).all()
            if pair.state != PairState.POSITIVE:
                assert anns == []
        assert job.counters["images"] == 4
        assert job.counters["proposals"] == session.query(Proposal).count()
        state = jobs.job_progress(session, job_id)
    assert state.status == JobStatus.DONE and state.images_finished == 4 and state.eta_s is None
    assert [s.stage for s in state.stages] == list(STAGES)


def test_routing_through_the_pipeline_records_decisions_and_reasons(
    engine: Engine, image_dir: Path, alt_text_file: Path, make_config: MakeConfig
) -> None:
    add_dataset(engine, "shapes", image_dir, alt_text_file)
    fakes.MV_SCRIPT.update(
        {"red car": [0.95], "striped umbrella": [0.95, 0.5], "blue car": [0.05], "tree": [0.05]}
    )
    fakes.EV_SCRIPT.update(
        {"red car": 0.97, "blue car": 0.99, "tree": 0.3, "striped umbrella": 0.99}
    )
    config = make_config(scripted=True, captioner=False, hard_negatives=False)
    _job_id, status = launch_job(engine, "shapes", config)
    assert status == JobStatus.DONE
    with session_scope(engine) as session:
        pairs = {p.concept.text: p for p in session.scalars(select(Pair))}
        red = pairs["red car"]
        n_red = session.query(Proposal).filter(Proposal.pair_id == red.id).count()
        assert n_red > 0
        assert red.state == PairState.POSITIVE and red.is_exhaustive is True
        assert "MV p >= accept_above 0.800" in (red.state_reason or "")
        assert "EV exhaustive p=0.970 >= ev_accept_above 0.800" in (red.state_reason or "")
        anns = session.scalars(select(Annotation).where(Annotation.pair_id == red.id)).all()
        assert len(anns) == n_red
        for ann in anns:
            proposal = session.get(Proposal, ann.proposal_id)
            assert proposal is not None and ann.source == AnnotationSource.AUTO
            assert ann.rle_counts == proposal.rle_counts and ann.area == proposal.area
            assert ann.model_version == proposal.model_version and ann.score == pytest.approx(0.95)
        # Every mask rejected and EV says absent, but the alt-text named the blue car: by
        # default only hard negatives are declared absent without a person.
        blue = pairs["blue car"]
        assert blue.state == PairState.IN_REVIEW
        assert "EV absent p=0.990 >= ev_accept_above 0.800, but the phrase was named" in (
            blue.state_reason or ""
        )
        # Rejected masks but EV not sure the tree is absent: a person looks.
        assert pairs["tree"].state == PairState.IN_REVIEW
        # An uncertain second mask sends the umbrella to review, with no automatic masks.
        umbrella = pairs["striped umbrella"]
        if session.query(Proposal).filter(Proposal.pair_id == umbrella.id).count() > 1:
            assert umbrella.state == PairState.IN_REVIEW
            assert "uncertain" in (umbrella.state_reason or "")
        in_review = {p.id for p in pairs.values() if p.state == PairState.IN_REVIEW}
        assert {t.pair_id for t in session.scalars(select(ReviewTask))} == in_review
        assert session.query(Annotation).count() == n_red


def test_a_job_with_auto_accept_off_sends_every_kept_mask_to_a_person(
    engine: Engine, image_dir: Path, alt_text_file: Path, make_config: MakeConfig
) -> None:
    """``routing.auto_accept`` false (a target precision nothing is shown to reach): the
    pipeline's routing accepts no mask however high MV scores it; rejections and verified
    negatives are unchanged."""
    add_dataset(engine, "shapes", image_dir, alt_text_file)
    fakes.MV_SCRIPT.update({"red car": [0.99], "blue car": [0.05]})
    fakes.EV_SCRIPT.update({"red car": 0.99, "blue car": 0.99})
    config = make_config(
        scripted=True, captioner=False, hard_negatives=False,
        routing={"accept_above": 0.8, "reject_below": 0.2, "auto_accept": False,
                 "auto_negative_named": True},
    )  # fmt: skip
    _job_id, status = launch_job(engine, "shapes", config)
    assert status == JobStatus.DONE
    with session_scope(engine) as session:
        pairs = {p.concept.text: p for p in session.scalars(select(Pair))}
        red = pairs["red car"]
        assert red.state == PairState.IN_REVIEW
        assert "MV auto-accept off" in (red.state_reason or "")
        assert pairs["blue car"].state == PairState.NEGATIVE
        assert session.query(Annotation).count() == 0


def test_named_pairs_are_declared_absent_only_when_allowed(
    engine: Engine, image_dir: Path, alt_text_file: Path, make_config: MakeConfig
) -> None:
    """``routing.auto_negative_named``: every mask rejected and EV sure the named blue car is
    absent makes a verified negative, without masks."""
    add_dataset(engine, "shapes", image_dir, alt_text_file)
    fakes.MV_SCRIPT.update({"blue car": [0.05]})
    fakes.EV_SCRIPT.update({"blue car": 0.99})
    config = make_config(
        scripted=True, captioner=False, hard_negatives=False,
        routing={"accept_above": 0.8, "reject_below": 0.2, "auto_negative_named": True},
    )  # fmt: skip
    _job_id, status = launch_job(engine, "shapes", config)
    assert status == JobStatus.DONE
    with session_scope(engine) as session:
        pairs = {p.concept.text: p for p in session.scalars(select(Pair))}
        blue = pairs["blue car"]
        assert blue.state == PairState.NEGATIVE and blue.is_exhaustive is True
        assert (blue.state_reason or "").endswith("EV absent p=0.990 >= ev_accept_above 0.800")
        assert session.query(ReviewTask).filter(ReviewTask.pair_id == blue.id).count() == 0


def test_running_every_stage_twice_adds_nothing(
    engine: Engine, image_dir: Path, alt_text_file: Path, make_config: MakeConfig
) -> None:
    add_dataset(engine, "shapes", image_dir, alt_text_file)
    fakes.MV_SCRIPT.update({"red car": [0.95], "blue car": [0.05]})
    fakes.EV_SCRIPT.update({"red car": 0.97, "blue car": 0.99})
    with session_scope(engine) as session:
        job_id = jobs.create_mining_job(session, "shapes", make_config(scripted=True)).id
    # Each stage item twice in a row, in separate transactions.
    while True:
        with session_scope(engine) as session:
            ready = jobs.next_items(session, job_id)
        if not ready:
            break
        for image_id, stage in ready:
            for _ in range(2):
                with session_scope(engine) as session:
                    run_stage(session, job_id, image_id, stage)
    with session_scope(engine) as session:
        assert jobs.finish_if_done(session, job_id)
    counts = table_counts(engine)
    rows = dataset_rows(engine, _dataset_id(engine, "shapes"))
    calls = dict(fakes.CALLS)
    # Even with every item back to pending (a task delivered again after its worker died), the
    # stages find their work recorded and insert nothing.
    with session_scope(engine) as session:
        session.execute(update(JobItem).values(status=JobItemStatus.PENDING))
        session.execute(update(Job).values(status=JobStatus.RUNNING))
    assert run_job_inline(engine, job_id) == JobStatus.DONE
    assert table_counts(engine) == counts
    assert dataset_rows(engine, _dataset_id(engine, "shapes")) == rows
    assert calls == fakes.CALLS  # nothing was verified again


def test_cancel_then_resume_gives_the_rows_of_an_uninterrupted_run(
    engine: Engine, image_dir: Path, alt_text_file: Path, make_config: MakeConfig
) -> None:
    add_dataset(engine, "once", image_dir, alt_text_file)
    add_dataset(engine, "twice", image_dir, alt_text_file)
    fakes.MV_SCRIPT.update({"red car": [0.95], "tree": [0.05]})
    fakes.EV_SCRIPT.update({"red car": 0.97, "tree": 0.99})
    config = make_config(scripted=True, captioner=False, hard_negatives=False)
    launch_job(engine, "once", config)

    seen: list[int] = []

    def cancel_midway(state: jobs.JobProgress) -> None:
        seen.append(state.finished)
        if state.finished >= 6 and state.status == JobStatus.RUNNING:
            with session_scope(engine) as session:
                jobs.cancel_job(session, state.job_id)

    from annotator.pipeline import runner

    monkey = pytest.MonkeyPatch()
    monkey.setattr(runner, "_PROGRESS_EVERY_S", 0.0)
    try:
        job_id, status = launch_job(engine, "twice", config, progress=cancel_midway)
    finally:
        monkey.undo()
    assert status == JobStatus.CANCELLED
    with session_scope(engine) as session:
        left = mining.unfinished_count(session, job_id)
        assert 0 < left < 4 * 5
        with pytest.raises(ConflictError, match="already cancelled"):
            jobs.cancel_job(session, job_id)
        assert jobs.next_items(session, job_id) == []  # a cancelled job offers no work
    assert relaunch_job(engine, job_id) == JobStatus.DONE
    with session_scope(engine) as session:
        with pytest.raises(ConflictError, match="nothing left to run"):
            jobs.resume_job(session, job_id)
        attempts = session.scalars(select(JobItem.attempts).where(JobItem.job_id == job_id)).all()
    assert set(attempts) == {1}  # nothing ran twice
    once = dataset_rows(engine, _dataset_id(engine, "once"))
    twice = dataset_rows(engine, _dataset_id(engine, "twice"))
    assert once == twice and len(once) >= 6


def test_queued_job_cancels_at_once_and_running_job_settles(
    engine: Engine, image_dir: Path, make_config: MakeConfig
) -> None:
    add_dataset(engine, "shapes", image_dir, None)
    with session_scope(engine) as session:
        job = jobs.create_mining_job(session, "shapes", make_config(scripted=True, captioner=False))
        assert jobs.cancel_job(session, job.id).status == JobStatus.CANCELLED
        job2 = jobs.create_mining_job(
            session, "shapes", make_config(scripted=True, captioner=False, images="all")
        )
        jobs.start_job(session, job2.id)
        assert jobs.cancel_job(session, job2.id).status == JobStatus.CANCELLING
        run_stage(session, job2.id, 1, "ingest")  # a cancelling job starts nothing
        assert mining.item_status(session, job2.id, 1, "ingest") == JobItemStatus.PENDING
        assert jobs.finish_if_done(session, job2.id)
        assert mining.job_status(session, job2.id) == JobStatus.CANCELLED


def test_a_job_is_settled_only_when_its_work_has_stopped(
    engine: Engine, image_dir: Path, make_config: MakeConfig
) -> None:
    """``finish_if_done`` (after every last-stage task) leaves a running job with items left
    as it is, settles it as done once none are, and a cancelling one at once, also when the
    cancel is a change of this session not written yet."""
    add_dataset(engine, "shapes", image_dir, None)
    config = make_config(scripted=True, captioner=False, images="all")
    with session_scope(engine) as session:
        job_id = jobs.create_mining_job(session, "shapes", config).id
        jobs.start_job(session, job_id)
    with session_scope(engine) as session:
        assert not jobs.finish_if_done(session, job_id)
        assert mining.job_status(session, job_id) == JobStatus.RUNNING
        mining.get_job(session, job_id).status = JobStatus.CANCELLING  # not flushed
        assert jobs.finish_if_done(session, job_id)
        assert mining.job_status(session, job_id) == JobStatus.CANCELLED
        assert not jobs.finish_if_done(session, job_id)  # settled once
    with session_scope(engine) as session:
        job_id = jobs.create_mining_job(session, "shapes", config).id
        jobs.start_job(session, job_id)
        session.execute(
            update(JobItem).where(JobItem.job_id == job_id).values(status=JobItemStatus.SKIPPED)
        )
        assert jobs.finish_if_done(session, job_id)
        assert mining.job_status(session, job_id) == JobStatus.DONE


def test_transient_error_is_retried_and_a_model_that_cannot_load_fails_the_job(
    engine: Engine, image_dir: Path, alt_text_file: Path, make_config: MakeConfig, tmp_path: Path
) -> None:
    add_dataset(engine, "shapes", image_dir, alt_text_file)
    fakes.FAILURES["verify"] = 1
    job_id, status = launch_job(engine, "shapes", make_config(scripted=True, captioner=False))
    assert status == JobStatus.DONE
    with session_scope(engine) as session:
        verify = session.scalars(
            select(JobItem).where(
                JobItem.job_id == job_id, JobItem.stage == "verify", JobItem.attempts == 2
            )
        ).all()
        assert len(verify) == 1 and verify[0].status == JobItemStatus.DONE
        assert verify[0].error is None  # a success clears the transient error

    add_dataset(engine, "other", image_dir, alt_text_file)
    broken = make_config(scripted=True, captioner=False)
    broken = broken.model_copy(
        update={"proposer": broken.proposer.model_copy(update={"model": str(tmp_path / "missing")})}
    )
    job_id, status = launch_job(engine, "other", broken)
    assert status == JobStatus.FAILED
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        assert job is not None and "propose" in (job.error or "") and job.finished_at


def test_next_items_and_ready_after_follow_stage_order_and_the_parse_barrier(
    engine: Engine, image_dir: Path, alt_text_file: Path, make_config: MakeConfig
) -> None:
    add_dataset(engine, "shapes", image_dir, alt_text_file)
    with session_scope(engine) as session:
        job_id = jobs.create_mining_job(
            session, "shapes", make_config(scripted=True, captioner=False)
        ).id
        ids = sorted(session.scalars(select(Image.id)))
        assert jobs.next_items(session, job_id) == [(i, "ingest") for i in ids]
        for i in ids:
            run_stage(session, job_id, i, "ingest")
        assert jobs.ready_after(session, job_id, ids[0], "ingest") == [(ids[0], "parse")]
        assert jobs.next_items(session, job_id) == [(i, "parse") for i in ids]
        run_stage(session, job_id, ids[0], "parse")
        # Hard negatives need the whole job's vocabulary: propose waits for every parse.
        assert jobs.ready_after(session, job_id, ids[0], "parse") == []
        assert jobs.next_items(session, job_id, limit=2) == [(ids[1], "parse"), (ids[2], "parse")]
        for i in ids[1:]:
            run_stage(session, job_id, i, "parse")
        assert jobs.ready_after(session, job_id, ids[-1], "parse") == [(i, "propose") for i in ids]
        with pytest.raises(Exception, match="unknown stage"):
            run_stage(session, job_id, ids[0], "paint")


def test_batches_give_the_rows_of_one_image_at_a_time(
    engine: Engine, image_dir: Path, alt_text_file: Path, make_config: MakeConfig
) -> None:
    """Stages run on batches of images (one transaction, shared reads and writes) write exactly
    the rows of the same stages run image by image, captions, hard negatives and all."""
    rows: list[object] = []
    for size in (1, 3, 256):
        name = f"batch{size}"
        add_dataset(engine, name, image_dir, alt_text_file)
        config = make_config(caption_when_alt_text=True, batch_size=size)
        _, status = launch_job(engine, name, config)
        assert status == JobStatus.DONE
        rows.append(dataset_rows(engine, _dataset_id(engine, name)))
    assert rows[0] == rows[1] == rows[2]
    assert len(rows[0]) >= 6


def test_a_failed_attempt_in_a_batch_keeps_the_other_images_work(
    engine: Engine, image_dir: Path, alt_text_file: Path, make_config: MakeConfig
) -> None:
    """The verifier fails for one image of a batch: the others' verifications are written in
    that attempt, only the failed item runs again (one attempt more), and the rows are those of
    an undisturbed run."""
    add_dataset(engine, "calm", image_dir, alt_text_file)
    add_dataset(engine, "bumpy", image_dir, alt_text_file)
    config = make_config(scripted=True, captioner=False, hard_negatives=False)
    launch_job(engine, "calm", config)
    fakes.FAILURES["verify"] = 1
    job_id, status = launch_job(engine, "bumpy", config)
    assert status == JobStatus.DONE
    with session_scope(engine) as session:
        attempts = session.scalars(
            select(JobItem.attempts).where(JobItem.job_id == job_id, JobItem.stage == "verify")
        ).all()
    assert sorted(attempts) == [1] * (len(attempts) - 1) + [2]
    calm = dataset_rows(engine, _dataset_id(engine, "calm"))
    assert dataset_rows(engine, _dataset_id(engine, "bumpy")) == calm


def test_resume_settles_a_job_stranded_after_its_last_task_committed(
    engine: Engine, image_dir: Path, make_config: MakeConfig
) -> None:
    # The worker committed the last item, then died before the job was settled: the job is
    # still "running" with nothing unfinished. Resume settles it instead of refusing.
    add_dataset(engine, "shapes", image_dir, None)
    job_id, status = launch_job(engine, "shapes", make_config(scripted=True, captioner=False))
    assert status == JobStatus.DONE
    with session_scope(engine) as session:
        counters = dict(mining.get_job(session, job_id).counters or {})
        job = mining.get_job(session, job_id)
        job.status, job.finished_at = JobStatus.RUNNING, None
    counts = table_counts(engine)
    assert relaunch_job(engine, job_id) == JobStatus.DONE
    with session_scope(engine) as session:
        job = mining.get_job(session, job_id)
        assert job.status == JobStatus.DONE and job.finished_at is not None
        assert dict(job.counters or {}) == counters
        with pytest.raises(ConflictError, match="nothing left to run"):
            jobs.resume_job(session, job_id)  # a settled job still refuses
    assert table_counts(engine) == counts  # nothing ran again


def test_the_embedded_runner_runs_a_batch_through_its_stages_before_the_next_batch(
    engine: Engine, image_dir: Path, alt_text_file: Path, make_config: MakeConfig
) -> None:
    """Depth first: with two images per batch, the first batch goes ingest -> ... -> route
    before the second batch is ingested (the per-process image caches are then hit); with hard
    negatives every parse still finishes before the first propose. The rows are those of the
    breadth-first order (checked by the batch tests above), and a resumed job offers the items
    furthest along first."""
    from annotator.pipeline import runner

    order: list[tuple[str, tuple[int, ...]]] = []
    original = runner.run_stage_batch

    def recorded(session: object, job_id: int, images: list[int], stage: str) -> None:
        order.append((stage, tuple(images)))
        original(session, job_id, images, stage)  # type: ignore[arg-type]

    monkey = pytest.MonkeyPatch()
    monkey.setattr(runner, "run_stage_batch", recorded)
    try:
        add_dataset(engine, "plain", image_dir, alt_text_file)
        config = make_config(scripted=True, captioner=False, hard_negatives=False, batch_size=2)
        _, status = launch_job(engine, "plain", config)
        assert status == JobStatus.DONE
        first, second = order[0][1], order[5][1]
        assert [stage for stage, _ in order[:5]] == [
            "ingest",
            "parse",
            "propose",
            "verify",
            "route",
        ]
        assert all(images == first for _, images in order[:5])
        assert order[5][0] == "ingest" and not set(first) & set(second)
        assert len(order) == 10

        order.clear()
        add_dataset(engine, "negatives", image_dir, alt_text_file)
        config = make_config(scripted=True, captioner=False, hard_negatives=True, batch_size=2)
        _, status = launch_job(engine, "negatives", config)
        assert status == JobStatus.DONE
        stages = [stage for stage, _ in order]
        assert stages[:4] == ["ingest", "parse", "ingest", "parse"]  # the barrier
        assert stages[4:7] == ["propose", "verify", "route"]  # then depth first again
    finally:
        monkey.undo()

    # A job with images at different stages: the latest stage is offered first.
    add_dataset(engine, "mixed", image_dir, alt_text_file)
    with session_scope(engine) as session:
        job_id = jobs.create_mining_job(
            session, "mixed", make_config(scripted=True, captioner=False, hard_negatives=False)
        ).id
        ids = [image_id for image_id, _ in jobs.next_items(session, job_id)]
        for stage in ("ingest", "parse"):
            run_stage(session, job_id, ids[0], stage)
        assert jobs.next_items(session, job_id, latest_first=True) == [(ids[0], "propose")] + [
            (i, "ingest") for i in ids[1:]
        ]
        assert jobs.next_items(session, job_id, limit=2, latest_first=True) == [
            (ids[0], "propose"),
            (ids[1], "ingest"),
        ]
