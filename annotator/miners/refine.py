"""Edge-aware refinement of upsampled mask probabilities: the colour guided filter.

A proposer predicts masks on a coarse grid (SAM 3: 288 x 288 for a 1008 px input, the starter
16 x 16 for 112 px: 7 input pixels per cell) and bilinear resizing smooths every boundary
across a cell or more, so a mask's edge can miss the object's edge by a pixel or two, which is
what the high IoU thresholds of pmF1 (0.8 .. 0.95) count. The guided filter (He, Sun and Tang,
"Guided Image Filtering", 2010/2013) fits, in every window of the image, the resized
probabilities as a linear function of the pixel's colour, and averages the fits: inside an
object of one colour the output follows the probabilities' mean, across a colour edge it steps
where the colours step. It is the classic joint upsampling of a coarse map to the edges of its
image, and it only moves a boundary within the filter's reach.

``radius`` is in pixels of the model's input (so the refinement covers the same share of a mask
cell whatever the image's size); ``eps`` (on colours in [0, 1]) is how much colour contrast an
edge needs before the output follows it rather than the probabilities' local mean.

The guide's own statistics (window means and inverse covariances of the colours) are computed
once per image (:class:`GuideStats`); every mask is then filtered on its own crop: its box,
widened by the filter's reach (two box passes of the radius), so the per-mask work is
proportional to the mask's size, not to the image's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["GuideStats", "box_mean", "guided_filter", "refine_masks"]


def _box_sum_axis(x: torch.Tensor, radius: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of ``x`` over windows ``[i - radius, i + radius]`` along ``dim`` (clipped at the
    edges), and the number of elements each window holds (1-D, along ``dim``)."""
    size = x.shape[dim]
    cumulative = torch.cumsum(x, dim=dim)
    zero = torch.zeros_like(cumulative.narrow(dim, 0, 1))
    cumulative = torch.cat([zero, cumulative], dim=dim)  # cumulative[k] = sum of x[:k]
    index = torch.arange(size, device=x.device)
    high = (index + radius + 1).clamp(max=size)
    low = (index - radius).clamp(min=0)
    sums = cumulative.index_select(dim, high) - cumulative.index_select(dim, low)
    return sums, (high - low).to(x.dtype)


def box_mean(x: torch.Tensor, radius_y: int, radius_x: int) -> torch.Tensor:
    """Mean of ``x`` ``(..., H, W)`` over each pixel's ``(2 radius_y + 1) x (2 radius_x + 1)``
    window, counting only the pixels inside the image (as ``avg_pool2d`` with
    ``count_include_pad=False``). Cumulative sums: the cost does not grow with the radius."""
    sums, count_y = _box_sum_axis(x, radius_y, x.dim() - 2)
    sums, count_x = _box_sum_axis(sums, radius_x, x.dim() - 1)
    return sums / (count_y[:, None] * count_x[None, :])


@dataclass(frozen=True)
class GuideStats:
    """What the filter needs of the guide image alone, computed once per image and shared by
    every mask: the colours ``(3, H, W)``, their window means ``(3, H, W)`` and the inverse of
    each window's colour covariance plus ``eps`` (symmetric 3 x 3: its 6 entries ``00, 01,
    02, 11, 12, 22``, ``(6, H, W)``)."""

    colours: torch.Tensor
    mean: torch.Tensor
    inverse: torch.Tensor
    radius_y: int
    radius_x: int

    @classmethod
    def of(cls, colours: torch.Tensor, radius_y: int, radius_x: int, eps: float) -> GuideStats:
        colours = colours.float()
        mean = box_mean(colours, radius_y, radius_x)
        products = torch.stack([colours[i] * colours[j] for i, j in _PAIRS])
        moments = box_mean(products, radius_y, radius_x)
        c = [moments[k] - mean[i] * mean[j] for k, (i, j) in enumerate(_PAIRS)]
        c[0], c[3], c[5] = c[0] + eps, c[3] + eps, c[5] + eps
        return cls(colours, mean, _inverse_3x3(*c), radius_y, radius_x)

    def crop(self, y0: int, y1: int, x0: int, x1: int) -> GuideStats:
        """The statistics of a window of the image (the means stay those of the whole image)."""
        return GuideStats(
            self.colours[:, y0:y1, x0:x1],
            self.mean[:, y0:y1, x0:x1],
            self.inverse[:, y0:y1, x0:x1],
            self.radius_y,
            self.radius_x,
        )


# The entries of a symmetric 3 x 3 matrix, in the order GuideStats.inverse keeps them.
_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


def _inverse_3x3(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor, e: torch.Tensor,
    f: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """Per pixel, the inverse of ``[[a, b, c], [b, d, e], [c, e, f]]`` (positive definite) by
    cofactors; its 6 entries stacked in the order of :data:`_PAIRS`."""
    m00 = d * f - e * e
    m01 = c * e - b * f
    m02 = b * e - c * d
    m11 = a * f - c * c
    m12 = b * c - a * e
    m22 = a * d - b * b
    det = a * m00 + b * m01 + c * m02
    return torch.stack([m00, m01, m02, m11, m12, m22]) / det


def guided_filter(stats: GuideStats, source: torch.Tensor) -> torch.Tensor:
    """The colour guided filter of ``source`` ``(K, H, W)`` (the size of ``stats``' image): per
    window, ``source ~ a . colour + b`` by least squares with ridge ``eps``; the output is
    ``mean(a) . colour + mean(b)`` at each pixel. Float32 throughout."""
    ry, rx = stats.radius_y, stats.radius_x
    guide, mean_i, inv = stats.colours, stats.mean, stats.inverse
    source = source.float()
    # One box pass over the source and its products with the colours, one over a and b.
    means = box_mean(torch.cat([source[:, None], guide[None] * source[:, None]], dim=1), ry, rx)
    mean_p = means[:, 0]  # (K, H, W)
    cross = means[:, 1:] - mean_i[None] * mean_p[:, None]
    c0, c1, c2 = cross[:, 0], cross[:, 1], cross[:, 2]
    # a = sigma^-1 cross, per pixel; b = mean_p - a . mean_i.
    a0 = inv[0] * c0 + inv[1] * c1 + inv[2] * c2
    a1 = inv[1] * c0 + inv[3] * c1 + inv[4] * c2
    a2 = inv[2] * c0 + inv[4] * c1 + inv[5] * c2
    b = mean_p - a0 * mean_i[0] - a1 * mean_i[1] - a2 * mean_i[2]
    smooth = box_mean(torch.stack([a0, a1, a2, b], dim=1), ry, rx)  # (K, 4, H, W)
    return (smooth[:, :3] * guide[None]).sum(dim=1) + smooth[:, 3]


def refine_masks(
    probabilities: torch.Tensor,
    stats: GuideStats,
    boxes: torch.Tensor,
    threshold: float,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each mask's refined foreground on its crop.

    ``probabilities`` ``(K, H, W)`` resized mask probabilities, ``stats`` the image's
    (:meth:`GuideStats.of`), ``boxes`` ``(K, 4)`` int64 ``x0, y0, x1, y1`` holding each
    mask's foreground before refinement. Each box is widened by the filter's reach
    (``2 x radius`` each side, clipped to the image), the crop filtered and thresholded above
    ``threshold``. Returns the ``(y1 - y0, x1 - x0)`` bool crops and their ``(K, 4)`` boxes;
    an empty box stays empty.
    """
    height, width = probabilities.shape[-2:]
    ry, rx = stats.radius_y, stats.radius_x
    reach = torch.tensor([-2 * rx, -2 * ry, 2 * rx, 2 * ry], device=boxes.device)
    limit = torch.tensor([width, height, width, height], device=boxes.device)
    empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    widened = torch.minimum((boxes + reach).clamp(min=0), limit)
    widened[empty] = 0
    crops: list[torch.Tensor] = []
    for k, (x0, y0, x1, y1) in enumerate(widened.tolist()):
        if x1 <= x0 or y1 <= y0:
            crops.append(torch.zeros((0, 0), dtype=torch.bool, device=probabilities.device))
            continue
        refined = guided_filter(stats.crop(y0, y1, x0, x1), probabilities[k : k + 1, y0:y1, x0:x1])
        crops.append(refined[0] > threshold)
    return crops, widened
