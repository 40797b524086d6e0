"""The Celery application: Redis broker, queues ``gpu`` and ``cpu``, conventions for every task.

Configuration comes from :class:`annotator.config.Settings` and is read lazily (when Celery first
needs it), never at import time, so importing this module is cheap and tests can point it at
another broker. Conventions (see docs/workers.md):

- Queues: ``gpu`` (model forwards; one process per GPU) and ``cpu`` (decoding, parsing, routing).
  Each task names its queue when it is declared (``workers.tasks.task``); ``task_routes`` is
  built from those declarations, so a producer never needs to know where a task runs.
- Priorities: a task may declare a message priority (0 first, 9 last; :data:`PRIORITY_STEPS`);
  the router sends every message of the task with it. Stage tasks use it to run a job depth
  first: a later stage's message is taken before an earlier stage's (``workers.tasks``).
- ``worker_prefetch_multiplier = 1``: a worker reserves one message per process, so a slow GPU
  task never holds a queue of messages that an idle worker could have taken.
- Late acknowledgement is a per-task choice: only idempotent tasks ack after they finish (a
  worker that dies mid-task leaves its message unacknowledged and Redis delivers it again after
  the visibility timeout).
- No result backend: progress and outcomes live in the ``jobs`` / ``job_items`` tables.
- Periodic tasks (:func:`beat_schedule`) are sent by one ``annotator beat`` process
  (workers/beat.py) and run on the workers like any other task.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from annotator.config import Settings, get_settings

GPU_QUEUE = "gpu"
CPU_QUEUE = "cpu"
QUEUES = (GPU_QUEUE, CPU_QUEUE)

# Filled by ``workers.tasks.task`` as tasks are declared: task name -> queue, and task name ->
# message priority for the tasks that declare one.
TASK_QUEUES: dict[str, str] = {}
TASK_PRIORITIES: dict[str, int] = {}
# Message priorities on the Redis transport: 0 is consumed first, 9 last; a message without a
# priority counts as 0. kombu keeps one Redis list per queue and step (the step-0 list is the
# queue's plain name) and a worker's BRPOP names them step by step, every queue of a step
# before any queue of the next, so a priority orders messages across the queues a worker
# consumes. Every step is its own level here (kombu's default folds 0-9 into 0, 3, 6 and 9).
# Producers and workers must agree on the steps: a worker only reads the steps it knows.
PRIORITY_STEPS = list(range(10))
# kombu's separator between a queue's name and its priority step in the Redis list's name.
PRIORITY_SEP = "\x06\x16"


def queue_keys(queue: str) -> list[str]:
    """The Redis lists holding ``queue``'s waiting messages, first-taken first (what to
    ``LLEN`` to see a queue's backlog: the plain name holds priority 0 only)."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


# The periodic tasks that ``annotator beat`` sends (declared in workers/tasks.py).
REVIEW_SYNC_TASK = "annotator.review.sync"
# Beat wakes up at least this often, whatever its schedule: the heartbeat of workers/beat.py.
BEAT_MAX_LOOP_INTERVAL_S = 30


def _route(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any) -> Any:
    queue = TASK_QUEUES.get(name)
    if not queue:
        return None
    route: dict[str, Any] = {"queue": queue}
    priority = TASK_PRIORITIES.get(name)
    if priority is not None:
        route["priority"] = priority
    return route


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """What ``annotator beat`` sends, and how often (empty when every period is 0).

    ``annotator.review.sync`` every ``ANNOTATOR_REVIEW_SYNC_INTERVAL_S``: a message that no
    worker took within one period expires (the next one does the same work), so stopped workers
    never come back to a backlog of syncs.
    """
    interval = settings.review_sync_interval_s
    if interval <= 0:
        return {}
    return {
        "review-sync": {
            "task": REVIEW_SYNC_TASK,
            "schedule": float(interval),
            "options": {"queue": CPU_QUEUE, "expires": float(interval)},
        }
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for ``settings`` (the broker URL and the time limits come from there)."""
    hard = settings.task_time_limit_s
    visibility = settings.broker_visibility_timeout_s
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": visibility,
            # Sweep for messages of dead workers about ten times per visibility timeout.
            "unacked_restore_interval": max(1, min(60, visibility // 10)),
            "unacked_restore_throttle": 1,
            "priority_steps": PRIORITY_STEPS,
            "sep": PRIORITY_SEP,
        },
        # A publish retries a few times over a few seconds (a Redis restart), then raises.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 5,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 2.0,
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_backend": None,
        "task_ignore_result": True,
        "task_store_errors_even_if_ignored": False,
        "task_queues": [Queue(name, routing_key=name) for name in QUEUES],
        "task_default_queue": CPU_QUEUE,
        "task_routes": (_route,),
        "task_create_missing_queues": False,
        "worker_prefetch_multiplier": 1,
        # Default off; idempotent tasks turn it on where they are declared.
        "task_acks_late": False,
        "task_time_limit": hard,
        "task_soft_time_limit": max(1, hard - min(60, hard // 10)),
        # The ack of a task running when the broker connection drops cannot be sent; cancel
        # the task instead of finishing it (the message is delivered again; tasks are
        # idempotent, so the second run completes the work).
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # GPU workers hold models in memory; recycling a process would reload them.
        "worker_max_tasks_per_child": None,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "enable_utc": True,
        "timezone": "UTC",
        "beat_schedule": beat_schedule(settings),
        "beat_max_loop_interval": BEAT_MAX_LOOP_INTERVAL_S,
    }


app = Celery("annotator", set_as_current=False)
# Evaluated on first use of ``app.conf``; nothing is read at import time.
app.add_defaults(lambda: celery_config(get_settings()))
app.conf.imports = ("workers.tasks",)


def bind_settings(settings: Settings | None = None) -> Celery:
    """Point the app at the broker in ``settings`` (default: the current settings).

    A producer calls this before sending, so a process whose settings changed (tests, a
    long-lived API process reconfigured) never publishes to a stale broker: when the URL
    differs, pooled connections to the old one are closed first.
    """
    settings = settings or get_settings()
    if not settings.broker_url:
        raise RuntimeError("ANNOTATOR_BROKER_URL is not set: there is no broker to send to")
    if app.conf.broker_url != settings.broker_url:
        app.close()
        app.conf.update(celery_config(settings))
    return app
