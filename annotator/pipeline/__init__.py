"""The mining pipeline: stage functions, per-process model backends, the in-process runner.

Public surface (stable; the Celery tasks in ``workers/`` wrap these):

* :mod:`annotator.pipeline.stages` — ``STAGES`` and one function per stage,
  ``stage(session, job_id, image_id) -> None``, plus :func:`~annotator.pipeline.stages.run_stage`.
* :mod:`annotator.pipeline.backends` — :func:`~annotator.pipeline.backends.get_backends`: the
  job's models, loaded once per process.
* :mod:`annotator.pipeline.runner` — :func:`~annotator.pipeline.runner.run_job_inline` and
  :func:`~annotator.pipeline.runner.launch_job` (what ``annotator mine`` calls).
"""
