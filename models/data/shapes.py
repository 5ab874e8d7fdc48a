"""A synthetic detection dataset: coloured rectangles, ellipses and triangles on textured backgrounds.

Images are generated on demand. Image ``i`` depends only on ``(config.seed, i)`` (its random generator is
``numpy.random.default_rng([seed, i])``), so a config always yields the same data, in any access order and in
any process, and a held-out split is simply another seed.

Objects are drawn one after another, later ones on top of earlier ones. Every target describes what is
*visible*: masks lose the pixels hidden by later objects, and boxes and areas are computed from those masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["CLASSES", "ShapesConfig", "ShapesDataset", "generate_sample", "masks_to_boxes"]

CLASSES = ("rectangle", "ellipse", "triangle")
"""Class names; the category id of ``CLASSES[k]`` is ``k + 1`` (0 is the detector's background)."""

_MIN_VISIBLE_FRACTION = 0.3  # objects keeping less of their pixels than this are dropped
_MIN_VISIBLE_SIDE = 4  # ... and so are objects whose visible box has a side shorter than this
_MIN_TRIANGLE_FILL = 0.3  # a triangle must cover at least this fraction of its box
_PLACEMENT_ATTEMPTS = 30  # tries to place one object before giving up on it
_CANDIDATES = 16  # colours / triangles drawn at once; the first acceptable one is used
_MIN_MEAN_DISTANCE = 0.3  # RGB distance (in [0, 1] units) between an object and the mean colour beneath it
_CLOSE_DISTANCE = 0.15  # a background pixel this close to the object's colour counts as camouflage ...
_MAX_CLOSE_FRACTION = 0.1  # ... and at most this fraction of the pixels beneath may be camouflage
_PIXEL_NOISE = 0.02  # standard deviation of the noise added over the whole image


@dataclass(frozen=True)
class ShapesConfig:
    """Parameters of a shapes dataset.

    Attributes:
        num_images: number of images in the dataset.
        image_size: side of the square images, or ``(height, width)``.
        min_objects: fewest objects attempted per image.
        max_objects: most objects per image.
        min_size: shortest side of an object's box, in pixels (at least 4).
        max_size: longest side of an object's box, in pixels (capped by the image size).
        max_overlap: an object is re-placed if it would hide more than this fraction of the pixels of an earlier
            object (counting everything drawn over that object so far).
        seed: seed of the whole dataset; image ``i`` uses ``numpy.random.default_rng([seed, i])``.
    """

    num_images: int = 1000
    image_size: int | tuple[int, int] = 128
    min_objects: int = 1
    max_objects: int = 5
    min_size: int = 16
    max_size: int = 64
    max_overlap: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.image_size, (list, tuple)):
            object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        height, width = self.height_width
        if height <= 0 or width <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        if self.num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {self.num_images}")
        if not 0 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 0 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if not _MIN_VISIBLE_SIDE <= self.min_size <= self.max_size:
            raise ValueError(
                f"need {_MIN_VISIBLE_SIDE} <= min_size <= max_size, got {self.min_size}, {self.max_size}"
            )
        if self.min_size > min(height, width):
            raise ValueError(f"min_size {self.min_size} does not fit in an image of size {height}x{width}")
        if not 0.0 <= self.max_overlap <= 1.0:
            raise ValueError(f"max_overlap must be in [0, 1], got {self.max_overlap}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    @property
    def height_width(self) -> tuple[int, int]:
        """The image size as ``(height, width)``."""
        if isinstance(self.image_size, tuple):
            if len(self.image_size) != 2:
                raise ValueError(f"image_size must be an int or (height, width), got {self.image_size}")
            return self.image_size
        return int(self.image_size), int(self.image_size)


class ShapesDataset(Dataset):
    """Synthetic detection dataset; items are ``(image, target)`` in the torchvision detection format.

    ``image`` is a float32 tensor ``[3, H, W]`` in ``[0, 1]``. ``target`` holds ``boxes`` (float32 ``[N, 4]``,
    xyxy in pixels, ``x2``/``y2`` exclusive, tight around the visible mask), ``labels`` (int64 ``[N]``, 1..3),
    ``masks`` (uint8 ``[N, H, W]``, visible pixels), ``image_id`` (``index + 1``), ``area`` (float32 ``[N]``,
    visible pixel count) and ``iscrowd`` (int64 zeros).
    """

    classes = CLASSES

    def __init__(self, config: ShapesConfig | None = None) -> None:
        self.config = config if config is not None else ShapesConfig()

    def __len__(self) -> int:
        return self.config.num_images

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} images")
        image, masks, labels = generate_sample(self.config, index)
        return torch.from_numpy(image.transpose(2, 0, 1).copy()), _make_target(masks, labels, index + 1)


def generate_sample(config: ShapesConfig, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generates image ``index`` of ``config`` as numpy arrays.

    Returns:
        ``image`` float32 ``[H, W, 3]`` in ``[0, 1]``, ``masks`` bool ``[N, H, W]`` (visible pixels) and
        ``labels`` int64 ``[N]`` (1-based class ids).
    """
    rng = np.random.default_rng([config.seed, index])
    height, width = config.height_width
    ys, xs = _pixel_centres(height, width)
    canvas = np.clip(_BACKGROUNDS[rng.integers(len(_BACKGROUNDS))](rng, ys, xs), 0.0, 1.0)

    full_areas: list[int] = []  # pixel count of each object as drawn
    visible: list[np.ndarray] = []  # visible pixels of each object, updated as later objects are drawn
    labels: list[int] = []
    for _ in range(rng.integers(config.min_objects, config.max_objects + 1)):
        placed = _place_object(rng, config, visible, full_areas)
        if placed is None:
            continue
        label, mask = placed
        canvas[mask] = _pick_colour(rng, canvas[mask])
        for earlier in visible:
            earlier &= ~mask
        visible.append(mask)
        full_areas.append(int(mask.sum()))
        labels.append(label)

    image = canvas.astype(np.float32)
    image += _PIXEL_NOISE * rng.standard_normal(image.shape, dtype=np.float32)
    np.clip(image, 0.0, 1.0, out=image)

    keep = [j for j, mask in enumerate(visible) if _still_visible(mask, full_areas[j])]
    masks = np.stack([visible[j] for j in keep]) if keep else np.zeros((0, height, width), dtype=bool)
    return image, masks, np.asarray([labels[j] for j in keep], dtype=np.int64)


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight xyxy boxes (``x2``/``y2`` exclusive) of non-empty boolean masks ``[N, H, W]``, as float32 ``[N, 4]``."""
    rows = masks.any(axis=2)
    cols = masks.any(axis=1)
    height, width = masks.shape[1:]
    boxes = np.stack(
        [
            cols.argmax(axis=1),
            rows.argmax(axis=1),
            width - cols[:, ::-1].argmax(axis=1),
            height - rows[:, ::-1].argmax(axis=1),
        ],
        axis=1,
    )
    return boxes.astype(np.float32).reshape(-1, 4)


def _make_target(masks: np.ndarray, labels: np.ndarray, image_id: int) -> dict:
    n = len(labels)
    return {
        "boxes": torch.from_numpy(masks_to_boxes(masks)),
        "labels": torch.from_numpy(labels),
        "masks": torch.from_numpy(masks.astype(np.uint8)),
        "image_id": image_id,
        "area": torch.from_numpy(masks.sum(axis=(1, 2)).astype(np.float32)),
        "iscrowd": torch.zeros(n, dtype=torch.int64),
    }


# ---------------------------------------------------------------------------------------------------------
# Objects


def _place_object(
    rng: np.random.Generator, config: ShapesConfig, visible: list[np.ndarray], full_areas: list[int]
) -> tuple[int, np.ndarray] | None:
    """Draws a random object at a random position that keeps earlier objects visible enough.

    Returns ``(label, full-image bool mask)``, or ``None`` when no valid placement was found.
    """
    height, width = config.height_width
    label = int(rng.integers(len(CLASSES))) + 1
    for _ in range(_PLACEMENT_ATTEMPTS):
        box_h = int(rng.integers(config.min_size, min(config.max_size, height) + 1))
        box_w = int(rng.integers(config.min_size, min(config.max_size, width) + 1))
        top = int(rng.integers(height - box_h + 1))
        left = int(rng.integers(width - box_w + 1))
        local = _SHAPES[label - 1](rng, box_h, box_w)
        mask = np.zeros((height, width), dtype=bool)
        mask[top : top + box_h, left : left + box_w] = local
        if not _still_visible(mask, int(mask.sum())):
            continue
        window = (slice(top, top + box_h), slice(left, left + box_w))
        pairs = zip(visible, full_areas)
        if all(_survives(earlier, window, local, area, config.max_overlap) for earlier, area in pairs):
            return label, mask
    return None


def _survives(
    earlier: np.ndarray, window: tuple[slice, slice], local: np.ndarray, full_area: int, max_overlap: float
) -> bool:
    """Whether an earlier object stays visible enough once ``local`` is drawn over ``window``."""
    hidden = int(np.count_nonzero(earlier[window] & local))
    if hidden == 0:
        return True
    remaining = earlier.copy()
    remaining[window] &= ~local
    count = int(earlier.sum()) - hidden
    return count >= (1.0 - max_overlap) * full_area and _still_visible(remaining, full_area)


def _still_visible(mask: np.ndarray, full_area: int) -> bool:
    """Whether an object with visible pixels ``mask`` (out of ``full_area`` drawn) is worth annotating."""
    count = int(np.count_nonzero(mask))
    if count == 0 or count < _MIN_VISIBLE_FRACTION * full_area:
        return False
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return rows[-1] - rows[0] + 1 >= _MIN_VISIBLE_SIDE and cols[-1] - cols[0] + 1 >= _MIN_VISIBLE_SIDE


def _rectangle(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return np.ones((h, w), dtype=bool)


def _ellipse(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    ys, xs = _pixel_centres(h, w)
    return ((xs - w / 2) / (w / 2)) ** 2 + ((ys - h / 2) / (h / 2)) ** 2 <= 1.0


def _triangle(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A triangle with vertices on three different sides of its box, covering at least 30 % of the box."""
    # Candidate vertices: for each candidate, three distinct sides (0 top, 1 bottom, 2 left, 3 right), each
    # with a random position along it.
    sides = np.argsort(rng.random((_CANDIDATES, 4)), axis=1)[:, :3]
    along = rng.random((_CANDIDATES, 3))
    x = np.where(sides < 2, along * w, np.where(sides == 2, 0.0, w))
    y = np.where(sides >= 2, along * h, np.where(sides == 0, 0.0, h))
    areas = 0.5 * np.abs((x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0]))
    good = np.flatnonzero(areas >= _MIN_TRIANGLE_FILL * h * w)
    if good.size:
        vertices = np.stack([x[good[0]], y[good[0]]], axis=1)
    else:  # a half-box triangle: base along the bottom, apex on the top side
        vertices = np.array([[0.0, h], [w, h], [along[0, 0] * w, 0.0]])

    ys, xs = _pixel_centres(h, w)
    signs = []
    for k in range(3):
        (x0, y0), (x1, y1) = vertices[k], vertices[(k + 1) % 3]
        signs.append((x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0))
    negative = (signs[0] < 0) | (signs[1] < 0) | (signs[2] < 0)
    positive = (signs[0] > 0) | (signs[1] > 0) | (signs[2] > 0)
    return ~(negative & positive)


_SHAPES: tuple[Callable[[np.random.Generator, int, int], np.ndarray], ...] = (_rectangle, _ellipse, _triangle)


def _pick_colour(rng: np.random.Generator, beneath: np.ndarray) -> np.ndarray:
    """A random colour that stands out from the pixels ``beneath`` ``[P, 3]`` the object.

    The colour must be far from their mean and close to few of them (so that it does not vanish into one
    colour of a striped background). The best of the candidates is used if none qualifies.
    """
    colours = rng.random((_CANDIDATES, 3))
    mean_distance = np.linalg.norm(colours - beneath.mean(axis=0), axis=1)
    sample = beneath[:: max(1, len(beneath) // 512)]
    pixel_distance = np.linalg.norm(sample[None, :, :] - colours[:, None, :], axis=2)
    close_fraction = (pixel_distance < _CLOSE_DISTANCE).mean(axis=1)
    good = np.flatnonzero((mean_distance >= _MIN_MEAN_DISTANCE) & (close_fraction <= _MAX_CLOSE_FRACTION))
    best = good[0] if good.size else int(np.argmax(mean_distance - close_fraction))
    return colours[best]


# ---------------------------------------------------------------------------------------------------------
# Backgrounds: each returns a float64 [H, W, 3] image given the pixel-centre grids ys [H, 1] and xs [1, W].


def _pixel_centres(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ys = np.arange(height, dtype=np.float64)[:, None] + 0.5
    xs = np.arange(width, dtype=np.float64)[None, :] + 0.5
    return ys, xs


def _gradient(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """A linear blend between two colours along a random direction."""
    start, end = rng.random(3), rng.random(3)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    t = xs * math.cos(angle) + ys * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return start + (end - start) * t[..., None]


def _noisy_uniform(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """One colour plus strong per-pixel noise."""
    colour = rng.random(3)
    sigma = rng.uniform(0.03, 0.1)
    return colour + rng.normal(0.0, sigma, (ys.shape[0], xs.shape[1], 3))


def _pattern(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Stripes or checkers of two colours at a random period and angle."""
    first, second = rng.random(3), rng.random(3)
    period = rng.uniform(4.0, 32.0)
    angle = rng.uniform(0.0, math.pi)
    cos, sin = math.cos(angle), math.sin(angle)
    u = np.sin((xs * cos + ys * sin) * (2.0 * math.pi / period))
    if rng.random() < 0.5:
        on = u > 0
    else:
        v = np.sin((ys * cos - xs * sin) * (2.0 * math.pi / period))
        on = u * v > 0
    return np.where(on[..., None], first, second)


def _blobs(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Low-frequency colour blobs: a coarse random grid upsampled bilinearly."""
    cells = int(rng.integers(2, 7))
    coarse = rng.random((cells + 1, cells + 1, 3))
    return _resize_bilinear(coarse, ys.shape[0], xs.shape[1])


def _resize_bilinear(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of ``grid`` ``[h, w, C]`` to ``[height, width, C]``, corners aligned."""

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.linspace(0.0, n_in - 1, n_out)
        low = np.minimum(pos.astype(np.int64), n_in - 2)
        return low, low + 1, pos - low

    y0, y1, wy = axis(grid.shape[0], height)
    x0, x1, wx = axis(grid.shape[1], width)
    top = grid[y0][:, x0] * (1 - wx)[None, :, None] + grid[y0][:, x1] * wx[None, :, None]
    bottom = grid[y1][:, x0] * (1 - wx)[None, :, None] + grid[y1][:, x1] * wx[None, :, None]
    return top * (1 - wy)[:, None, None] + bottom * wy[:, None, None]


_BACKGROUNDS: tuple[Callable[[np.random.Generator, np.ndarray, np.ndarray], np.ndarray], ...] = (
    _gradient,
    _noisy_uniform,
    _pattern,
    _blobs,
)
