"""Celery app and thin task wrappers around the pipeline stages (see docs; mining issue)."""
