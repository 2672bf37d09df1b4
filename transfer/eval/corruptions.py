"""The ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019) and the paper's four extra ones, 5 severities each.

Written from the published definitions and parameters (the ImageNet-C generation script), at any image size
(the parameters were set for 224 px). Differences from the reference script, none of which changes what a
corruption looks like:
- every random draw comes from the numpy Generator passed in (seeded per image, corruption and severity), never
  numpy's global state, so a corrupted set is the same whichever worker makes it and in whatever order;
- glass blur's pixel swaps and zoom blur's zooms are vectorised: the reference loops over every pixel in Python
  (about 4 s for one 224 px image at severity 5); see `glass_blur`;
- the OpenCV and ImageMagick steps (disk and motion-blur kernels, the affine warp, spatter's Canny edges) are
  written with numpy, scipy and Pillow.
The imagecorruptions package (which the paper's authors' code follows) was tried first: under numpy 2 and current
scikit-image three of its corruptions fail (glass blur, fog, gaussian blur), it draws from numpy's global RNG, and
its glass blur takes seconds per image. Its maintained fork ships the frost textures this module overlays.
"""

from __future__ import annotations

import functools
import io
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy import ndimage, signal

from ..errors import ConfigError

SEVERITIES = (1, 2, 3, 4, 5)

# Severity parameters, one entry per severity 1-5 (ImageNet-C's make_imagenet_c.py).
GAUSSIAN_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)
SHOT_NOISE = (60, 25, 12, 5, 3)
IMPULSE_NOISE = (0.03, 0.06, 0.09, 0.17, 0.27)
SPECKLE_NOISE = (0.15, 0.2, 0.35, 0.45, 0.6)
GAUSSIAN_BLUR = (1, 2, 3, 4, 6)
GLASS_BLUR = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))  # sigma, max shift, iterations
DEFOCUS_BLUR = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))  # disk radius, alias blur
MOTION_BLUR = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))  # radius, sigma
ZOOM_BLUR = (np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
             np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03))
# loc, scale, zoom, threshold, blur radius, blur sigma, blend
SNOW = ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))
FROST = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))  # image weight, frost weight
FOG = ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))  # fog strength, fractal roughness decay
BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)
CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
# alpha, sigma, affine shift; in pixels of a 224 px image. The reference writes 244 * k ("244 should have been
# 224, but ultimately nothing is incorrect"); the values are kept and scaled to the image's size.
ELASTIC = tuple(tuple(244 * k for k in ks) for ks in (
    (2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02), (0.12, 0.01, 0.02)))
PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)
JPEG_QUALITY = (25, 18, 15, 10, 7)
# loc, scale, sigma, threshold, intensity, mud (0: water drops, 1: mud)
SPATTER = ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
           (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1))
SATURATE = ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.1))  # factor, offset on HSV saturation

Array = np.ndarray


def corruption_rng(seed: int, index: int, name: str, severity: int) -> np.random.Generator:
    """The Generator for one (image, corruption, severity): the same in every process (crc32, not hash())."""
    return np.random.default_rng(np.random.SeedSequence([seed, index, zlib.crc32(name.encode()), severity]))


def to_uint8(x: Array) -> Array:
    """[0, 1] floats to uint8, clipping what a corruption pushed outside; truncating, as ImageNet-C's np.uint8."""
    return np.clip(x * 255, 0, 255).astype(np.uint8)


def _pil(x: Array) -> Image.Image:
    return Image.fromarray(to_uint8(x))


def _float(img: Image.Image) -> Array:
    return np.asarray(img, dtype=np.float32) / 255


def _gaussian(x: Array, sigma: float, **kw) -> Array:
    """Blur the spatial axes only (scikit-image's `gaussian`, which the reference calls: nearest edges, 4 sigma)."""
    kw = {"mode": "nearest", "truncate": 4.0, **kw}
    return ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0) if x.ndim == 3 else sigma, **kw)


def _hsv_map(x: Array, channel: int, fn: Callable[[Array], Array]) -> Array:
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    hsv = rgb_to_hsv(np.clip(x, 0, 1))
    hsv[..., channel] = np.clip(fn(hsv[..., channel]), 0, 1)
    return hsv_to_rgb(hsv)


# --- noise -------------------------------------------------------------------------------------------------

def gaussian_noise(x: Array, severity: int, rng: np.random.Generator) -> Array:
    return x + rng.normal(scale=GAUSSIAN_NOISE[severity - 1], size=x.shape)


def shot_noise(x: Array, severity: int, rng: np.random.Generator) -> Array:
    c = SHOT_NOISE[severity - 1]  # photons per unit intensity: fewer photons, more Poisson noise
    return rng.poisson(np.clip(x, 0, 1) * c) / c


def impulse_noise(x: Array, severity: int, rng: np.random.Generator) -> Array:
    """Salt and pepper on each channel value independently (scikit-image's random_noise, mode 's&p')."""
    flipped = rng.random(x.shape) < IMPULSE_NOISE[severity - 1]
    salt = rng.random(x.shape) < 0.5
    out = x.copy()
    out[flipped & salt] = 1
    out[flipped & ~salt] = 0
    return out


def speckle_noise(x: Array, severity: int, rng: np.random.Generator) -> Array:
    return x + x * rng.normal(scale=SPECKLE_NOISE[severity - 1], size=x.shape)


# --- blur --------------------------------------------------------------------------------------------------

def gaussian_blur(x: Array, severity: int, rng: np.random.Generator) -> Array:
    return _gaussian(x, GAUSSIAN_BLUR[severity - 1])


def glass_blur(x: Array, severity: int, rng: np.random.Generator) -> Array:
    """Blur, shuffle each pixel with a random neighbour (up to `shift` away), blur again.

    The reference swaps pixel by pixel in a Python loop (reverse raster order), each swap with an offset in
    [-shift, shift). Two pixels 2*shift apart in both axes have disjoint swap windows, so their swaps commute:
    the pixels are split into (2*shift)^2 such lattices and each lattice swaps at once. The order of the swaps
    differs from the reference's, the kind of shuffle (offset distribution, swap count) does not.
    """
    sigma, shift, iterations = GLASS_BLUR[severity - 1]
    img = to_uint8(_gaussian(x, sigma))
    h, w = img.shape[:2]
    period = 2 * shift
    for _ in range(iterations):
        dy, dx = rng.integers(-shift, shift, size=(2, h, w))
        for a in range(period):
            rows = np.arange(shift + 1 + a, h - shift + 1, period)
            for b in range(period):
                cols = np.arange(shift + 1 + b, w - shift + 1, period)
                if not len(rows) or not len(cols):
                    continue
                r, c = np.meshgrid(rows, cols, indexing="ij")
                r2, c2 = r + dy[r, c], c + dx[r, c]
                moved = img[r2, c2].copy()
                img[r2, c2] = img[r, c]
                img[r, c] = moved
    return _gaussian(img.astype(np.float32) / 255, sigma)


def _disk_kernel(radius: float, alias_blur: float) -> Array:
    """A filled disc, normalised, then softened by a small Gaussian (OpenCV GaussianBlur, fixed 3 or 5 taps)."""
    side = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    taps = 3 if radius <= 8 else 5
    xx, yy = np.meshgrid(side, side)
    disk = (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float32)
    disk /= disk.sum()
    t = np.arange(taps) - taps // 2
    g = np.exp(-t ** 2 / (2 * alias_blur ** 2))
    g /= g.sum()
    return ndimage.convolve1d(ndimage.convolve1d(disk, g, axis=0, mode="mirror"), g, axis=1, mode="mirror")


def defocus_blur(x: Array, severity: int, rng: np.random.Generator) -> Array:
    kernel = _disk_kernel(*DEFOCUS_BLUR[severity - 1])
    pad = kernel.shape[0] // 2
    padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    # A 21x21 kernel: the FFT is ~10x faster than direct convolution at 224 px.
    return signal.fftconvolve(padded, kernel[..., None], mode="valid", axes=(0, 1))


def _motion_blur(x: Array, radius: float, sigma: float, angle: float) -> Array:
    """ImageMagick's motion blur: a one-sided line of 2*radius+1 taps along `angle`, Gaussian weights."""
    width = int(2 * np.ceil(radius) + 1)
    i = np.arange(width)
    weights = np.exp(-i ** 2 / (2 * sigma ** 2))
    weights /= weights.sum()
    theta = np.deg2rad(angle)
    dys, dxs = np.rint(i * np.sin(theta)).astype(int), np.rint(i * np.cos(theta)).astype(int)
    h, w = x.shape[:2]
    padded = np.pad(x, ((width, width), (width, width)) + ((0, 0),) * (x.ndim - 2), mode="edge")
    out = np.zeros_like(x, dtype=np.float32)
    for wt, dy, dx in zip(weights, dys, dxs, strict=True):
        out += wt * padded[width + dy:width + dy + h, width + dx:width + dx + w]
    return out


def motion_blur(x: Array, severity: int, rng: np.random.Generator) -> Array:
    radius, sigma = MOTION_BLUR[severity - 1]
    return _motion_blur(x, radius, sigma, rng.uniform(-45, 45))


def _zoom_centre(img: Image.Image, zoom: float) -> Image.Image:
    """Scale the centre by `zoom` and keep the original size (the reference's clipped_zoom), bilinear."""
    w, h = img.size
    cw, ch = w / zoom, h / zoom
    return img.resize((w, h), Image.BILINEAR, box=((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2))


def zoom_blur(x: Array, severity: int, rng: np.random.Generator) -> Array:
    """The mean of the image and up to 16 zoomed copies of it. Pillow's resize does each zoom in C (the reference's
    scipy.ndimage.zoom per zoom dominates its cost); each zoom is rounded to uint8, which moves the mean by
    at most half a grey level."""
    zooms = ZOOM_BLUR[severity - 1]
    img = _pil(x)
    out = np.array(x, dtype=np.float32)
    for z in zooms:
        out += _float(_zoom_centre(img, float(z)))
    return out / (len(zooms) + 1)


# --- weather -----------------------------------------------------------------------------------------------

def snow(x: Array, severity: int, rng: np.random.Generator) -> Array:
    loc, scale, zoom, threshold, radius, sigma, blend = SNOW[severity - 1]
    h, w = x.shape[:2]
    flakes = rng.normal(loc=loc, scale=scale, size=(h, w)).astype(np.float32)
    flakes = np.asarray(_zoom_centre(Image.fromarray(flakes, mode="F"), zoom))
    flakes = np.clip(np.where(flakes < threshold, 0, flakes), 0, 1)
    flakes = _motion_blur(flakes, radius, sigma, rng.uniform(-135, -45))
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # OpenCV's RGB2GRAY weights
    x = blend * x + (1 - blend) * np.maximum(x, grey[..., None] * 1.5 + 0.5)
    return x + flakes[..., None] + np.rot90(flakes, k=2)[..., None]


@functools.lru_cache(maxsize=1)
def frost_textures() -> tuple[Array, ...]:
    """ImageNet-C's frost photographs (the reference draws from the first five), from imagecorruptions-imaug.

    The package is located, not imported: importing it loads OpenCV and scikit-image, which nothing here needs.
    """
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("imagecorruptions")
    folder = Path(next(iter(spec.submodule_search_locations))) / "frost" if spec else None
    names = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"]
    if folder is None or not all((folder / n).is_file() for n in names):
        raise ConfigError("the frost corruption needs the frost textures of the imagecorruptions-imaug package; "
                          "install it (pip install imagecorruptions-imaug)")
    return tuple(np.asarray(Image.open(folder / n).convert("RGB"), dtype=np.float32) / 255 for n in names)


def frost(x: Array, severity: int, rng: np.random.Generator) -> Array:
    image_weight, frost_weight = FROST[severity - 1]
    texture = frost_textures()[rng.integers(5)]
    h, w = x.shape[:2]
    th, tw = texture.shape[:2]
    if th < h or tw < w:  # images larger than the texture: enlarge the texture just enough
        f = max(h / th, w / tw)
        texture = _float(_pil(texture).resize((int(np.ceil(tw * f)), int(np.ceil(th * f))), Image.BILINEAR))
        th, tw = texture.shape[:2]
    top, left = rng.integers(0, th - h + 1), rng.integers(0, tw - w + 1)
    return image_weight * x + frost_weight * texture[top:top + h, left:left + w]


def plasma_fractal(size: int, roughness_decay: float, rng: np.random.Generator) -> Array:
    """A (size, size) diamond-square fractal in [0, 1], wrapping at the borders; size a power of two.

    The noise added at each level is wibble * U(-wibble, wibble), wibble starting at 100 and divided by
    `roughness_decay` per level, as the reference defines it.
    """
    grid = np.zeros((size, size), dtype=np.float64)
    step, wibble = size, 100.0

    def noisy_mean(total: Array) -> Array:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = grid[0::step, 0::step]
        square = corners + np.roll(corners, -1, axis=0)
        square = square + np.roll(square, -1, axis=1)
        grid[half::step, half::step] = noisy_mean(square)  # square step: centres from four corners
        centres = grid[half::step, half::step]
        # Diamond step: each edge midpoint from its two corners and the two centres either side of it.
        grid[0::step, half::step] = noisy_mean(corners + np.roll(corners, -1, axis=1)
                                               + centres + np.roll(centres, 1, axis=0))
        grid[half::step, 0::step] = noisy_mean(corners + np.roll(corners, -1, axis=0)
                                               + centres + np.roll(centres, 1, axis=1))
        step, wibble = half, wibble / roughness_decay
    grid -= grid.min()
    return grid / grid.max()


def fog(x: Array, severity: int, rng: np.random.Generator) -> Array:
    strength, decay = FOG[severity - 1]
    h, w = x.shape[:2]
    size = max(256, 1 << int(np.ceil(np.log2(max(h, w)))))  # the reference: a 256 map cropped to 224
    peak = x.max()
    x = x + strength * plasma_fractal(size, decay, rng)[:h, :w, None]
    return x * peak / (peak + strength)


def spatter(x: Array, severity: int, rng: np.random.Generator) -> Array:
    """Water drops (severities 1-3) or mud (4-5) from a thresholded blurred noise layer."""
    loc, scale, sigma, threshold, intensity, mud = SPATTER[severity - 1]
    liquid = _gaussian(rng.normal(loc=loc, scale=scale, size=x.shape[:2]), sigma)
    liquid[liquid < threshold] = 0
    if mud:
        m = _gaussian((liquid > threshold).astype(np.float32), intensity)
        m[m < 0.8] = 0
        return x * (1 - m[..., None]) + m[..., None] * np.array([63, 42, 20], dtype=np.float32) / 255
    layer = np.clip(liquid * 255, 0, 255).astype(np.uint8)
    # The reference takes Canny edges of this layer; it is zero outside the drops and >= threshold*255 inside,
    # so the edges are the drops' outlines.
    wet = layer > 0
    outline = wet & ~ndimage.binary_erosion(wet)
    dist = np.minimum(ndimage.distance_transform_edt(~outline), 20)
    dist = ndimage.uniform_filter(dist, 3).astype(np.uint8)
    dist = _equalize_hist(dist)
    emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32)
    dist = np.clip(ndimage.correlate(dist.astype(np.float32), emboss, mode="mirror"), 0, 255).astype(np.uint8)
    dist = ndimage.uniform_filter(dist.astype(np.float32), 3)
    m = layer * dist
    if m.max() > 0:
        m = m / m.max() * intensity
    # "pale turquoise" in the reference's channel order, applied to the array's channels as it does
    return x + m[..., None] * np.array([175, 238, 238], dtype=np.float32) / 255


def _equalize_hist(img: Array) -> Array:
    """OpenCV's equalizeHist for uint8: map grey levels through the normalised cumulative histogram."""
    cdf = np.bincount(img.ravel(), minlength=256).cumsum()
    low = cdf[cdf > 0][0]
    if cdf[-1] == low:
        return img
    lut = np.clip(np.rint((cdf - low) * 255 / (cdf[-1] - low)), 0, 255).astype(np.uint8)
    return lut[img]


# --- digital -----------------------------------------------------------------------------------------------

def brightness(x: Array, severity: int, rng: np.random.Generator) -> Array:
    return _hsv_map(x, 2, lambda v: v + BRIGHTNESS[severity - 1])


def saturate(x: Array, severity: int, rng: np.random.Generator) -> Array:
    factor, offset = SATURATE[severity - 1]
    return _hsv_map(x, 1, lambda s: s * factor + offset)


def contrast(x: Array, severity: int, rng: np.random.Generator) -> Array:
    mean = x.mean(axis=(0, 1), keepdims=True)
    return (x - mean) * CONTRAST[severity - 1] + mean


def elastic_transform(x: Array, severity: int, rng: np.random.Generator) -> Array:
    """A random affine warp composed with a smooth random displacement field, sampled once (bilinear).

    The reference warps (OpenCV) and then displaces (scipy), interpolating twice; composing the two maps and
    interpolating once gives the same geometry with one bilinear smoothing instead of two.
    """
    h, w = x.shape[:2]
    alpha, sigma, affine = (v * min(h, w) / 224 for v in ELASTIC[severity - 1])
    centre = np.array([w, h], dtype=np.float64) // 2
    half = min(h, w) // 3
    src = np.array([centre + half, [centre[0] + half, centre[1] - half], centre - half])
    dst = src + rng.uniform(-affine, affine, size=src.shape)
    forward = np.linalg.solve(np.c_[src, np.ones(3)], dst).T  # (2, 3): src (x, y, 1) -> dst (x, y)
    inverse = np.linalg.inv(np.vstack([forward, [0, 0, 1]]))
    dx = _gaussian(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha
    dy = _gaussian(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    px, py = xx + dx, yy + dy
    sx = inverse[0, 0] * px + inverse[0, 1] * py + inverse[0, 2]
    sy = inverse[1, 0] * px + inverse[1, 1] * py + inverse[1, 2]
    return np.stack([ndimage.map_coordinates(x[..., ch], [sy, sx], order=1, mode="reflect")
                     for ch in range(x.shape[2])], axis=-1)


def pixelate(x: Array, severity: int, rng: np.random.Generator) -> Array:
    img = _pil(x)
    w, h = img.size
    c = PIXELATE[severity - 1]
    small = img.resize((max(1, int(w * c)), max(1, int(h * c))), Image.BOX)
    return _float(small.resize((w, h), Image.BOX))


def jpeg_bytes(image: Array, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def jpeg_roundtrip(image: Array, quality: int) -> Array:
    """uint8 image -> JPEG at `quality` -> uint8 image."""
    return np.asarray(Image.open(io.BytesIO(jpeg_bytes(image, quality))).convert("RGB"))


def jpeg_compression(x: Array, severity: int, rng: np.random.Generator) -> Array:
    return jpeg_roundtrip(to_uint8(x), JPEG_QUALITY[severity - 1]).astype(np.float32) / 255


# ImageNet-C's 15, in its order (noise, blur, weather, digital), then the 4 the paper adds (section 4.3).
CORRUPTIONS: dict[str, Callable[[Array, int, np.random.Generator], Array]] = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur, "glass_blur": glass_blur, "motion_blur": motion_blur, "zoom_blur": zoom_blur,
    "snow": snow, "frost": frost, "fog": fog, "brightness": brightness, "contrast": contrast,
    "elastic_transform": elastic_transform, "pixelate": pixelate, "jpeg_compression": jpeg_compression,
    "speckle_noise": speckle_noise, "gaussian_blur": gaussian_blur, "spatter": spatter, "saturate": saturate,
}
IMAGENET_C = tuple(CORRUPTIONS)[:15]
EXTRA = tuple(CORRUPTIONS)[15:]


def corrupt(image: Array, name: str, severity: int, rng: np.random.Generator) -> Array:
    """Corrupt one uint8 (H, W, 3) image; returns uint8 of the same shape."""
    if name not in CORRUPTIONS:
        from ..errors import suggest

        raise ConfigError(f"unknown corruption {name!r}{suggest(name, CORRUPTIONS)}; one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ConfigError(f"severity {severity} is not one of 1-5")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    x = image.astype(np.float32) / 255
    return to_uint8(np.asarray(CORRUPTIONS[name](x, severity, rng)))
