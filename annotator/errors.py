"""Every error the engine raises on purpose, in one place.

::

    AnnotatorError                  base; the CLI prints its message and exits 1
    ├── ConfigError                 settings that cannot work (bad URL, missing secret)
    ├── DatabaseNotReadyError       schema missing or behind: run `annotator db upgrade`
    ├── NotFoundError               a dataset, version, job ... that does not exist
    ├── ConflictError               would break an invariant (duplicate name, pair exists)
    ├── InvalidInputError           bad user input (a file, an entry); nothing was written
    │   └── ImageDecodeError        image bytes that cannot be decoded
    ├── ModelLoadError              a checkpoint that cannot be loaded (offline, gated, no weights)
    └── ExternalServiceError        Label Studio / broker unreachable or answering errors

The web layer maps these to HTTP status codes (404, 409, 422, 503 ...).
"""

from __future__ import annotations


class AnnotatorError(Exception):
    """Base class: an error whose message is meant for the user."""


class ConfigError(AnnotatorError):
    """Settings that cannot work."""


class DatabaseNotReadyError(AnnotatorError):
    """The database schema is missing or older than this code."""


class NotFoundError(AnnotatorError):
    """A named object does not exist."""


class ConflictError(AnnotatorError):
    """The operation would break an invariant (a unique name, an existing pair)."""


class InvalidInputError(AnnotatorError):
    """Bad input: the message names the entry and what is wrong with it."""


class ImageDecodeError(InvalidInputError):
    """Image bytes that cannot be decoded."""


class ModelLoadError(AnnotatorError):
    """A model checkpoint that cannot be loaded; the message says what to do."""


class ExternalServiceError(AnnotatorError):
    """An external service (Label Studio, the broker) failed or could not be reached."""
