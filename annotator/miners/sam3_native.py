"""SAM 3 mask proposer on the official ``sam3`` package (CUDA hosts only; extra ``[sam3]``).

The official code builds its model with ``build_sam3_image_model`` and runs it through its own
``Sam3Processor``: ``set_image`` runs the backbone once and keeps its output in a state dict,
``set_text_prompt`` encodes one phrase and runs the grounding head. It hard-codes ``cuda`` in
several places (position encodings, the decoder, pinned memory), so it cannot run on a CPU-only
host; on such a host, or without the package, this backend fails on ``__enter__`` with a
message that names the fix. Outputs match :class:`annotator.miners.sam3.Sam3Proposer`.

The package's processor does not expose the presence score it multiplies into the instance
scores, so each phrase goes through the same calls ``set_text_prompt`` makes
(``backbone.forward_text`` then ``model.forward_grounding``) and the scores are formed here.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import torch
from PIL import Image

from annotator import masks as mask_ops
from annotator import modeling
from annotator.backends import PhraseProposals
from annotator.config import get_settings
from annotator.errors import ModelLoadError
from annotator.images import ensure_rgb

__all__ = ["NativeSam3Proposer"]

CHECKPOINT_NAME = "sam3.pt"
BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
INSTALL_HINT = "pip install 'annotator[sam3]'"


def _build_official(
    source: str,
    *,
    checkpoint_path: str | None,
    bpe_path: str,
    device_name: str,
    resolution: int,
    confidence_threshold: float,
) -> Any:
    """The official model wrapped in its processor (``source`` only keys the process cache)."""
    builder = importlib.import_module("sam3.model_builder")
    processor_module = importlib.import_module("sam3.model.sam3_image_processor")
    model = builder.build_sam3_image_model(
        bpe_path=bpe_path,
        device=device_name,
        checkpoint_path=checkpoint_path,
        load_from_HF=checkpoint_path is None,
    )
    return processor_module.Sam3Processor(
        model,
        resolution=resolution,
        device=device_name,
        confidence_threshold=confidence_threshold,
    )


class NativeSam3Proposer:
    """Every instance of each phrase, from the official SAM 3 implementation (CUDA only).

    Args:
        model: ``facebook/sam3`` (downloaded by the package through the hub cache), a local
            directory holding ``sam3.pt`` (and optionally the BPE vocabulary), or a ``.pt`` file.
        device: must resolve to a CUDA device.
        bpe_path: the CLIP BPE vocabulary (``bpe_simple_vocab_16e6.txt.gz``); found in the
            package or next to the checkpoint when omitted (the PyPI wheel 0.1.4 lacks it).
        score_threshold, mask_threshold, max_instances: as for ``Sam3Proposer``.
    """

    name = "sam3-native"

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        bpe_path: str | None = None,
        score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
        max_instances: int | None = None,
        resolution: int = 1008,
    ) -> None:
        settings = get_settings()
        self.source = model or settings.proposer_model
        self.device_setting = device or settings.device
        self.bpe_path = bpe_path
        self.score_threshold = score_threshold
        self.mask_threshold = mask_threshold
        self.max_instances = max_instances
        self.resolution = resolution
        self._processor: Any = None
        self._version: str | None = None

    @property
    def model_version(self) -> str:
        """``"<model>@<hash>"`` of the checkpoint, as for the transformers backend."""
        if self._version is None:
            self._version = modeling.model_version(self._checkpoint_dir() or self.source)
        return self._version

    def _checkpoint_dir(self) -> str | None:
        path = Path(self.source).expanduser()
        if path.is_file():
            return str(path.parent)
        return str(path) if path.is_dir() else None

    def _checkpoint_path(self) -> str | None:
        """``None`` means: let the package download ``facebook/sam3`` itself."""
        path = Path(self.source).expanduser()
        if path.is_file():
            return str(path)
        if path.is_dir():
            candidate = path / CHECKPOINT_NAME
            if not candidate.is_file():
                raise ModelLoadError(
                    f"cannot load the official SAM 3 model: {self.source!r} has no "
                    f"{CHECKPOINT_NAME} "
                    f"(download it with `huggingface-cli download facebook/sam3 {CHECKPOINT_NAME} "
                    "--local-dir DIR`)"
                )
            return str(candidate)
        if self.source != "facebook/sam3":
            raise ModelLoadError(
                f"cannot load the official SAM 3 model from {self.source!r}: pass facebook/sam3, "
                f"a directory holding {CHECKPOINT_NAME}, or the .pt file itself"
            )
        return None

    def _bpe(self, package_root: Path) -> str:
        candidates = [Path(self.bpe_path).expanduser()] if self.bpe_path else []
        candidates.append(package_root / "assets" / BPE_NAME)
        if self._checkpoint_dir():
            candidates.append(Path(str(self._checkpoint_dir())) / BPE_NAME)
        for candidate in candidates:
            if candidate.is_file():
                return str(candidate)
        raise ModelLoadError(
            f"the official SAM 3 package needs its BPE vocabulary {BPE_NAME}, which is not in "
            f"{', '.join(str(c) for c in candidates)}; copy it from the sam3 GitHub repository "
            "(sam3/assets/) next to the checkpoint or pass bpe_path"
        )

    def load(self) -> None:
        """Build the official model once per process (CUDA only)."""
        if self._processor is not None:
            return
        problems: list[str] = []
        if not torch.cuda.is_available():
            problems.append(
                "it needs a CUDA GPU (the official sam3 code hard-codes cuda and cannot run on "
                "CPU); on this host use the 'sam3' proposer (transformers), or run this stage on "
                "a GPU worker"
            )
        try:
            sam3_package = importlib.import_module("sam3")
        except ImportError as exc:
            problems.append(f"the official sam3 package is not installed ({exc}): {INSTALL_HINT}")
        if problems:
            raise ModelLoadError("cannot use the 'sam3-native' proposer: " + "; ".join(problems))
        device = modeling.resolve_device(self.device_setting)
        if device.type != "cuda":
            raise ModelLoadError(
                f"the 'sam3-native' proposer needs a CUDA device, but ANNOTATOR_DEVICE resolves "
                f"to {device}; set it to cuda or auto, or use the 'sam3' proposer"
            )
        package_root = Path(str(importlib.resources.files(sam3_package)))
        checkpoint = self._checkpoint_path()
        bpe = self._bpe(package_root)

        self._processor = modeling.load_pretrained(
            _build_official,
            self._checkpoint_dir() or self.source,
            what="the official SAM 3 model",
            needs_weights=False,
            checkpoint_path=checkpoint,
            bpe_path=bpe,
            device_name=str(device),
            resolution=self.resolution,
            confidence_threshold=self.score_threshold,
        )

    def __enter__(self) -> Self:
        self.load()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._processor = None

    @torch.inference_mode()
    def propose(self, image: Image.Image, phrases: Sequence[str]) -> list[PhraseProposals]:
        """Every instance of each phrase: backbone once (``set_image``), phrases one at a time."""
        self.load()
        processor = self._processor
        image = ensure_rgb(image)
        width, height = image.size
        state = processor.set_image(image)
        model = processor.model
        results: list[PhraseProposals] = []
        for phrase in phrases:
            state["backbone_out"].update(
                model.backbone.forward_text([phrase], device=processor.device)
            )
            outputs = model.forward_grounding(
                backbone_out=state["backbone_out"],
                find_input=processor.find_stage,
                geometric_prompt=model._get_dummy_prompt(),
                find_target=None,
            )
            results.append(self._post_process(outputs, phrase, height, width))
        return results

    def _post_process(
        self, outputs: dict[str, torch.Tensor], phrase: str, height: int, width: int
    ) -> PhraseProposals:
        # pred_logits (1, Q, 1), presence_logit_dec (1, 1), pred_boxes (1, Q, 4) cxcywh in [0, 1],
        # pred_masks (1, Q, h, w) logits: the tensors the official processor reads.
        presence = outputs["presence_logit_dec"].float().sigmoid().reshape(-1)[0]
        scores = outputs["pred_logits"].float().sigmoid().reshape(-1) * presence
        keep = torch.nonzero(scores > self.score_threshold).squeeze(1)
        kept_scores, order = scores[keep].sort(descending=True)
        keep = keep[order]
        if self.max_instances is not None:
            keep, kept_scores = keep[: self.max_instances], kept_scores[: self.max_instances]
        cxcywh = outputs["pred_boxes"][0, keep].float()
        scale = torch.tensor([width, height, width, height], device=cxcywh.device)
        xywh = torch.cat([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, 2:]], dim=1) * scale
        logits = outputs["pred_masks"][0, keep].float()
        rles: list[mask_ops.RLE] = []
        step = max(1, (64 * 1024 * 1024) // (height * width))
        for start in range(0, logits.shape[0], step):
            resized = torch.nn.functional.interpolate(
                logits[start : start + step, None],
                size=(height, width),
                mode="bilinear",
                align_corners=False,
            )[:, 0]
            # The official processor thresholds sigmoid(resized logits) at 0.5.
            rles.extend(
                mask_ops.encode_many((resized.sigmoid() > self.mask_threshold).cpu().numpy())
            )
        return PhraseProposals(
            phrase=phrase,
            masks=rles,
            boxes=xywh.cpu().numpy().astype(np.float32).reshape(-1, 4),
            scores=kept_scores.cpu().numpy().astype(np.float32),
            presence=float(presence),
        )
