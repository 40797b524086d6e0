"""A mining job's configuration: which models, which images, how to route (``jobs.config``).

Everything a stage needs to behave the same on every worker is in here (backend names, model ids,
device, thresholds), so a job's rows depend on its config and its images, not on the settings of
the process that happens to run a stage. :func:`MiningConfig.from_settings` fills the defaults
from the environment (``ANNOTATOR_PROPOSER_MODEL`` ...).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from annotator.config import Settings, get_settings
from annotator.routing import Thresholds

__all__ = ["NO_CAPTIONER", "BackendSpec", "MiningConfig", "RoutingConfig"]

NO_CAPTIONER = "none"


class BackendSpec(BaseModel):
    """One model backend: registry name (or ``module:Class``), model id or path, options.

    ``options`` are passed to the backend's constructor as keyword arguments
    (e.g. ``{"score_threshold": 0.4, "max_instances": 20}`` for the SAM 3 proposer).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    model: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    def key(self) -> tuple[str, str, str]:
        """What identifies the loaded model (the per-process cache key)."""
        return (self.name, self.model or "", repr(sorted(self.options.items())))


class RoutingConfig(BaseModel):
    """Thresholds on verifier ``p_accept`` (see :mod:`annotator.routing`).

    MV: a mask with ``p >= accept_above`` is accepted, ``p <= reject_below`` rejected, otherwise it
    is uncertain (a person decides). EV uses ``ev_accept_above`` / ``ev_reject_below`` (default: the
    MV thresholds). With ``target_precision`` the MV thresholds are fitted on reviewed proposals
    when the job is created (see ``annotator.services.jobs``); ``threshold_source`` records how.
    ``auto_accept`` false: MV accepts no mask (set when no threshold is shown to reach the
    target precision). ``ev_absent_above``: EV's threshold for declaring a phrase absent
    (default ``ev_accept_above``); with ``target_precision`` it is fitted on reviewed pairs
    too, and ``auto_negative`` false (no threshold reaches the target) sends every pair EV
    would declare absent to a person. ``auto_negative_named`` false (the default): only
    hard-negative pairs are declared absent without a person.
    """

    model_config = ConfigDict(extra="forbid")

    accept_above: float = Field(default=0.9, ge=0.0, le=1.0)
    reject_below: float = Field(default=0.1, ge=0.0, le=1.0)
    ev_accept_above: float | None = Field(default=None, ge=0.0, le=1.0)
    ev_reject_below: float | None = Field(default=None, ge=0.0, le=1.0)
    target_precision: float | None = Field(default=None, gt=0.0, le=1.0)
    # True: a pair whose accepted masks EV judges not exhaustive goes to review (a person adds the
    # missing instances). False: it becomes a positive with is_exhaustive = false.
    review_non_exhaustive: bool = True
    auto_accept: bool = True
    ev_absent_above: float | None = Field(default=None, ge=0.0, le=1.0)
    auto_negative: bool = True
    # EV may declare absent a phrase named for the image (caption, alt-text, manual, import), not
    # only a hard-negative candidate (annotator.routing).
    auto_negative_named: bool = False
    threshold_source: str = "configured"

    @model_validator(mode="after")
    def _ordered(self) -> RoutingConfig:
        if self.reject_below >= self.accept_above:
            raise ValueError(
                f"reject_below ({self.reject_below}) must be below accept_above "
                f"({self.accept_above})"
            )
        if self.ev_high <= self.ev_low:
            raise ValueError("ev_reject_below must be below ev_accept_above")
        if self.ev_absent_above is not None and self.ev_absent_above <= self.ev_low:
            raise ValueError("ev_reject_below must be below ev_absent_above")
        return self

    @property
    def ev_high(self) -> float:
        return self.accept_above if self.ev_accept_above is None else self.ev_accept_above

    @property
    def ev_low(self) -> float:
        return self.reject_below if self.ev_reject_below is None else self.ev_reject_below

    def thresholds(self) -> Thresholds:
        """These thresholds as :func:`annotator.routing.route_pair` takes them."""
        return Thresholds(
            accept_above=self.accept_above,
            reject_below=self.reject_below,
            ev_accept_above=self.ev_accept_above,
            ev_reject_below=self.ev_reject_below,
            review_non_exhaustive=self.review_non_exhaustive,
            auto_accept=self.auto_accept,
            ev_absent_above=self.ev_absent_above,
            auto_negative=self.auto_negative,
            auto_negative_named=self.auto_negative_named,
        )


ImageSelection = Literal["new", "all"]


class MiningConfig(BaseModel):
    """What a mining job runs. JSON-serialisable (``model_dump(mode="json")``)."""

    model_config = ConfigDict(extra="forbid")

    proposer: BackendSpec
    # ``None`` (or name "none"): no captioner; concepts come from alt-text only.
    captioner: BackendSpec | None = None
    parser: BackendSpec
    verifier: BackendSpec
    # EV for verifiers that judge masks only (the calibrated verifier): default the VLM verifier.
    pair_verifier: BackendSpec | None = None
    device: Literal["auto", "cpu", "cuda"] | str = "auto"

    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    # Skip the captioner for images that came with alt-text (the alt-text is the concept source).
    caption_when_alt_text: bool = False
    max_concepts: int = Field(default=32, ge=1)
    hard_negatives: bool = True
    hard_negatives_per_concept: int = Field(default=3, ge=1)
    # A hard-negative candidate is kept when one of its masks has IoU >= this with a mask of a
    # concept present in the image (the proposer confuses the two).
    hard_negative_min_iou: float = Field(default=0.5, gt=0.0, le=1.0)
    # "new": images of the dataset no earlier mining job has touched; "all": every image;
    # or explicit image ids.
    images: ImageSelection | list[int] = "new"
    # Attempts per (image, stage) before the item is recorded as failed (transient errors only;
    # a bad image fails at once).
    max_attempts: int = Field(default=3, ge=1)
    # Images per stage task on the Celery workers (and per transaction in-process): one message,
    # one COMMIT and one acknowledgement carry this many images through a stage. 1 = one task
    # per image (the finest-grained retries).
    batch_size: int = Field(default=8, ge=1, le=256)

    @field_validator("captioner", mode="before")
    @classmethod
    def _none_captioner(cls, value: Any) -> Any:
        if value == NO_CAPTIONER or (isinstance(value, dict) and value.get("name") == NO_CAPTIONER):
            return None
        return value

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages this job runs, in order (caption only with a captioner)."""
        from annotator.pipeline.stages import STAGES

        return tuple(s for s in STAGES if s != "caption" or self.captioner is not None)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: Any) -> MiningConfig:
        """Defaults from the environment, then ``overrides`` (``None`` values are ignored).

        Override keys: ``proposer``, ``proposer_model``, ``captioner``, ``captioner_model``,
        ``parser``, ``parser_model``, ``verifier``, ``verifier_model``, ``device``, and any field
        of this class or of :class:`RoutingConfig` (``accept_above``, ``target_precision`` ...).
        """
        s = settings or get_settings()
        o = {k: v for k, v in overrides.items() if v is not None}

        def spec(kind: str) -> BackendSpec:
            return BackendSpec(
                name=o.pop(kind, getattr(s, kind)),
                model=o.pop(f"{kind}_model", getattr(s, f"{kind}_model")),
                options=o.pop(f"{kind}_options", {}),
            )

        data: dict[str, Any] = {
            "proposer": spec("proposer"),
            "parser": spec("parser"),
            "verifier": spec("verifier"),
            "device": o.pop("device", s.device),
            "max_concepts": o.pop("max_concepts", s.max_concepts_per_image),
        }
        captioner = spec("captioner")
        data["captioner"] = None if captioner.name == NO_CAPTIONER else captioner
        routing_fields = set(RoutingConfig.model_fields)
        routing = {k: o.pop(k) for k in list(o) if k in routing_fields}
        data["routing"] = RoutingConfig(**routing)
        data.update(o)
        return cls(**data)
