"""Training examples for the proposer: images with, per phrase, every instance mask.

An :class:`Example` is one image at the model's input size with its phrases: positives carry
their instance masks, negatives (verified absent) carry none. Two sources build them:
:func:`synthetic_examples` (the synthetic world, for the starter model) and
:func:`annotator.training.database.dataset_examples` (a dataset's accepted labels).
:func:`batches` draws seeded training batches from a list of examples.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from annotator.datasets.synthetic import COLOURS, SHAPES, TEXTURES, Scene, make_scene
from annotator.images import ensure_rgb
from annotator.miners.sam3 import Preprocessing

__all__ = [
    "SYNTHETIC_ATTRIBUTE_CLASSES",
    "Batch",
    "Example",
    "attribute_maps",
    "batches",
    "resize_example",
    "synthetic_examples",
]

# Classes per attribute map of a synthetic example (background + the world's values).
SYNTHETIC_ATTRIBUTE_CLASSES: tuple[int, ...] = (
    len(COLOURS) + 1,
    len(SHAPES) + 1,
    len(TEXTURES) + 1,
)


@dataclass
class Example:
    """One image and its phrases at the model's input size.

    ``pixels``: ``(S, S, 3)`` uint8, the image as ``Preprocessing`` resizes it (before
    normalisation). ``phrases``: ``(phrase, masks)`` with ``masks`` ``(G, S, S)`` bool; ``G = 0``
    for a negative phrase. ``attributes``: where the source knows what each pixel shows (the
    synthetic world does), ``(A, S, S)`` uint8 class maps, one per attribute (colour, shape,
    texture; 0 = background), for the trainer's dense auxiliary loss; ``None`` otherwise.
    """

    pixels: np.ndarray
    phrases: list[tuple[str, np.ndarray]]
    attributes: np.ndarray | None = None

    @property
    def positives(self) -> list[int]:
        return [i for i, (_, m) in enumerate(self.phrases) if len(m)]

    @property
    def negatives(self) -> list[int]:
        return [i for i, (_, m) in enumerate(self.phrases) if not len(m)]


def resize_example(
    image: Image.Image,
    phrases: Sequence[tuple[str, Sequence[np.ndarray]]],
    preprocessing: Preprocessing,
) -> Example:
    """An :class:`Example` from an image of any size and full-size ``(H, W)`` bool masks.

    The image goes through the checkpoint's own ``Preprocessing`` (as at inference) and is kept
    as the uint8 values it produces; masks are resized bilinearly and thresholded at 0.5.
    """
    size = (preprocessing.height, preprocessing.width)
    pixels = preprocessing(ensure_rgb(image), torch.device("cpu"), torch.float32)[0]
    # Undo rescale + normalise: Preprocessing rounds to integers before them, so this is exact.
    mean = torch.tensor(preprocessing.image_mean).view(3, 1, 1)
    std = torch.tensor(preprocessing.image_std).view(3, 1, 1)
    if preprocessing.do_normalize:
        pixels = pixels * std + mean
    if preprocessing.do_rescale:
        pixels = pixels / preprocessing.rescale_factor
    uint8 = pixels.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    out: list[tuple[str, np.ndarray]] = []
    for phrase, masks in phrases:
        if len(masks) == 0:
            out.append((phrase, np.zeros((0, *size), dtype=bool)))
            continue
        stack = torch.from_numpy(np.stack([np.asarray(m, dtype=np.float32) for m in masks]))
        if tuple(stack.shape[-2:]) != size:
            stack = F.interpolate(stack[None], size=size, mode="bilinear", align_corners=False)[0]
        resized = (stack > 0.5).numpy()
        keep = resized.reshape(len(resized), -1).any(1)  # an instance too small to survive
        out.append((phrase, resized[keep]))
    return Example(pixels=np.ascontiguousarray(uint8), phrases=out)


def synthetic_examples(
    start: int, count: int, preprocessing: Preprocessing, *, scene_size: int | None = None
) -> list[Example]:
    """Examples of synthetic scenes ``start .. start + count - 1``: every present phrase with
    its instances, and the scene's true negatives (hard ones included)."""
    size = scene_size or preprocessing.height
    examples = []
    for seed in range(start, start + count):
        scene = make_scene(seed, size=size)
        phrases: list[tuple[str, Sequence[np.ndarray]]] = [
            (p, scene.masks_of(p)) for p in scene.positives
        ]
        phrases += [(p, []) for p in scene.negatives]
        example = resize_example(scene.image, phrases, preprocessing)
        example.attributes = attribute_maps(scene, example.pixels.shape[:2])
        examples.append(example)
    return examples


def attribute_maps(scene: Scene, size: tuple[int, int]) -> np.ndarray:
    """``(3, H, W)`` uint8: per pixel, the colour, shape and texture index (+ 1; 0 where no
    object is visible) of the object it shows, resized (nearest) to ``size``."""
    colours, shapes, textures = list(COLOURS), list(SHAPES), list(TEXTURES)
    maps = np.zeros((3, *scene.size), dtype=np.uint8)
    for obj in scene.objects:
        maps[0][obj.mask] = colours.index(obj.colour) + 1
        maps[1][obj.mask] = shapes.index(obj.shape) + 1
        maps[2][obj.mask] = textures.index(obj.texture) + 1
    if tuple(size) != scene.size:
        maps = np.stack(
            [
                np.asarray(Image.fromarray(m).resize(size[::-1], Image.Resampling.NEAREST))
                for m in maps
            ]
        )
    return maps


@dataclass
class Batch:
    """Model inputs and targets: ``pixels`` ``(B, 3, S, S)`` normalised float32; ``rows``: per
    image-phrase row, its image index in the batch, phrase and ``(G, S, S)`` float32 masks;
    ``attributes``: ``(B, A, S, S)`` int64 class maps when every image of the batch has them."""

    pixels: torch.Tensor
    image_index: torch.Tensor
    phrases: list[str]
    masks: list[torch.Tensor]
    # Per image: its example's index in the examples the batch was drawn from, and whether it
    # was flipped left-right.
    sources: tuple[tuple[int, bool], ...]
    attributes: torch.Tensor | None = None


def _normalise(pixels: np.ndarray, preprocessing: Preprocessing) -> torch.Tensor:
    tensor = torch.from_numpy(pixels).permute(2, 0, 1).float()
    if preprocessing.do_rescale:
        tensor = tensor * preprocessing.rescale_factor
    if preprocessing.do_normalize:
        mean = torch.tensor(preprocessing.image_mean).view(3, 1, 1)
        std = torch.tensor(preprocessing.image_std).view(3, 1, 1)
        tensor = (tensor - mean) / std
    return tensor


def batches(
    examples: Sequence[Example],
    preprocessing: Preprocessing,
    *,
    images_per_batch: int,
    phrases_per_image: int,
    seed: int,
    start_step: int = 0,
    flip: bool = True,
) -> Iterator[Batch]:
    """Endless seeded batches: ``images_per_batch`` random examples, each with up to
    ``phrases_per_image`` phrases (at most half negatives when it has positives), randomly
    flipped left-right. Batch ``k`` depends only on ``seed`` and ``k`` (resuming at
    ``start_step`` continues the same sequence)."""
    if not examples:
        raise ValueError("no training examples")
    step = start_step
    while True:
        rng = np.random.default_rng([seed, step])
        chosen = rng.choice(len(examples), size=min(images_per_batch, len(examples)), replace=False)
        pixels: list[torch.Tensor] = []
        image_index: list[int] = []
        phrases: list[str] = []
        masks: list[torch.Tensor] = []
        attributes: list[np.ndarray] = []
        sources: list[tuple[int, bool]] = []
        for b, k in enumerate(chosen):
            example = examples[int(k)]
            flipped = flip and bool(rng.random() < 0.5)
            sources.append((int(k), flipped))
            image = example.pixels[:, ::-1] if flipped else example.pixels
            pixels.append(_normalise(np.ascontiguousarray(image), preprocessing))
            if example.attributes is not None:
                maps = example.attributes[:, :, ::-1] if flipped else example.attributes
                attributes.append(maps)
            pos, neg = example.positives, example.negatives
            n_neg = min(len(neg), phrases_per_image // 2 if pos else phrases_per_image)
            n_pos = min(len(pos), phrases_per_image - n_neg)
            n_neg = min(len(neg), phrases_per_image - n_pos)
            picked = list(rng.permutation(pos)[:n_pos]) + list(rng.permutation(neg)[:n_neg])
            for i in picked:
                phrase, m = example.phrases[int(i)]
                m = m[:, :, ::-1] if flipped else m
                phrases.append(phrase)
                masks.append(torch.from_numpy(np.ascontiguousarray(m)).float())
                image_index.append(b)
        yield Batch(
            pixels=torch.stack(pixels),
            image_index=torch.tensor(image_index, dtype=torch.long),
            phrases=phrases,
            masks=masks,
            sources=tuple(sources),
            attributes=torch.from_numpy(np.stack(attributes)).long()
            if len(attributes) == len(chosen)
            else None,
        )
        step += 1
