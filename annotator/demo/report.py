"""The demo's HTML report: figures per round and mask overlays, one self-contained file.

Images are PNGs inlined as base64 ``data:`` URIs; no script, no stylesheet or font from the
network.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from annotator import masks as mask_ops
from annotator.db import simulation as sim_db
from annotator.db.models import PairState
from annotator.db.session import session_scope

if TYPE_CHECKING:
    from annotator.datasets.synthetic import Scene
    from annotator.demo.run import RoundResult

__all__ = ["overlay", "write_report"]

_PALETTE = [
    (255, 255, 255), (0, 255, 255), (255, 0, 255), (255, 255, 0), (0, 255, 0), (255, 128, 0),
    (128, 128, 255), (255, 0, 0),
]  # fmt: skip
_SCALE = 2  # the scenes are small: show them twice as large (nearest neighbour)


def overlay(image: Image.Image, masks: list[np.ndarray]) -> Image.Image:
    """``image`` with each ``(H, W)`` bool mask tinted in its own colour and outlined."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    for k, mask in enumerate(masks):
        colour = np.array(_PALETTE[k % len(_PALETTE)], dtype=np.float32)
        pixels[mask] = 0.45 * pixels[mask] + 0.55 * colour
        edge = mask & ~_erode(mask)
        pixels[edge] = colour
    out = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    return out.resize((out.width * _SCALE, out.height * _SCALE), Image.Resampling.NEAREST)


def _erode(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    return (
        padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2]
        & padded[1:-1, 2:]
    )  # fmt: skip


def _png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _outcome(pair: sim_db.JobPair) -> str:
    if pair.reviewed:
        return "reviewed (simulated reviewer)"
    if pair.state == PairState.POSITIVE:
        return "auto-accepted"
    if pair.state == PairState.NEGATIVE:
        return "auto-negative"
    return str(pair.state)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def write_report(
    engine: Any, path: Path, results: list[RoundResult], world: dict[str, Scene], images: int
) -> None:
    """Write the report: a table of figures per round, then for the first ``images`` mined
    images of each round, every pair with its proposals and its final masks."""
    rows = []
    for r in results:
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(_fmt(v, d))}</td>"
                for v, d in (
                    (r.round, 0),
                    (r.proposer, 0),
                    (r.images, 0),
                    (r.pairs, 0),
                    (r.proposals_cgf1["cgF1"], 1),
                    (r.heldout_cgf1["cgF1"], 1),
                    (None if r.auto_precision is None else 100 * r.auto_precision, 1),
                    (100 * r.human_share, 1),
                    (r.human_s_with / 3600, 2),
                    (r.human_s_without / 3600, 2),
                )
            )
            + "</tr>"
        )
    sections = []
    with session_scope(engine) as session:
        for r in results:
            job_pairs = sim_db.job_pairs(session, r.job_id)
            by_image: dict[str, list[sim_db.JobPair]] = defaultdict(list)
            for pair in job_pairs:
                by_image[pair.file_name].append(pair)
            cards = []
            for file_name in list(by_image)[:images]:
                scene = world[file_name]
                cells = []
                for pair in by_image[file_name]:
                    size = [pair.height, pair.width]
                    proposed = [
                        mask_ops.decode({"size": size, "counts": c})
                        for c, s in pair.proposals
                        if s >= 0.5
                    ]
                    final = [mask_ops.decode({"size": size, "counts": c}) for c in pair.final]
                    truth = len(scene.masks_of(pair.phrase))
                    cells.append(
                        "<div class='pair'>"
                        f"<div><b>{html.escape(pair.phrase)}</b> · {html.escape(_outcome(pair))}"
                        f" · {len(pair.final)} mask(s), truth {truth}</div>"
                        f"<img src='{_png(overlay(scene.image, proposed))}' title='proposals'>"
                        f"<img src='{_png(overlay(scene.image, final))}' title='final'>"
                        "</div>"
                    )
                cards.append(
                    f"<div class='card'><h3>{html.escape(file_name)}</h3>"
                    f"<p class='alt'>alt-text: {html.escape(scene.alt_text)}</p>"
                    + "".join(cells)
                    + "</div>"
                )
            sections.append(
                f"<h2>Round {r.round}: {html.escape(r.proposer)}</h2>"
                "<p>Each pair: left, the proposer's masks scoring at least 0.5; right, the "
                "masks in the dataset after routing and review.</p>" + "".join(cards)
            )
    document = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>annotator demo</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #bbb; padding: 4px 8px; }}
.card {{ border: 1px solid #ddd; margin: 1em 0; padding: 0.5em; }}
.pair {{ display: inline-block; margin: 0.3em; vertical-align: top; font-size: 12px; }}
.pair img {{ margin-right: 2px; image-rendering: pixelated; }}
.alt {{ color: #555; font-style: italic; }}
.sim {{ background: #fff3cd; padding: 0.5em; }}
</style></head><body>
<h1>annotator demo: the data engine on a synthetic world</h1>
<p class="sim">Review decisions in this demo come from a <b>SIMULATED reviewer</b> that reads the
synthetic world's ground truth; human times are the SAM 3 paper's per-pair figures (Table 14),
not measurements. The proposer is a small SAM 3 trained here from scratch; the verifiers are the
product's calibrated verifier (fitted on the warm-up's simulated reviews) and the
proposer-score verifier.</p>
<table><tr><th>round</th><th>proposer</th><th>images</th><th>pairs</th>
<th>cgF1 of proposals</th><th>held-out cgF1</th><th>auto-accept precision %</th>
<th>pairs to a person %</th><th>human h (with verifier)</th><th>human h (without)</th></tr>
{"".join(rows)}</table>
{"".join(sections)}
</body></html>
"""
    path.write_text(document, encoding="utf-8")
