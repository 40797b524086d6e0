"""A synthetic world of coloured, textured shapes with exact instance masks (pure, seeded).

No SAM 3 weights can be downloaded here, so the project trains its own small proposer on this
world, and the demo mines it. Each :class:`Scene` is an RGB image of a few objects (a shape with a
colour, a size and a texture) on a varied background, drawn back to front so later objects occlude
earlier ones; every object's mask is its *visible* pixels after occlusion, exact by construction
(the pixels are painted through the same masks). A scene comes with an alt-text caption that names
what is present, the phrases that are present with their instances, and true negatives: absent
phrases, hard ones first (same shape in another colour, same colour on another shape).

Phrases are ``"<colour> <shape>"`` (every object of that colour and shape, any texture) and
``"<texture> <shape>"`` for the patterned textures (``"striped square"``: every striped square,
any colour). :func:`instances_of` is the single definition of which objects a phrase names.

Everything is a function of the seed: ``make_scene(seed)`` returns the same pixels and masks on
every machine (numpy's PCG64 and PIL's non-antialiased polygon fill).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "COLOURS",
    "SHAPES",
    "TEXTURES",
    "Scene",
    "WorldObject",
    "all_phrases",
    "instances_of",
    "make_scene",
    "make_scenes",
    "vocabulary",
]

# Colour names and their RGB; far apart so a name is unambiguous under the textures' shading.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 50, 170),
    "orange": (245, 130, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond")
# "plain" is not said in phrases; the patterned textures are.
TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted")
PATTERNED: tuple[str, ...] = ("striped", "dotted")

_NUMBERS = ("", "a", "two", "three", "four", "five", "six")


@dataclass(frozen=True)
class WorldObject:
    """One object: what it is and where (``mask`` is ``(H, W)`` bool, visible pixels only)."""

    shape: str
    colour: str
    texture: str
    mask: np.ndarray = field(repr=False, compare=False)

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass(frozen=True)
class Scene:
    """One generated image with its ground truth.

    ``objects`` are in drawing order (back to front) with their visible masks; ``positives``
    maps each present phrase to the indices of its objects; ``negatives`` are absent phrases,
    hardest first; ``alt_text`` names the present objects as a person might.
    """

    seed: int
    image: Image.Image = field(repr=False)
    objects: list[WorldObject] = field(repr=False)
    alt_text: str
    positives: dict[str, list[int]]
    negatives: list[str]

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.image.height, self.image.width

    def masks_of(self, phrase: str) -> list[np.ndarray]:
        """The instance masks (``(H, W)`` bool each) a phrase names in this scene (``[]`` when
        it is absent)."""
        return [self.objects[i].mask for i in instances_of(phrase, self.objects)]

    @property
    def file_name(self) -> str:
        return f"scene-{self.seed:06d}.png"


def all_phrases() -> list[str]:
    """Every phrase of the world, in a fixed order."""
    phrases = [f"{c} {s}" for s in SHAPES for c in COLOURS]
    return phrases + [f"{t} {s}" for s in SHAPES for t in PATTERNED]


def vocabulary() -> list[str]:
    """Every word a phrase or alt-text of this world uses (for a tokenizer)."""
    words = {w for phrase in all_phrases() for w in phrase.split()}
    words |= {s + "s" for s in SHAPES} | set(TEXTURES) | {"and", "on", "a", "background"}
    return sorted(words)


def instances_of(phrase: str, objects: Sequence[WorldObject]) -> list[int]:
    """Indices of the objects ``phrase`` names: ``"<colour> <shape>"`` or ``"<texture>
    <shape>"``; an unknown phrase names nothing."""
    words = phrase.split()
    if len(words) != 2:
        return []
    modifier, shape = words
    out = []
    for i, obj in enumerate(objects):
        if obj.shape != shape:
            continue
        if modifier == obj.colour or (modifier in PATTERNED and modifier == obj.texture):
            out.append(i)
    return out


# ------------------------------------------------------------------------------------ drawing


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        k, offset = 4, math.pi / 4
    elif shape == "triangle":
        k, offset = 3, -math.pi / 2
    elif shape == "diamond":
        # A rhombus, taller than wide.
        return [(cx, cy - r), (cx + 0.65 * r, cy), (cx, cy + r), (cx - 0.65 * r, cy)]
    elif shape == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else 0.45 * r
            a = angle - math.pi / 2 + i * math.pi / 5
            points.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
        return points
    else:
        raise ValueError(f"no polygon for {shape!r}")
    return [
        (cx + r * math.cos(offset + angle + 2 * math.pi * i / k),
         cy + r * math.sin(offset + angle + 2 * math.pi * i / k))
        for i in range(k)
    ]  # fmt: skip


def _shape_mask(
    shape: str, size: tuple[int, int], cx: float, cy: float, r: float, angle: float
) -> np.ndarray:
    """``(H, W)`` bool mask of one whole (unoccluded) shape."""
    height, width = size
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, angle), fill=255)
    return np.asarray(canvas) > 127


def _texture(
    texture: str, colour: str, size: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """``(H, W, 3)`` uint8 paint of an object's colour and texture over the whole image."""
    height, width = size
    base = np.array(COLOURS[colour], dtype=np.float32)
    dark = base * 0.55
    paint = np.empty((height, width, 3), dtype=np.float32)
    paint[:] = base
    yy, xx = np.mgrid[0:height, 0:width]
    if texture == "striped":
        period = int(rng.integers(6, 11))
        direction = rng.choice([(1, 0), (0, 1), (1, 1), (1, -1)])
        phase = (xx * direction[0] + yy * direction[1]) % period
        paint[phase < period // 2] = dark
    elif texture == "dotted":
        period = int(rng.integers(7, 11))
        radius = period / 4.0
        dy = (yy % period) - period / 2
        dx = (xx % period) - period / 2
        paint[dx * dx + dy * dy <= radius * radius] = dark
    shade = rng.normal(0.0, 6.0, size=(height, width, 1)).astype(np.float32)
    return np.clip(paint + shade, 0, 255).astype(np.uint8)


def _background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Muted backgrounds (never a world colour): flat, gradient, checker or noise."""
    height, width = size
    tone = rng.uniform(60, 200)
    tint = rng.uniform(-20, 20, size=3)
    base = np.clip(tone + tint, 0, 255).astype(np.float32)
    kind = rng.integers(0, 4)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    field_: np.ndarray = np.zeros((height, width), dtype=np.float32)
    if kind == 1:  # gradient
        a = rng.uniform(0, 2 * math.pi)
        field_ = (math.cos(a) * xx / width + math.sin(a) * yy / height) * rng.uniform(30, 70)
    elif kind == 2:  # checker
        cell = int(rng.integers(12, 40))
        field_ = (((xx // cell) + (yy // cell)) % 2) * rng.uniform(15, 35)
    elif kind == 3:  # blotchy noise: coarse noise upsampled
        coarse = rng.normal(0, 18, size=(height // 16 + 2, width // 16 + 2)).astype(np.float32)
        small = Image.fromarray(coarse)
        field_ = np.asarray(small.resize((width, height), Image.Resampling.BILINEAR))
    noise = rng.normal(0, 5, size=(height, width, 1)).astype(np.float32)
    pixels = base[None, None, :] + field_[..., None] + noise
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _describe(objects: Sequence[WorldObject], rng: np.random.Generator) -> tuple[str, list[str]]:
    """An alt-text naming every object once (by colour, or by its pattern when it has one and
    the coin says so) and the phrases it uses, in order of first mention."""
    names: list[str] = []
    for obj in objects:
        if obj.texture in PATTERNED and rng.random() < 0.5:
            names.append(f"{obj.texture} {obj.shape}")
        else:
            names.append(f"{obj.colour} {obj.shape}")
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    parts = []
    for name, n in counts.items():
        modifier, shape = name.split()
        article = "an" if name[0] in "aeiou" else "a"
        parts.append(
            f"{article} {name}" if n == 1 else f"{_NUMBERS[min(n, 6)]} {modifier} {shape}s"
        )
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return text[0].upper() + text[1:] + ".", list(counts)


def _negatives(
    objects: Sequence[WorldObject], present: set[str], rng: np.random.Generator
) -> list[str]:
    """Absent phrases: hard ones first (a present shape in another colour or pattern, a present
    colour on another shape), then a few random ones."""
    hard: list[str] = []
    for obj in objects:
        hard += [f"{c} {obj.shape}" for c in COLOURS if c != obj.colour]
        hard += [f"{t} {obj.shape}" for t in PATTERNED if t != obj.texture]
        hard += [f"{obj.colour} {s}" for s in SHAPES if s != obj.shape]
    hard = sorted({p for p in hard if p not in present})
    rng.shuffle(hard)
    easy = [p for p in all_phrases() if p not in present and p not in hard]
    rng.shuffle(easy)
    return hard[:6] + easy[:2]


def make_scene(
    seed: int,
    *,
    size: int = 224,
    min_objects: int = 1,
    max_objects: int = 5,
    min_visible: float = 0.5,
) -> Scene:
    """The scene of ``seed`` (same seed, same scene).

    Args:
        size: width and height in pixels.
        min_objects / max_objects: how many objects (inclusive range).
        min_visible: an object stays only if at least this share of it is visible after the
            objects drawn later (others are re-placed), so every instance is recognisable.
    """
    rng = np.random.default_rng(seed)
    shape2d = (size, size)
    pixels = _background(shape2d, rng)
    n = int(rng.integers(min_objects, max_objects + 1))
    # Repeats of one kind make multi-instance phrases common ("three red circles").
    kinds: list[tuple[str, str, str]] = []
    for _ in range(n):
        if kinds and rng.random() < 0.3:
            kinds.append(kinds[int(rng.integers(0, len(kinds)))])
        else:
            kinds.append(
                (
                    str(rng.choice(SHAPES)),
                    str(rng.choice(list(COLOURS))),
                    str(rng.choice(TEXTURES, p=[0.5, 0.25, 0.25])),
                )
            )
    whole: list[np.ndarray] = []
    placed: list[tuple[str, str, str]] = []
    for kind in kinds:
        for _attempt in range(20):
            r = float(rng.uniform(0.10, 0.21) * size)
            cx, cy = (float(v) for v in rng.uniform(r * 0.6, size - r * 0.6, size=2))
            angle = float(rng.uniform(0, 2 * math.pi))
            mask = _shape_mask(kind[0], shape2d, cx, cy, r, angle)
            if mask.sum() < 0.004 * size * size:
                continue
            # The new object hides parts of the earlier ones: each must stay visible enough.
            ok = all(
                (w & ~mask & ~_union(whole[j + 1 :], shape2d)).sum() >= min_visible * w.sum()
                for j, w in enumerate(whole)
            )
            if ok:
                whole.append(mask)
                placed.append(kind)
                break
    visible = []
    for i, mask in enumerate(whole):
        visible.append(mask & ~_union(whole[i + 1 :], shape2d))
    objects: list[WorldObject] = []
    for (shape, colour, texture), mask, vis in zip(placed, whole, visible, strict=True):
        paint = _texture(texture, colour, shape2d, rng)
        pixels[mask] = paint[mask]  # back to front: later objects overwrite
        objects.append(WorldObject(shape, colour, texture, vis))
    image = Image.fromarray(pixels, mode="RGB")
    alt_text, _ = _describe(objects, rng)
    present = {p for p in all_phrases() if instances_of(p, objects)}
    positives = {p: instances_of(p, objects) for p in sorted(present)}
    return Scene(
        seed=seed,
        image=image,
        objects=objects,
        alt_text=alt_text,
        positives=positives,
        negatives=_negatives(objects, present, rng),
    )


def _union(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    for m in masks:
        out |= m
    return out


def make_scenes(start: int, count: int, **kwargs: int | float) -> Iterator[Scene]:
    """Scenes of seeds ``start .. start + count - 1``."""
    for seed in range(start, start + count):
        yield make_scene(seed, **kwargs)  # type: ignore[arg-type]
