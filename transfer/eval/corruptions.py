"""The ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019) and the paper's four extra ones, 5 severities each.

Written to give the pixels of the authors' generator (clovaai/assembled-cnn datasets/CE_dataset/
CE_validation_generator.py, Hendrycks' ImageNet-C code with the four added), its parameters at every crop size (they
were set for 224 px; the official 256 px sets use them unchanged). tests/test_robustness.py compares each corruption
at severities 1-5 with that generator's own output on the same image and the same random draws
(tools/official_corruption_fixtures.py): 16 of the 19 agree to within one grey level, most exactly. What differs:
- every random draw comes from the numpy generator passed in (seeded per image, corruption and severity), never
  numpy's global state, so a corrupted set is the same whichever worker makes it and in whatever order; the draws
  are made in the reference's order, so its seeded legacy generator passed in gives the reference's pixels;
- glass blur's pixel swaps are vectorised (the reference loops over every pixel in Python, about 4 s for one 224 px
  image at severity 5): the same kind of shuffle in another order, so its pixels cannot be compared (`glass_blur`);
- the OpenCV steps (disk kernel, warpAffine's fixed-point bilinear warp, spatter's Canny edges, chamfer distance,
  box blurs, histogram equalisation) are reproduced with numpy and scipy, with OpenCV's arithmetic; ImageMagick's
  motion blur (motion blur, snow) is a Gaussian-weighted line of taps, checked against ImageMagick 6.9.11 (Q16)
  through the official code: within one grey level, and snow keeps the generator's two 8-bit truncations.
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
# alpha, sigma, affine shift, in pixels. The reference writes 244 * k (it meant 224) and the official generator
# uses these same pixel values at every crop size (its 256 px sets too), so they are not scaled with the image.
ELASTIC = tuple(tuple(244 * k for k in ks) for ks in (
    (2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02), (0.12, 0.01, 0.02)))
PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)
JPEG_QUALITY = (25, 18, 15, 10, 7)
# loc, scale, sigma, threshold, intensity, mud (0: water drops, 1: mud)
SPATTER = ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
           (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1))
# factor, offset on HSV saturation; severity 5 is (20, 0.2) in the official generator
# (datasets/CE_dataset/CE_validation_generator.py, saturate) and in imagecorruptions.
SATURATE = ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))

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


def rgb_to_hsv(rgb: Array) -> Array:
    """RGB in [0, 1] to HSV in [0, 1], in float64, by the formulas scikit-image's rgb2hsv uses (which the reference
    calls): value the max, saturation the range over the max, hue from the max channel (blue over green over red)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    v = rgb.max(-1)
    delta = np.ptp(rgb, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(delta == 0, 0.0, delta / v)
        h = np.zeros_like(v)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        h = np.where(r == v, (g - b) / delta, h)
        h = np.where(g == v, 2.0 + (b - r) / delta, h)
        h = np.where(b == v, 4.0 + (r - g) / delta, h)
        h = np.where(delta == 0, 0.0, (h / 6.0) % 1.0)
    return np.nan_to_num(np.stack([h, s, v], axis=-1), nan=0.0)


def hsv_to_rgb(hsv: Array) -> Array:
    """The inverse of `rgb_to_hsv` (scikit-image's hsv2rgb formulas: the hue's sextant picks from v, p, q, t)."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hi = np.floor(h * 6)
    f = h * 6 - hi
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    sextant = hi.astype(np.uint8) % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.empty(hsv.shape, dtype=np.float64)
    for k, chosen in enumerate(choices):
        here = sextant == k
        for c in range(3):
            out[..., c][here] = chosen[c][here]
    return out


def _hsv_map(x: Array, channel: int, fn: Callable[[Array], Array]) -> Array:
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


def clipped_zoom(x: Array, zoom: float) -> Array:
    """Scale the centre of an (H, W[, C]) array by `zoom`, keeping its size: the reference's clipped_zoom (the
    ceil(H / zoom) centre, scipy's linear zoom, the middle H x W of the result), channels one at a time."""
    h, w = x.shape[:2]
    ch, cw = int(np.ceil(h / zoom)), int(np.ceil(w / zoom))
    top, left = (h - ch) // 2, (w - cw) // 2
    centre = x[top:top + ch, left:left + cw]
    planes = [centre] if centre.ndim == 2 else [centre[..., c] for c in range(centre.shape[2])]
    zoomed = np.stack([ndimage.zoom(p, zoom, order=1) for p in planes], axis=-1)
    trim_h, trim_w = (zoomed.shape[0] - h) // 2, (zoomed.shape[1] - w) // 2
    out = zoomed[trim_h:trim_h + h, trim_w:trim_w + w]
    return out[..., 0] if x.ndim == 2 else out


def zoom_blur(x: Array, severity: int, rng: np.random.Generator) -> Array:
    """The mean of the image and up to 16 zoomed copies of it, in float32 as the reference sums them."""
    zooms = ZOOM_BLUR[severity - 1]
    x = np.asarray(x, dtype=np.float32)
    out = np.zeros_like(x)
    for z in zooms:
        out += clipped_zoom(x, float(z))
    return (x + out) / (len(zooms) + 1)


# --- weather -----------------------------------------------------------------------------------------------

def snow(x: Array, severity: int, rng: np.random.Generator) -> Array:
    loc, scale, zoom, threshold, radius, sigma, blend = SNOW[severity - 1]
    h, w = x.shape[:2]
    flakes = clipped_zoom(rng.normal(loc=loc, scale=scale, size=(h, w)), zoom)
    # The official generator hands the flakes to ImageMagick as an 8-bit image (truncated) and reads the blurred
    # layer back in 8 bits, which ImageMagick truncates too (measured against it: rounding instead left a quarter
    # of the pixels a grey level off, and the layer is added twice). 1e-3: float32 sums of whole grey levels can
    # land a hair under them.
    flakes = np.floor(np.clip(np.where(flakes < threshold, 0, flakes), 0, 1) * 255)
    flakes = np.floor(_motion_blur(flakes, radius, sigma, rng.uniform(-135, -45)) + 1e-3) / 255
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
    return tuple(np.asarray(Image.open(folder / n).convert("RGB")) for n in names)  # uint8


def frost(x: Array, severity: int, rng: np.random.Generator) -> Array:
    """The image blended with a random crop of a frost photograph, in grey levels as the reference blends them
    (both uint8 arrays times the weights), so the result is final uint8, not [0, 1] floats."""
    image_weight, frost_weight = FROST[severity - 1]
    texture = frost_textures()[rng.integers(5)]
    h, w = x.shape[:2]
    th, tw = texture.shape[:2]
    if th <= h or tw <= w:  # images as large as the texture: enlarge the texture just enough
        f = max((h + 1) / th, (w + 1) / tw)
        texture = np.asarray(Image.fromarray(texture).resize((int(np.ceil(tw * f)), int(np.ceil(th * f))),
                                                             Image.BILINEAR))
        th, tw = texture.shape[:2]
    # The reference draws the corner from [0, size - crop), never the last one; the same bounds draw the same crop.
    top, left = rng.integers(0, th - h), rng.integers(0, tw - w)
    blend = image_weight * np.rint(x * 255) + frost_weight * texture[top:top + h, left:left + w]
    return np.clip(blend, 0, 255).astype(np.uint8)


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
    """Water drops (severities 1-3) or mud (4-5) from a thresholded blurred noise layer.

    The reference shapes the water with OpenCV (Canny edges, a 5x5 chamfer distance, box blurs, histogram
    equalisation, an emboss filter); each step is reproduced below with OpenCV's own arithmetic."""
    loc, scale, sigma, threshold, intensity, mud = SPATTER[severity - 1]
    x = np.asarray(x, dtype=np.float32)
    liquid = _gaussian(rng.normal(loc=loc, scale=scale, size=x.shape[:2]), sigma)
    liquid[liquid < threshold] = 0
    if mud:
        m = _gaussian((liquid > threshold).astype(np.float32), intensity)
        m[m < 0.8] = 0
        return x * (1 - m[..., None]) + m[..., None] * np.array([63, 42, 20], dtype=np.float32) / 255
    layer = np.clip(liquid * 255, 0, 255).astype(np.uint8)
    dist = np.minimum(chamfer_distance(canny(layer, 50, 150)), np.float32(20))  # cv2.threshold(20, TRUNC)
    dist = _box_blur3(dist).astype(np.uint8)
    dist = _equalize_hist(dist)
    emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32)
    dist = np.clip(ndimage.correlate(dist.astype(np.float32), emboss, mode="mirror"), 0, 255).astype(np.uint8)
    dist = _box_blur3(dist).astype(np.float32)
    m = layer * dist
    if m.max() > 0:
        m = m / m.max() * np.float32(intensity)
    # "pale turquoise" in the reference's channel order, applied to the array's channels as it does
    return x + m[..., None] * np.float32([175 / 255, 238 / 255, 238 / 255])


def _box_blur3(img: Array) -> Array:
    """OpenCV's blur(img, (3, 3)) (BORDER_REFLECT_101): the 3x3 sum times 1/9 in float64, then back to the input's
    type (float32; uint8 rounded to nearest)."""
    p = np.pad(img.astype(np.float64), 1, mode="reflect")  # numpy's "reflect" is REFLECT_101
    h, w = img.shape
    total = sum(p[i:i + h, j:j + w] for i in range(3) for j in range(3))
    mean = total * (1 / 9)
    return np.rint(mean).astype(np.uint8) if img.dtype == np.uint8 else mean.astype(img.dtype)


def canny(img: Array, low: float, high: float) -> Array:
    """OpenCV's Canny on a uint8 image (3x3 Sobel with replicated borders, L1 gradient magnitude): True on edges.

    Non-maximum suppression by OpenCV's rule (the gradient's direction binned at tan(22.5) in 15-bit fixed point;
    strictly greater than the neighbour behind, at least the one ahead, both strictly on diagonals), then
    hysteresis: candidates above `low` that are 8-connected to one above `high`."""
    p = np.pad(img.astype(np.int32), 1, mode="edge")
    dx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    dy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    mag = np.abs(dx) + np.abs(dy)
    mp = np.pad(mag, 1)  # the magnitude outside the image is 0

    def at(oy: int, ox: int) -> Array:
        return mp[1 + oy:mp.shape[0] - 1 + oy, 1 + ox:mp.shape[1] - 1 + ox]

    ax, ay = np.abs(dx).astype(np.int64), np.abs(dy).astype(np.int64) << 15
    tg22x = ax * 13573  # tan(22.5 deg) * 2^15, rounded
    tg67x = tg22x + (ax << 16)
    same_sign = (dx ^ dy) >= 0
    horizontal = (mag > at(0, -1)) & (mag >= at(0, 1))
    vertical = (mag > at(-1, 0)) & (mag >= at(1, 0))
    diag = np.where(same_sign, (mag > at(-1, -1)) & (mag > at(1, 1)), (mag > at(-1, 1)) & (mag > at(1, -1)))
    peak = np.where(ay < tg22x, horizontal, np.where(ay > tg67x, vertical, diag))
    candidate = peak & (mag > int(np.floor(low)))
    labels, n = ndimage.label(candidate, structure=np.ones((3, 3), dtype=bool))
    strong = np.zeros(n + 1, dtype=bool)
    strong[labels[candidate & (mag > int(np.floor(high)))]] = True
    strong[0] = False
    return strong[labels]


# OpenCV's 5x5 chamfer mask for DIST_L2 (axial 1, diagonal 1.4, knight's move 2.1969), in 1/65536ths.
_CHAMFER = {(0, 1): 65536, (1, 1): 91750, (1, 2): 143976}


def chamfer_distance(edges: Array, limit: float = 20) -> Array:
    """OpenCV's distanceTransform(~edges, DIST_L2, 5): each pixel's 5x5-chamfer distance to the nearest edge pixel
    (float32), exact up to `limit`; beyond it the value is only known to exceed `limit` (the caller truncates).

    Relaxation over the 16 chamfer moves: every move costs at least 1, so `limit` + 1 rounds settle every
    distance up to `limit`, which gives what OpenCV's two raster passes give there."""
    big = np.int64(1) << 40
    h, w = edges.shape
    d = np.where(edges, 0, big).astype(np.int64)
    moves = [(sy * a, sx * b, cost) for (a, b), cost in _CHAMFER.items() for sy in (-1, 1) for sx in (-1, 1)]
    moves += [(sy * b, sx * a, cost) for (a, b), cost in _CHAMFER.items() if a != b for sy in (-1, 1)
              for sx in (-1, 1)]
    moves = list(dict.fromkeys(m for m in moves if m[:2] != (0, 0)))
    pad = 2
    for _ in range(int(limit) + 1):
        padded = np.pad(d, pad, constant_values=big)
        best = d
        for oy, ox, cost in moves:
            best = np.minimum(best, padded[pad + oy:pad + oy + h, pad + ox:pad + ox + w] + cost)
        if np.array_equal(best, d):
            break
        d = best
    return (d.astype(np.float32) * np.float32(1 / 65536)).astype(np.float32)


def _equalize_hist(img: Array) -> Array:
    """OpenCV's equalizeHist for uint8: grey levels through the cumulative histogram (the first occupied level to
    0), scaled by 255 / (pixels above the first level) in float32 and rounded, as OpenCV computes it."""
    hist = np.bincount(img.ravel(), minlength=256)
    first = int(np.flatnonzero(hist)[0])
    if hist[first] == img.size:
        return img
    scale = np.float32(255) / np.float32(img.size - hist[first])
    above = np.cumsum(hist) - hist[:first + 1].sum()  # pixels in levels first+1 .. i
    lut = np.clip(np.rint(above.astype(np.float32) * scale), 0, 255).astype(np.uint8)
    lut[:first + 1] = 0
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


def _reflect_101(i: Array, n: int) -> Array:
    """Indices folded into [0, n) by reflection without repeating the edge (OpenCV's BORDER_REFLECT_101)."""
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    i = np.mod(i, period)
    return np.where(i >= n, period - i, i)


def warp_affine(x: Array, forward: Array) -> Array:
    """OpenCV's warpAffine(x, forward) on a float32 image (bilinear, BORDER_REFLECT_101), which the reference calls:
    `forward` maps source to destination points; each output pixel samples the inverse map at the source position
    rounded to 1/32 pixel (OpenCV's fixed-point coordinates, 10 bits, then 5 for the interpolation table)."""
    m = forward
    d = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    d = 1.0 / d if d != 0 else 0.0
    a11, a22, a12, a21 = m[1, 1] * d, m[0, 0] * d, -m[0, 1] * d, -m[1, 0] * d  # invertAffineTransform's order
    b1, b2 = -a11 * m[0, 2] - a12 * m[1, 2], -a21 * m[0, 2] - a22 * m[1, 2]
    h, w = x.shape[:2]
    cols, rows = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
    # 1024ths of a pixel, +16 to round to the 32nds the interpolation table holds
    sx = (np.rint((a12 * rows + b1) * 1024).astype(np.int64)[:, None] + 16
          + np.rint(a11 * cols * 1024).astype(np.int64)[None, :]) >> 5
    sy = (np.rint((a22 * rows + b2) * 1024).astype(np.int64)[:, None] + 16
          + np.rint(a21 * cols * 1024).astype(np.int64)[None, :]) >> 5
    ix, iy = sx >> 5, sy >> 5
    fx = (sx & 31).astype(np.float32) * np.float32(1 / 32)
    fy = (sy & 31).astype(np.float32) * np.float32(1 / 32)
    x0, x1, y0, y1 = _reflect_101(ix, w), _reflect_101(ix + 1, w), _reflect_101(iy, h), _reflect_101(iy + 1, h)
    weights = [((1 - fy) * (1 - fx)), ((1 - fy) * fx), (fy * (1 - fx)), (fy * fx)]
    if x.ndim == 3:
        weights = [wt[..., None] for wt in weights]
    return x[y0, x0] * weights[0] + x[y0, x1] * weights[1] + x[y1, x0] * weights[2] + x[y1, x1] * weights[3]


def affine_transform_points(src: Array, dst: Array) -> Array:
    """The (2, 3) affine map taking three src points to three dst points (OpenCV's getAffineTransform system)."""
    a = np.zeros((6, 6))
    a[0::2, 0:2], a[0::2, 2] = src, 1
    a[1::2, 3:5], a[1::2, 5] = src, 1
    return np.linalg.solve(a, dst.astype(np.float64).reshape(6)).reshape(2, 3)


def elastic_transform(x: Array, severity: int, rng: np.random.Generator) -> Array:
    """A random affine warp (OpenCV's warpAffine, reproduced by `warp_affine`), then a smooth random displacement
    field (scipy's bilinear map_coordinates, reflecting), as the reference does it, in float32.

    The reference takes the centre as (H // 2, W // 2) and uses it as an (x, y) point; on the square crops it is
    given that is the centre, and it is kept so for the same draws on other shapes too.
    """
    alpha, sigma, affine = ELASTIC[severity - 1]
    x = np.asarray(x, dtype=np.float32)
    shape = x.shape
    centre = np.float32(shape[:2]) // 2
    half = min(shape[:2]) // 3
    src = np.float32([centre + half, [centre[0] + half, centre[1] - half], centre - half])
    dst = src + rng.uniform(-affine, affine, size=src.shape).astype(np.float32)
    x = warp_affine(x, affine_transform_points(src, dst))
    dx = (_gaussian(rng.uniform(-1, 1, size=shape[:2]), sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
    dy = (_gaussian(rng.uniform(-1, 1, size=shape[:2]), sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return np.stack([ndimage.map_coordinates(x[..., ch], [yy + dy, xx + dx], order=1, mode="reflect")
                     for ch in range(shape[2])], axis=-1)


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
    x = image / 255.0  # float64 as the reference (np.array(x) / 255.); the float32 ones cast it back exactly
    out = np.asarray(CORRUPTIONS[name](x, severity, rng))
    return out if out.dtype == np.uint8 else to_uint8(out)  # a uint8 result is final (frost's)
