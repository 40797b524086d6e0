"""The task conventions, without a worker: the decorator (ids only, which errors are retried,
giving up), routing by task name, and enqueue-after-commit against the real Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from annotator.pipeline.stages import STAGES
from tests.workers.conftest import POSTGRES_ONLY
from workers.app import PRIORITY_STEPS, QUEUES, TASK_QUEUES, app, celery_config, queue_keys
from workers.outbox import Outbox, transaction
from workers.tasks import STAGE_PRIORITIES, STAGE_QUEUES, STAGE_TASKS, stage_task_name, task


def _operational() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("server closed the connection"))


def _declare(name: str, body: Callable[..., None], **options: Any) -> Any:
    declared = task(f"tests.workers.{name}", queue="cpu", idempotent=True, **options)(body)
    return declared


def test_tasks_take_integer_ids_only() -> None:
    calls: list[tuple[int, ...]] = []

    def record(*ids: int) -> None:
        calls.append(ids)

    t = _declare("ids_only", record)
    t.apply(args=[1, 2]).get()
    assert calls == [(1, 2)]
    for bad in (["1"], [1.0], [True], [{"id": 1}]):
        result = t.apply(args=bad)
        assert result.failed() and isinstance(result.result, TypeError)
    assert calls == [(1, 2)]


def test_transient_errors_are_retried_then_succeed() -> None:
    attempts: list[int] = []

    def flaky(job_id: int) -> None:
        attempts.append(job_id)
        if len(attempts) < 3:
            raise _operational()

    t = _declare("flaky", flaky)
    result = t.apply(args=[7])  # eager: retries run at once, without the countdown
    assert result.successful(), result.traceback
    assert attempts == [7, 7, 7]


def test_bad_input_is_never_retried() -> None:
    attempts: list[int] = []

    def broken(job_id: int) -> None:
        attempts.append(job_id)
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))

    result = _declare("broken", broken).apply(args=[1])
    assert result.failed() and isinstance(result.result, IntegrityError)
    assert attempts == [1]


def test_retries_are_bounded_and_the_failure_is_recorded() -> None:
    attempts: list[int] = []
    gave_up: list[tuple[int, str]] = []

    def down(job_id: int) -> None:
        attempts.append(job_id)
        raise _operational()

    t = _declare(
        "down",
        down,
        max_retries=2,
        on_give_up=lambda job_id, exc: gave_up.append((job_id, type(exc).__name__)),
    )
    result = t.apply(args=[3])
    assert result.failed() and isinstance(result.result, OperationalError)
    assert attempts == [3, 3, 3]  # the first run and 2 retries
    assert gave_up == [(3, "OperationalError")]


def test_every_stage_has_a_task_routed_to_its_queue() -> None:
    assert set(STAGE_TASKS) == set(STAGES) == set(STAGE_QUEUES)
    for stage, queue in STAGE_QUEUES.items():
        name = stage_task_name(stage)
        assert TASK_QUEUES[name] == queue
        route = app.amqp.router.route({}, name, (1, 2), {})
        assert route["queue"].name == queue
        declared = STAGE_TASKS[stage]
        assert declared.acks_late and not declared.reject_on_worker_lost
    assert {q for q in STAGE_QUEUES.values()} == {"gpu", "cpu"}


def test_conventions_in_the_app_config() -> None:
    from annotator.config import Settings

    conf = celery_config(Settings(broker_url="redis://h:6379/0", task_time_limit_s=600))
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["task_serializer"] == "json" and conf["accept_content"] == ["json"]
    assert conf["result_backend"] is None and conf["task_ignore_result"]
    assert conf["task_acks_late"] is False  # per task, only where idempotent
    assert conf["task_time_limit"] == 600 and conf["task_soft_time_limit"] < 600
    visibility = conf["broker_transport_options"]["visibility_timeout"]
    assert visibility > conf["task_time_limit"]


@POSTGRES_ONLY
def test_messages_are_sent_only_after_commit(
    broker_env: dict[str, str], redis_client: redis.Redis
) -> None:
    name = stage_task_name("propose")
    with pytest.raises(RuntimeError), transaction() as (session, outbox):
        session.execute(text("SELECT 1"))
        outbox.add(name, 1, 2)
        raise RuntimeError("rolled back")
    assert waiting(redis_client, "gpu") == 0
    with transaction() as (session, outbox):
        session.execute(text("SELECT 1"))
        outbox.add(name, 1, 2)
        assert waiting(redis_client, "gpu") == 0  # not before COMMIT
    assert waiting(redis_client, "gpu") == 1
    assert waiting(redis_client, "cpu") == 0


def waiting(client: redis.Redis, queue: str) -> int:
    return sum(int(client.llen(key)) for key in queue_keys(queue))


def test_stage_tasks_are_sent_with_later_stages_first() -> None:
    # Depth first: the later the stage, the sooner its message is taken (0 first).
    priorities = [STAGE_PRIORITIES[stage] for stage in STAGES]
    assert priorities == sorted(priorities, reverse=True) and len(set(priorities)) == len(STAGES)
    for stage in STAGES:
        route = app.amqp.router.route({}, stage_task_name(stage), (1, 2), {})
        assert route["priority"] == STAGE_PRIORITIES[stage]
        assert STAGE_PRIORITIES[stage] in PRIORITY_STEPS
    # Every priority is its own step on the Redis transport (kombu's default folds 1-2 into 0).
    from annotator.config import Settings

    options = celery_config(Settings(broker_url="redis://h:6379/0"))["broker_transport_options"]
    assert options["priority_steps"] == PRIORITY_STEPS == list(range(10))
    with pytest.raises(ValueError, match="priority"):
        task("test.bad_priority", queue="cpu", idempotent=True, priority=10)


@POSTGRES_ONLY
def test_a_worker_takes_later_stages_first_from_redis(
    broker_env: dict[str, str], redis_client: redis.Redis
) -> None:
    # Sent breadth first, as a job's tasks pile up: two ingest batches, then one batch of each
    # later stage. A worker consuming both queues (one message at a time, as with
    # worker_prefetch_multiplier 1 and late acks) takes them latest stage first, across the
    # two queues, and each stage's batches in the order they were sent.
    outbox = Outbox()
    outbox.add(stage_task_name("ingest"), 7, 1)
    outbox.add(stage_task_name("ingest"), 7, 2)
    for stage in STAGES[1:]:
        outbox.add(stage_task_name(stage), 7, 1)
    assert outbox.flush() == 7
    assert sum(waiting(redis_client, q) for q in QUEUES) == 7

    taken: list[tuple[str, list[int]]] = []

    def on_message(body: Any, message: Any) -> None:
        taken.append((message.headers["task"], body[0]))
        message.ack()

    queues = [app.amqp.queues[q] for q in QUEUES]
    with (
        app.connection_for_read() as conn,
        conn.Consumer(queues, callbacks=[on_message], accept=["json"]) as consumer,
    ):
        consumer.qos(prefetch_count=1)
        while len(taken) < 7:
            conn.drain_events(timeout=5)
    expected = [(stage_task_name(s), [7, 1]) for s in reversed(STAGES)]
    expected.append((stage_task_name("ingest"), [7, 2]))
    assert taken == expected
