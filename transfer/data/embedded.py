"""The embedded dataset: procedurally generated images, deterministic from a seed, made in seconds.

Each class is a shape (filled figures, outlines and pen strokes, the last ones close to handwriting);
position, scale, rotation, stroke width, colours, fill texture and background texture vary per image, so a
network must learn shape and stroke features, the ones that carry over to real images such as digits.
With more classes than shapes, classes are shape x texture pairs.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("disc", "square", "triangle", "star", "plus", "ring", "bar", "arc", "zigzag", "loop",
          "chevron", "hexagon", "spiral", "tee", "two_bars", "diamond")
TEXTURES = ("solid", "stripes", "dots", "gradient")
MAX_SHAPE_CLASSES = len(SHAPES) * len(TEXTURES)


def class_names(classes: int, kind: str = "shapes") -> list[str]:
    if kind == "glyphs":
        return [f"glyph{i:03d}" for i in range(classes)]
    if classes > MAX_SHAPE_CLASSES:
        raise ValueError(f"at most {MAX_SHAPE_CLASSES} embedded shape classes")
    if classes <= len(SHAPES):
        return list(SHAPES[:classes])
    return [f"{SHAPES[i % len(SHAPES)]}_{TEXTURES[i // len(SHAPES)]}" for i in range(classes)]


def _polygon(n: int, r: float, phase: float = 0.0) -> list[tuple[float, float]]:
    return [(r * math.cos(phase + 2 * math.pi * k / n), r * math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, c: float, r: float, w: int) -> None:
    """Draw `shape` in white, centred at (c, c) with radius r and pen width w, on an 'L' canvas."""

    def at(points):
        return [(c + x, c + y) for x, y in points]

    box = [c - r, c - r, c + r, c + r]
    if shape == "disc":
        draw.ellipse(box, fill=255)
    elif shape == "square":
        draw.rectangle([c - 0.8 * r, c - 0.8 * r, c + 0.8 * r, c + 0.8 * r], fill=255)
    elif shape == "triangle":
        draw.polygon(at(_polygon(3, r, -math.pi / 2)), fill=255)
    elif shape == "star":
        pts = [(rr * math.cos(-math.pi / 2 + math.pi * k / 5), rr * math.sin(-math.pi / 2 + math.pi * k / 5))
               for k, rr in zip(range(10), [r, 0.42 * r] * 5, strict=True)]
        draw.polygon(at(pts), fill=255)
    elif shape == "plus":
        t = 0.3 * r
        draw.rectangle([c - r, c - t, c + r, c + t], fill=255)
        draw.rectangle([c - t, c - r, c + t, c + r], fill=255)
    elif shape == "ring":
        draw.ellipse(box, outline=255, width=w)
    elif shape == "bar":
        draw.line(at([(-r, 0), (r, 0)]), fill=255, width=w)
    elif shape == "arc":
        draw.arc(box, 180, 360, fill=255, width=w)
    elif shape == "zigzag":
        draw.line(at([(-r, -0.6 * r), (-0.33 * r, 0.6 * r), (0.33 * r, -0.6 * r), (r, 0.6 * r)]), fill=255,
                  width=w, joint="curve")
    elif shape == "loop":
        draw.ellipse([c - 0.5 * r, c, c + 0.5 * r, c + r], outline=255, width=w)
        draw.line(at([(-0.45 * r, 0.5 * r), (0.3 * r, -r)]), fill=255, width=w)
    elif shape == "chevron":
        draw.line(at([(-r, -0.6 * r), (0, 0.6 * r), (r, -0.6 * r)]), fill=255, width=w, joint="curve")
    elif shape == "hexagon":
        draw.polygon(at(_polygon(6, r)), fill=255)
    elif shape == "spiral":
        pts = [(t / 12 * r * math.cos(t * 0.9), t / 12 * r * math.sin(t * 0.9)) for t in np.linspace(0.5, 12, 40)]
        draw.line(at(pts), fill=255, width=w, joint="curve")
    elif shape == "tee":
        draw.line(at([(-r, -0.8 * r), (r, -0.8 * r)]), fill=255, width=w)
        draw.line(at([(0, -0.8 * r), (0, r)]), fill=255, width=w)
    elif shape == "two_bars":
        draw.line(at([(-0.4 * r, -r), (-0.4 * r, r)]), fill=255, width=w)
        draw.line(at([(0.4 * r, -r), (0.4 * r, r)]), fill=255, width=w)
    elif shape == "diamond":
        draw.polygon(at(_polygon(4, r)), outline=255, width=w)
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(shape)


def _texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size) pattern in [0, 1] (solid: all ones)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, math.pi)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    if kind == "solid":
        return np.ones((size, size), np.float32)
    if kind == "stripes":
        return (np.sin(u * 2 * math.pi * rng.uniform(3, 7)) > 0).astype(np.float32)
    if kind == "dots":
        f = rng.uniform(4, 8)
        return ((np.sin(xx * 2 * math.pi * f) * np.sin(yy * 2 * math.pi * f)) > 0.2).astype(np.float32)
    return u / max(u.max(), 1e-6)  # gradient


def render(label: int, classes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One (size, size, 3) uint8 image of class `label`."""
    shape = SHAPES[label % len(SHAPES)]
    fill = TEXTURES[label // len(SHAPES)] if classes > len(SHAPES) else TEXTURES[rng.integers(len(TEXTURES))]
    big = 2 * size  # draw at twice the size, then downsample: anti-aliased edges
    mask = Image.new("L", (big, big), 0)
    r = rng.uniform(0.26, 0.4) * big
    width = max(2, int(rng.uniform(0.05, 0.11) * big))
    _draw_shape(ImageDraw.Draw(mask), shape, big / 2, r, width)
    # Moderate rotations and shifts: enough variety to learn invariant features, little enough that a small
    # network learns the classes in the demo's few minutes (free rotation took many times longer).
    mask = mask.rotate(rng.uniform(-30, 30), resample=Image.BILINEAR)
    shift = rng.uniform(-0.12, 0.12, size=2) * big
    mask = mask.transform(mask.size, Image.AFFINE, (1, 0, -shift[0], 0, 1, -shift[1]), resample=Image.BILINEAR)
    alpha = np.asarray(mask.resize((size, size), Image.BILINEAR), np.float32)[..., None] / 255.0

    # Colours vary, but the figure is always the bright ink on a dark ground (as the digits it should
    # transfer to are): shape is the signal, hue and texture the nuisance. Free colours and polarity made the
    # classes many times slower to learn for a small network.
    luminance = np.array([0.299, 0.587, 0.114])
    fg, bg = rng.uniform(0.3, 1, size=3), rng.uniform(0, 0.45, size=3)
    while fg @ luminance - bg @ luminance < 0.4:
        fg, bg = rng.uniform(0.3, 1, size=3), rng.uniform(0, 0.45, size=3)
    fg_img = fg * (0.8 + 0.2 * _texture(fill, size, rng)[..., None])
    bg_img = bg * (0.85 + 0.15 * _texture("gradient", size, rng)[..., None])
    img = alpha * fg_img + (1 - alpha) * bg_img + rng.normal(0, 0.02, size=(size, size, 3))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


# Glyphs: pen-written characters of an invented alphabet, formed as scikit-learn's digits were. Those are
# 32x32 binary bitmaps of handwritten digits, size-normalised and centred, then counted in 4x4 blocks (ink
# levels 0-16 on an 8x8 grid). A glyph class is a fixed set of 2-3 pen strokes (cubic Bezier curves, drawn
# from a generator keyed by the class alone, so every split agrees); each image redraws it with a hand's
# variation (control points, slant, aspect, pen width, position) and goes through the same bitmap and
# counting steps. The content is new (no digit is drawn on purpose); the image formation is the target's.
GLYPH_CLASSES = 1000  # more than any recipe uses: the alphabet is fixed, a recipe takes its first `classes`
_GLYPH_KEY = 20010618  # the alphabet's seed: changing it changes every glyph class


def glyph_strokes(label: int) -> list[np.ndarray]:
    """The pen strokes of glyph class `label`: a list of (4, 2) Bezier control points in [-1, 1]^2."""
    rng = np.random.default_rng([_GLYPH_KEY, label])
    strokes = []
    for _ in range(rng.integers(2, 4)):
        start = rng.uniform(-0.8, 0.8, size=2)
        steps = rng.normal(0, 0.6, size=(3, 2))
        strokes.append(np.clip(start + np.cumsum(steps, axis=0).clip(-1.6, 1.6), -1, 1))
        strokes[-1] = np.vstack([start, strokes[-1]])
    return strokes


def _bezier(points: np.ndarray, n: int = 24) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2, p3 = points
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3


def glyph_counts(label: int, rng: np.random.Generator) -> np.ndarray:
    """One written glyph as the digits' 8x8 grid of ink counts (0-16, uint8)."""
    strokes = [s + rng.normal(0, 0.07, size=s.shape) for s in glyph_strokes(label)]
    slant, aspect = rng.uniform(-0.3, 0.3), rng.uniform(0.75, 1.25)
    curves = [_bezier(s) @ np.array([[aspect, 0], [slant, 1]]) for s in strokes]
    pts = np.concatenate(curves)
    lo, hi = pts.min(0), pts.max(0)
    # size-normalised into a 24-30 px box of the 32x32 bitmap (kept thin strokes thin), centred, then shifted
    box = rng.uniform(24, 30)
    scale = box / max(float((hi - lo).max()), 0.3)
    centre = 16 + rng.uniform(-1.5, 1.5, size=2)
    big = 4  # drawn at 128x128, reduced to the 32x32 bitmap by a box filter and a threshold
    width = rng.uniform(3.5, 5.5) * big
    canvas = Image.new("L", (32 * big, 32 * big), 0)
    draw = ImageDraw.Draw(canvas)
    for c in curves:
        xy = ((c - (lo + hi) / 2) * scale + centre) * big
        draw.line([tuple(p) for p in xy], fill=255, width=round(width), joint="curve")
        for p in xy[[0, -1]]:  # round pen ends
            draw.ellipse([p[0] - width / 2, p[1] - width / 2, p[0] + width / 2, p[1] + width / 2], fill=255)
    bitmap = np.asarray(canvas.resize((32, 32), Image.BOX), np.float32) > 127
    return bitmap.reshape(8, 4, 8, 4).sum(axis=(1, 3)).astype(np.uint8)


def counts_to_image(counts: np.ndarray, resolution: int) -> np.ndarray:
    """Grids of ink counts (N, 8, 8), 0-16, as the RGB images the digits task feeds the network."""
    small = (counts / 16.0 * 255).astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(im).resize((resolution, resolution), Image.BICUBIC))
                       for im in small])
    return np.repeat(images[..., None], 3, axis=-1)


def generate(classes: int, per_class: int, size: int, seed: int, kind: str = "shapes"
             ) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, size, size, 3) uint8, labels (N,) int64), class-interleaved, same output for the same seed."""
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(classes), per_class)
    if kind == "glyphs":
        images = counts_to_image(np.stack([glyph_counts(int(y), rng) for y in labels]), size)
    else:
        images = np.stack([render(int(y), classes, size, rng) for y in labels])
    return images, labels.astype(np.int64)


def cache_dir() -> Path:
    return Path(os.environ.get("TRANSFER_CACHE", Path.home() / ".cache" / "transfer"))


def load_split(classes: int, per_class: int, size: int, seed: int, split: str, kind: str = "shapes"
               ) -> tuple[np.ndarray, np.ndarray]:
    """A split of the embedded dataset, generated once and cached as .npz (train and validation differ by seed)."""
    split_seed = {"train": 0, "validation": 1, "test": 2}.get(split)
    if split_seed is None:
        raise ValueError(f"embedded dataset has splits train, validation and test, not {split!r}")
    key = hashlib.sha1(f"v5-{classes}-{per_class}-{size}-{seed}-{split}"
                       f"{'' if kind == 'shapes' else '-' + kind}".encode()).hexdigest()[:16]
    path = cache_dir() / "embedded" / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path) as f:
                return f["images"], f["labels"]
        except (OSError, KeyError, ValueError):
            path.unlink(missing_ok=True)  # a damaged cache file is regenerated
    images, labels = generate(classes, per_class, size, seed * 1000 + split_seed, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, images=images, labels=labels)
    os.replace(tmp, path)
    return images, labels


def held_out_classes(num_classes: int, val_fraction: float) -> np.ndarray:
    """The classes a by-class split holds out: the last round(C * val_fraction) (at least 1, at most C - 1)."""
    n = min(num_classes - 1, max(1, round(num_classes * val_fraction)))
    return np.arange(num_classes - n, num_classes)


def load_digits_split(resolution: int, split: str, seed: int = 0, val_fraction: float = 0.3,
                      by_class: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (1,797 real 8x8 scans, 10 classes) upsampled to `resolution`, as RGB.

    The train/validation split is stratified and seeded: the embedded downstream task of the demo. With
    `by_class` the split is by class instead (zero-shot retrieval: with val_fraction 0.5, digits 0-4 train
    and 5-9 validation); labels stay the digits.
    """
    counts, labels = load_digits_counts(split, seed, val_fraction, by_class)
    return counts_to_image(counts, resolution), labels


def load_digits_counts(split: str, seed: int = 0, val_fraction: float = 0.3,
                       by_class: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The same split as load_digits_split, in the same order, as the scans' raw 8x8 ink counts (0-16): what a
    baseline on pixels sees."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    index = np.arange(len(digits.target))
    if by_class:
        held_out = held_out_classes(10, val_fraction)
        val_idx = index[np.isin(digits.target, held_out)]
        train_idx = index[~np.isin(digits.target, held_out)]
    else:
        train_idx, val_idx = train_test_split(index, test_size=val_fraction, stratify=digits.target,
                                              random_state=seed)
    chosen = np.sort(train_idx if split == "train" else val_idx)
    return digits.images[chosen], digits.target[chosen].astype(np.int64)
