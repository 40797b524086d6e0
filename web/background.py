"""Work the API starts and does not wait for: mining jobs and exports.

Without a broker a mining job runs in this process, on one background thread (jobs run one
after another, so a model is loaded once and the request threads stay free); with
``ANNOTATOR_BROKER_URL`` its items are enqueued for the Celery workers. Exports run on their own
thread, so an export is not stuck behind a long mining job.

Work is submitted only after the request that created the job committed (FastAPI background
tasks run after the response), so a thread never looks for a row that was rolled back.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import Engine

from annotator.db.models import JobStatus

__all__ = ["BackgroundRunner"]

log = logging.getLogger(__name__)


class BackgroundRunner:
    def __init__(self, engine: Engine, media_root: Path, broker_url: str | None) -> None:
        self.engine = engine
        self.media_root = media_root
        self.broker_url = broker_url
        self._mining = ThreadPoolExecutor(max_workers=1, thread_name_prefix="annotator-job")
        self._exports = ThreadPoolExecutor(max_workers=1, thread_name_prefix="annotator-export")

    def run_mining(self, job_id: int) -> Future[JobStatus]:
        """Run (inline) or enqueue (broker) the ready items of a queued mining job."""
        return self._mining.submit(self._mining_job, job_id)

    def _mining_job(self, job_id: int) -> JobStatus:
        try:
            if self.broker_url:
                from annotator.db import mining
                from annotator.db.session import session_scope
                from workers.tasks import enqueue_job

                enqueue_job(job_id, self.engine)
                with session_scope(self.engine) as session:
                    return mining.job_status(session, job_id)
            from annotator.pipeline.runner import run_job_inline

            return run_job_inline(self.engine, job_id)
        except Exception:
            log.exception("mining job %s stopped with an error", job_id)
            raise

    def run_export(self, job_id: int) -> Future[JobStatus]:
        from annotator.services.export_jobs import run_export

        return self._exports.submit(run_export, self.engine, job_id, self.media_root)

    def shutdown(self, wait: bool = False) -> None:
        self._mining.shutdown(wait=wait, cancel_futures=True)
        self._exports.shutdown(wait=wait, cancel_futures=True)
