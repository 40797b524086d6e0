"""Enqueue after commit: messages are collected during a transaction and sent once it commits.

A worker must never receive the id of a row that was rolled back, nor miss one that was
committed. So nothing is published inside a transaction: code adds messages to an
:class:`Outbox` and :func:`transaction` publishes them after ``COMMIT`` succeeds (and drops
them when the transaction fails). A crash between the commit and the publish loses messages,
never rows; a late-acknowledged task that crashed there is delivered again and re-sends them
(its stage returns early), and ``annotator jobs resume`` re-sends whatever is still unfinished.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from annotator.db.session import session_scope


@dataclass
class Outbox:
    """Messages (task name, integer ids) waiting for their transaction to commit."""

    messages: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)

    def add(self, task_name: str, *ids: int) -> None:
        self.messages.append((task_name, ids))

    def __len__(self) -> int:
        return len(self.messages)

    def flush(self) -> int:
        """Publish every message on one pooled connection; returns how many were sent."""
        if not self.messages:
            return 0
        from workers.app import bind_settings

        app = bind_settings()
        sent = 0
        with app.producer_or_acquire() as producer:
            for name, ids in self.messages:
                app.send_task(name, args=list(ids), producer=producer)
                sent += 1
        self.messages.clear()
        return sent


@contextmanager
def transaction(engine: Engine | None = None) -> Iterator[tuple[Session, Outbox]]:
    """One transaction and its outbox: commit, then publish. On error: roll back, send nothing."""
    outbox = Outbox()
    with session_scope(engine) as session:
        yield session, outbox
    outbox.flush()
