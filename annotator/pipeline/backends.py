"""A job's model backends, loaded once per process.

A GPU worker runs many jobs' stage items; :func:`get_backends` hands every item of the same models
the same :class:`Backends`, whose members are constructed and entered (weights loaded) on first
use and then kept for the life of the process. Keyed by backend names, model ids, options and
device, so two jobs with the same models share them and a job with other models gets its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from annotator.backends import (
    BackendKind,
    Captioner,
    ConceptParser,
    MaskProposer,
    Verifier,
    resolve_backend,
)
from annotator.errors import ConfigError
from annotator.pipeline.config import BackendSpec, MiningConfig

__all__ = ["Backends", "Role", "clear_backends", "get_backends"]

Role = Literal["proposer", "captioner", "parser", "verifier", "ev"]

# Constructors of these accept ``device=``; the others (offline parser, calibrated) do not.
_NO_DEVICE = {"offline", "calibrated"}
_CAPPED_PARSERS = {"offline", "llm"}


def _construct(kind: BackendKind, spec: BackendSpec, device: str, **extra: Any) -> Any:
    cls = resolve_backend(kind, spec.name)
    kwargs: dict[str, Any] = {**spec.options, **extra}
    if spec.name not in _NO_DEVICE and "device" not in kwargs:
        kwargs["device"] = device
    try:
        if spec.name == "offline":
            return cls(**kwargs)
        return cls(spec.model, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"cannot construct the {kind} backend {spec.name!r}: {exc}") from exc


@dataclass
class Backends:
    """The models of one job configuration; each is loaded on first access."""

    config: MiningConfig
    _loaded: dict[str, Any] = field(default_factory=dict)
    _versions: dict[str, str] = field(default_factory=dict)
    _lock: Any = field(default_factory=threading.RLock)

    def _get(self, name: str, build: Any) -> Any:
        with self._lock:
            if name not in self._loaded:
                backend = build()
                backend.__enter__()
                self._loaded[name] = backend
            return self._loaded[name]

    @property
    def proposer(self) -> MaskProposer:
        c = self.config
        return cast(
            MaskProposer,
            self._get("proposer", lambda: _construct("proposer", c.proposer, c.device)),
        )

    @property
    def captioner(self) -> Captioner | None:
        c = self.config
        if c.captioner is None:
            return None
        spec = c.captioner
        return cast(
            Captioner, self._get("captioner", lambda: _construct("captioner", spec, c.device))
        )

    @property
    def parser(self) -> ConceptParser:
        c = self.config
        extra = {"max_per_image": c.max_concepts} if c.parser.name in _CAPPED_PARSERS else {}
        return cast(
            ConceptParser,
            self._get("parser", lambda: _construct("parser", c.parser, c.device, **extra)),
        )

    @property
    def verifier(self) -> Verifier:
        c = self.config

        def build() -> Any:
            extra: dict[str, Any] = {}
            if c.pair_verifier is not None:
                extra["pair_verifier"] = _construct("verifier", c.pair_verifier, c.device)
            return _construct("verifier", c.verifier, c.device, **extra)

        return cast(Verifier, self._get("verifier", build))

    def model_version(self, role: Role) -> str:
        """The ``model_version`` of a role without loading weights (it hashes the checkpoint).

        ``"ev"`` is the version recorded on EV rows: the pair verifier's when one is configured,
        else the verifier's.
        """
        c = self.config
        with self._lock:
            if role not in self._versions:
                specs: dict[Role, tuple[BackendKind, BackendSpec | None]] = {
                    "proposer": ("proposer", c.proposer),
                    "captioner": ("captioner", c.captioner),
                    "parser": ("parser", c.parser),
                    "verifier": ("verifier", c.verifier),
                    "ev": ("verifier", c.pair_verifier or c.verifier),
                }
                role_spec = specs[role]
                kind, spec = role_spec
                if spec is None:
                    raise ConfigError(f"this job has no {role} backend")
                self._versions[role] = str(_construct(kind, spec, c.device).model_version)
            return self._versions[role]

    def close(self) -> None:
        with self._lock:
            for backend in self._loaded.values():
                backend.__exit__(None, None, None)
            self._loaded.clear()


_cache: dict[tuple[Any, ...], Backends] = {}
_cache_lock = threading.Lock()


def _key(config: MiningConfig) -> tuple[Any, ...]:
    specs = (
        config.proposer,
        config.captioner,
        config.parser,
        config.verifier,
        config.pair_verifier,
    )
    return (
        tuple(s.key() if s is not None else None for s in specs),
        config.device,
        config.max_concepts,
    )


def get_backends(job_config: MiningConfig | dict[str, Any]) -> Backends:
    """The process-wide :class:`Backends` for a job configuration (a dict is validated first)."""
    config = (
        job_config
        if isinstance(job_config, MiningConfig)
        else MiningConfig.model_validate(job_config)
    )
    key = _key(config)
    with _cache_lock:
        backends = _cache.get(key)
        if backends is None:
            backends = _cache[key] = Backends(config)
        return backends


def clear_backends() -> None:
    """Release every cached backend (tests; freeing GPU memory)."""
    with _cache_lock:
        for backends in _cache.values():
            backends.close()
        _cache.clear()
