"""Model contracts and the backend registry.

Every backend is a context manager: constructing it is cheap (it records where to load from);
the weights are loaded on ``__enter__`` (or first use), once per process, never at import time.
Each has a ``model_version`` string (model id + checkpoint hash) that is recorded with its
outputs as provenance.

Backends are named in settings or job configuration. A name is either a short name from
``REGISTRY`` (``"sam3"``) or a dotted path ``"package.module:ClassName"``, so a new backend needs
no change here.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Protocol, Self, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

    from annotator.masks import RLE

BackendKind = Literal["proposer", "captioner", "parser", "verifier"]


@dataclass
class PhraseProposals:
    """What a proposer found for one phrase in one image.

    ``masks`` are COCO compressed RLEs sized to the original image; ``boxes`` is ``(K, 4)``
    float32 ``xywh`` in pixels; ``scores`` is ``(K,)`` float32 in [0, 1] (detection score times
    presence, as SAM 3 reports); ``presence`` is the image-level probability that the phrase is
    present at all. Instances are ordered by descending score.
    """

    phrase: str
    masks: list[RLE]
    boxes: np.ndarray
    scores: np.ndarray
    presence: float


@dataclass
class MaskQuery:
    """One mask-verification (MV) question: is ``mask`` a correct instance of ``phrase``?"""

    image: Image
    phrase: str
    mask: RLE


@dataclass
class PairQuery:
    """One exhaustivity-verification (EV) question: do ``masks`` cover every ``phrase``?"""

    image: Image
    phrase: str
    masks: list[RLE] = field(default_factory=list)


@dataclass
class Verdict:
    """A verifier's answer: the chosen label and the probability that the item is accepted."""

    label: str
    p_accept: float


class NothingToLoad:
    """Lifecycle of a backend that holds no model (rules, stored scores): entering and leaving
    it do nothing."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class LazyModelBackend:
    """Shared lifecycle of backends that load a checkpoint from ``self.source``.

    Subclasses implement ``load()`` (idempotent; weights come from the per-process cache in
    :mod:`annotator.modeling`) and ``release()`` (let go of this instance's references).
    """

    source: str
    _version: str | None = None

    @property
    def model_version(self) -> str:
        """``"<model>@<hash>"`` of the checkpoint (hub commit or hash of the weight files)."""
        if self._version is None:
            from annotator import modeling  # imports torch: only when a version is asked for

            self._version = modeling.model_version(self.source)
        return self._version

    def load(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.load()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Backend(Protocol):
    """Common to all backends: a lazily-loading context manager with a version string."""

    @property
    def model_version(self) -> str: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class MaskProposer(Backend, Protocol):
    """Proposes every instance of each phrase (one vision pass per image, phrases batched)."""

    def propose(self, image: Image, phrases: Sequence[str]) -> list[PhraseProposals]: ...


@runtime_checkable
class Captioner(Backend, Protocol):
    """Describes images; one caption per image."""

    def caption(self, images: Sequence[Image]) -> list[str]: ...


@runtime_checkable
class ConceptParser(Backend, Protocol):
    """Turns captions (or alt-text) into raw noun phrases, one list per caption."""

    def parse(self, captions: Sequence[str]) -> list[list[str]]: ...


@runtime_checkable
class Verifier(Backend, Protocol):
    """Mask verification (MV) and exhaustivity verification (EV)."""

    def verify_masks(self, queries: Sequence[MaskQuery]) -> list[Verdict]: ...

    def verify_pairs(self, queries: Sequence[PairQuery]) -> list[Verdict]: ...


# Short names -> dotted paths. Data, not imports: nothing heavy loads until a backend is asked for.
REGISTRY: dict[BackendKind, dict[str, str]] = {
    "proposer": {
        "sam3": "annotator.miners.sam3:Sam3Proposer",
        "sam3-native": "annotator.miners.sam3_native:NativeSam3Proposer",
    },
    "captioner": {"vlm": "annotator.miners.captioner:VlmCaptioner"},
    "parser": {
        "offline": "annotator.miners.parsers:OfflineParser",
        "llm": "annotator.miners.parsers:LlmParser",
    },
    "verifier": {
        "vlm": "annotator.verifiers.vlm:VlmVerifier",
        "calibrated": "annotator.verifiers.calibrated:CalibratedVerifier",
        "scores": "annotator.verifiers.scores:ScoreVerifier",
    },
}


class UnknownBackendError(ValueError):
    """A backend name that is neither registered nor an importable dotted path."""


def resolve_backend(kind: BackendKind, name: str) -> type:
    """The class behind a backend name (short name from ``REGISTRY`` or ``module:Class``)."""
    target = REGISTRY.get(kind, {}).get(name, name)
    if ":" not in target:
        known = ", ".join(sorted(REGISTRY.get(kind, {})))
        raise UnknownBackendError(
            f"unknown {kind} backend {name!r}: use one of {known} or a dotted path 'module:Class'"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownBackendError(
            f"{kind} backend {name!r} cannot be imported from {module_name!r}: {exc}"
        ) from exc
    try:
        cls: type = getattr(module, attr)
    except AttributeError as exc:
        raise UnknownBackendError(f"{module_name!r} has no {kind} backend class {attr!r}") from exc
    return cls
