"""Nuclei segmentation in the DAPI channel.

The convenience function :func:`segment_nuclei` chains public building blocks that can also be
used on their own:

1. :func:`project_stack` - a z-stack ``(Z, Y, X)`` becomes one plane ``(Y, X)``, each small
   tile taken from its sharpest plane (``'focus'``, so defocused halos do not merge nuclei);
   nuclei are counted as projected footprints (FISH sections are thin), signals keep their z
   elsewhere.
2. :func:`downsample_mean` - block mean to a working pixel of about 0.4 um. Nuclei are 5-20 um
   across, so this loses little accuracy and makes every later step about 16 times cheaper.
3. :func:`estimate_background` - a very smooth background (low percentile in large blocks),
   subtracted to correct uneven illumination and autofluorescence.
4. :func:`foreground_mask` - a global threshold computed on log intensity above the noise
   (:func:`threshold_log_otsu`, keeps dim nuclei) combined with a local-contrast term (a pixel
   must reach a fraction of the brightest signal around it, which trims blur halos and opens
   dim seams between neighbours); small holes are filled.
5. :func:`split_touching` - watershed of the smoothed distance transform from h-maxima markers,
   with the marker depth in micrometres, so elongated nuclei are not cut in pieces.
6. :func:`trim_to_object_level` - each first-pass nucleus (found at half the working
   resolution) keeps the pixels above half of its own mean brightness, which removes the halo
   of out-of-focus nuclei and thins bridges between them; step 5 then runs again.
7. :func:`filter_by_area` - objects outside ``[min_area_um2, max_area_um2]`` are removed
   (debris, unsplit clumps); nuclei cut by the image edge need only a quarter of the minimum.
8. :func:`upsample_labels` - nearest-neighbour back to the input grid.

Labels made elsewhere (Cellpose, StarDist, a hand-drawn mask) enter through
:func:`prepare_labels`. A region of interest (the invasive tumour area) is applied with
:func:`apply_roi`; nuclei cut by its edge or by the image edge are kept and reported by
:func:`edge_labels`. :func:`nucleus_shape_table` measures area, solidity, eccentricity and
DAPI content per nucleus so that irregular or overlapping nuclei can be flagged downstream.

Label images are ``int32`` of shape ``(Y, X)``, sequential from 1, with 0 for background.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.measure import label as connected_components
from skimage.measure import regionprops_table
from skimage.morphology import local_maxima
from skimage.segmentation import relabel_sequential, watershed

__all__ = [
    "DEFAULT_PIXEL_UM",
    "apply_roi",
    "downsample_mean",
    "edge_labels",
    "estimate_background",
    "filter_by_area",
    "foreground_mask",
    "nucleus_shape_table",
    "prepare_labels",
    "project_stack",
    "segment_nuclei",
    "split_touching",
    "threshold_log_otsu",
    "trim_to_object_level",
    "upsample_labels",
]

#: Lateral pixel size assumed when ``spacing_um`` is None (a 60-100x objective).
DEFAULT_PIXEL_UM = 0.1

#: Columns of :func:`nucleus_shape_table` (the DAPI columns only when ``dapi`` is given).
SHAPE_COLUMNS = (
    "label",
    "centroid_y",
    "centroid_x",
    "area_um2",
    "major_axis_um",
    "minor_axis_um",
    "eccentricity",
    "solidity",
    "touches_border",
)
DAPI_COLUMNS = ("mean_dapi", "integrated_dapi", "relative_dapi_content")

_PROJECTIONS = ("max", "mean", "focus")


# --------------------------------------------------------------------------------------------
# input checks (public boundary)
# --------------------------------------------------------------------------------------------


def _as_float_image(dapi: object, name: str = "dapi") -> np.ndarray:
    """Return ``dapi`` as a float32 array of 2 or 3 dimensions with non-finite values filled."""
    array = np.asarray(dapi)
    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise TypeError(
            f"{name} must hold real numbers (integer or float), got dtype {array.dtype}"
        )
    if array.ndim not in (2, 3):
        raise ValueError(f"{name} must be 2D (Y, X) or 3D (Z, Y, X), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty, got shape {array.shape}")
    array = array.astype(np.float32, copy=False)
    if np.issubdtype(np.asarray(dapi).dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            fill = array[finite].min() if finite.any() else 0.0
            array = np.where(finite, array, np.float32(fill))
    return array


def _lateral_spacing(spacing_um: Sequence[float] | None, ndim: int) -> tuple[float, float]:
    """Return the (y, x) pixel size in micrometres from a (y, x) or (z, y, x) spacing."""
    if spacing_um is None:
        return (DEFAULT_PIXEL_UM, DEFAULT_PIXEL_UM)
    try:
        spacing = tuple(float(s) for s in spacing_um)
    except (TypeError, ValueError):
        raise TypeError(
            f"spacing_um must be a sequence of {ndim} sizes in micrometres, got {spacing_um!r}"
        ) from None
    if len(spacing) != ndim or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(
            f"spacing_um must hold {ndim} positive sizes in micrometres for a {ndim}D image, "
            f"got {spacing_um!r}"
        )
    return spacing[-2], spacing[-1]


def _check_positive(name: str, value: float, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int | float | np.number) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _check_parameters(positive: dict[str, float], fractions: dict[str, float]) -> None:
    """Check positive finite numbers and fractions in [0, 1), naming the first bad one."""
    for name, value in positive.items():
        _check_positive(name, value)
    for name, value in fractions.items():
        if not isinstance(value, int | float | np.number) or not 0 <= value < 1:
            raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")


def _check_roi(roi: object, shape: tuple[int, int]) -> np.ndarray:
    """Return ``roi`` as a boolean (Y, X) array of ``shape``."""
    mask = np.asarray(roi)
    if mask.shape != tuple(shape):
        raise ValueError(f"roi must have shape {tuple(shape)} (Y, X), got shape {mask.shape}")
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.number):
            raise TypeError(f"roi must be a boolean or 0/1 mask, got dtype {mask.dtype}")
        mask = mask != 0
    return mask


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------


#: Side (pixels, even) of the square tiles on which the ``'focus'`` projection picks a plane.
_FOCUS_TILE_PX = 8
#: Gaussian smoothing (in tiles) of the per-plane focus energy before the choice.
_FOCUS_SMOOTH_TILES = 2.0


def _tile_sums(array: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
    """Sum the last two axes over ``tile`` blocks (both axes multiples of the tile), in float32.

    Strided row sums, then strided column sums: every pass is a plain vectorised add (a
    reshape-and-sum over the short block axes is about 15x slower).
    """
    ty, tx = tile
    rows = array[..., 0::ty, :].astype(np.float32)
    for k in range(1, ty):
        rows += array[..., k::ty, :]
    tiles = rows[..., 0::tx].copy()
    for k in range(1, tx):
        tiles += rows[..., k::tx]
    return tiles


def _focus_energy(stack: np.ndarray, tile: int) -> np.ndarray:
    """Squared differences of neighbouring pixel pairs (along y and x) summed per tile and plane.

    ``stack`` is (Z, Y, X) with Y and X multiples of the even ``tile``; the result is
    (Z, Y / tile, X / tile).
    """
    across = stack[:, :, 1::2] - stack[:, :, 0::2]
    across *= across
    down = stack[:, 1::2, :] - stack[:, 0::2, :]
    down *= down
    return _tile_sums(across, (tile, tile // 2)) + _tile_sums(down, (tile // 2, tile))


def _focus_projection(stack: np.ndarray) -> np.ndarray:
    """Each tile of the output copied from the plane with the most (smoothed) fine detail."""
    n_z, ny, nx = stack.shape
    if n_z == 1:
        return stack[0]
    tile = _FOCUS_TILE_PX
    pad = ((0, 0), (0, -ny % tile), (0, -nx % tile))
    if pad[1][1] or pad[2][1]:
        stack = np.pad(stack, pad, mode="edge")
    energy = _focus_energy(stack, tile)
    smooth = _FOCUS_SMOOTH_TILES
    choice = ndi.gaussian_filter(energy, (0, smooth, smooth), mode="nearest").argmax(axis=0)
    by, bx = choice.shape
    tiles = stack.reshape(n_z, by, tile, bx, tile)
    picked = tiles[choice, np.arange(by)[:, None], :, np.arange(bx)[None, :], :]
    return picked.transpose(0, 2, 1, 3).reshape(by * tile, bx * tile)[:ny, :nx]


def project_stack(dapi: np.ndarray, method: str = "max") -> np.ndarray:
    """Project a z-stack onto one plane; a 2D image is returned as float32 unchanged.

    Parameters
    ----------
    dapi : array_like, shape (Y, X) or (Z, Y, X)
        DAPI intensities, any real dtype.
    method : {'max', 'mean', 'focus'}
        ``'max'`` keeps every nucleus at its brightest plane (default); ``'mean'`` averages out
        noise when all planes are in focus; ``'focus'`` (extended depth of field) copies every
        small tile from its sharpest plane, so the out-of-focus halos of the other planes do
        not widen nuclei or fill the gaps between them. ``segment_nuclei`` uses ``'focus'``.

    Returns
    -------
    numpy.ndarray, shape (Y, X), float32

    Raises
    ------
    ValueError
        If ``dapi`` is not 2D or 3D, is empty, or ``method`` is unknown.

    Notes
    -----
    A maximum projection takes, around each nucleus, the brightest of its defocused copies
    in the other planes: edges blur and the dark seams between touching nuclei fill in. The
    ``'focus'`` method is a shape-from-focus selection (Pertuz et al. 2013): the focus
    measure of each plane is the squared difference of neighbouring pixels along y and x
    (a gradient energy in the spirit of Brenner et al. 1976) summed over tiles of
    8 x 8 pixels; it is smoothed with a Gaussian of 2 tiles, so the choice map is piecewise
    smooth and follows whole nuclei rather than noise, and each tile is then copied unchanged
    from the plane of highest energy. Values are never combined across planes, so the
    background is not biased upwards as in a maximum of noisy planes. Tiles are in pixels:
    at 0.1 um per pixel the choice map has a resolution of 0.8 um and a smoothing of 1.6 um.
    The cost is about five passes over the stack (about 0.13 s for 9 x 2048 x 2048).

    References
    ----------
    Pertuz S, Puig D, Garcia MA. Analysis of focus measure operators for shape-from-focus.
    Pattern Recognit 2013;46(5):1415-1432.
    Brenner JF, Dew BS, Horton JB, et al. An automated microscope for cytologic research.
    J Histochem Cytochem 1976;24(1):100-111.
    Forster B, Van De Ville D, Berent J, Sage D, Unser M. Complex wavelets for extended
    depth-of-field: a new method for the fusion of multichannel microscopy images.
    Microsc Res Tech 2004;65(1-2):33-42.

    Examples
    --------
    >>> stack = np.zeros((3, 2, 2)); stack[1, 0, 0] = 5
    >>> project_stack(stack).tolist()
    [[5.0, 0.0], [0.0, 0.0]]

    A sharp plane wins over a brighter but blurred copy of it:

    >>> sharp = np.random.default_rng(0).uniform(0, 100, (32, 32))
    >>> blurred = ndi.gaussian_filter(sharp, 3) + 50
    >>> focus = project_stack(np.stack([blurred, sharp]), "focus")
    >>> bool(np.array_equal(focus, sharp.astype(np.float32)))
    True
    """
    if method not in _PROJECTIONS:
        raise ValueError(f"method must be one of {_PROJECTIONS}, got {method!r}")
    image = _as_float_image(dapi)
    if image.ndim == 2:
        return image
    if method == "focus":
        return _focus_projection(image)
    return image.max(axis=0) if method == "max" else image.mean(axis=0, dtype=np.float32)


def downsample_mean(image: np.ndarray, factors: tuple[int, int]) -> np.ndarray:
    """Shrink a 2D image by integer factors, each output pixel the mean of one block.

    Parameters
    ----------
    image : numpy.ndarray, shape (Y, X)
        Any real dtype.
    factors : tuple of int
        Block size ``(fy, fx)``, each >= 1. Edges that do not fill a block are padded by
        repeating the last row or column.

    Returns
    -------
    numpy.ndarray, shape (ceil(Y / fy), ceil(X / fx)), float32

    Raises
    ------
    ValueError
        If ``image`` is not 2D or a factor is not a positive integer.

    Examples
    --------
    >>> downsample_mean(np.arange(16).reshape(4, 4), (2, 2)).tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2D (Y, X), got shape {image.shape}")
    fy, fx = (int(f) for f in factors)
    if fy < 1 or fx < 1 or tuple(factors) != (fy, fx):
        raise ValueError(f"factors must be two positive integers, got {factors!r}")
    pad = ((0, -image.shape[0] % fy), (0, -image.shape[1] % fx))
    if pad[0][1] or pad[1][1]:
        image = np.pad(image, pad, mode="edge")
    total = _tile_sums(image, (fy, fx))
    total *= np.float32(1.0 / (fy * fx))
    return total


def upsample_labels(
    labels: np.ndarray, factors: tuple[int, int], shape: tuple[int, int]
) -> np.ndarray:
    """Enlarge a label image by integer factors (nearest neighbour) and crop it to ``shape``.

    The inverse of :func:`downsample_mean` for label images.

    Parameters
    ----------
    labels : numpy.ndarray, shape (y, x)
        Integer labels at the reduced resolution.
    factors : tuple of int
        ``(fy, fx)`` used to shrink the image.
    shape : tuple of int
        ``(Y, X)`` of the full-resolution image; at most ``(y * fy, x * fx)``.

    Returns
    -------
    numpy.ndarray, shape (Y, X), same dtype as ``labels``

    Raises
    ------
    ValueError
        If ``shape`` is larger than the enlarged labels.

    Examples
    --------
    >>> upsample_labels(np.array([[1, 2]]), (2, 2), (2, 3)).tolist()
    [[1, 1, 2], [1, 1, 2]]
    """
    fy, fx = (int(f) for f in factors)
    big_y, big_x = labels.shape[0] * fy, labels.shape[1] * fx
    if shape[0] > big_y or shape[1] > big_x:
        raise ValueError(
            f"shape {tuple(shape)} does not fit labels of shape {labels.shape} enlarged by "
            f"{(fy, fx)}"
        )
    big = np.repeat(np.repeat(labels, fy, axis=0), fx, axis=1)
    return big[: shape[0], : shape[1]]


def estimate_background(image: np.ndarray, *, block_px: int, percentile: float = 5.0) -> np.ndarray:
    """Estimate a smooth background (illumination and autofluorescence) of a 2D image.

    Parameters
    ----------
    image : numpy.ndarray, shape (Y, X)
        Float image, ideally already smoothed a little.
    block_px : int
        Block size in pixels; choose it larger than a nucleus (the default pipeline uses
        about 30 um).
    percentile : float
        Low percentile of each block taken as its background level.

    Returns
    -------
    numpy.ndarray, shape (Y, X), float32
        Background level at every pixel.

    Notes
    -----
    The low percentile of each block is the level between nuclei; a 3 x 3 grey opening of the
    block grid (after linear extrapolation at its edges) removes blocks filled by a dense
    group of nuclei while keeping illumination gradients; the grid is then interpolated
    bilinearly. This follows the spirit of the rolling-ball background of Sternberg (1983)
    at a small fraction of its cost.

    References
    ----------
    Sternberg SR. Biomedical image processing. Computer 1983;16(1):22-34.

    Examples
    --------
    >>> ramp = np.tile(np.linspace(10, 20, 64, dtype=np.float32), (64, 1))
    >>> bg = estimate_background(ramp, block_px=16)
    >>> bool(np.abs(bg - ramp).max() < 2.5)
    True
    """
    block = max(1, int(block_px))
    image = np.asarray(image, dtype=np.float32)
    pad = ((0, -image.shape[0] % block), (0, -image.shape[1] % block))
    padded = np.pad(image, pad, mode="reflect" if min(image.shape) > block else "edge")
    ny, nx = padded.shape[0] // block, padded.shape[1] // block
    blocks = padded.reshape(ny, block, nx, block).transpose(0, 2, 1, 3).reshape(ny, nx, -1)
    grid = np.percentile(blocks, percentile, axis=-1).astype(np.float32)
    # Point-reflected padding extends a gradient linearly, so the opening keeps ramps intact.
    grid = np.pad(grid, 2, mode="reflect", reflect_type="odd")
    grid = ndi.grey_opening(grid, size=3, mode="nearest")[1:-1, 1:-1]
    # Pixel centre -> position on the grid of block centres (one padding cell each side), so
    # the interpolation continues a gradient linearly up to the image edge.
    rows = (np.arange(image.shape[0], dtype=np.float32) + 0.5) / block + 0.5
    cols = (np.arange(image.shape[1], dtype=np.float32) + 0.5) / block + 0.5
    coords = np.stack(np.meshgrid(rows, cols, indexing="ij"))
    return ndi.map_coordinates(grid, coords, order=1, mode="nearest").astype(np.float32)


def threshold_log_otsu(image: np.ndarray) -> float:
    """Return a threshold that separates nuclei from background, keeping dim nuclei.

    Parameters
    ----------
    image : numpy.ndarray
        Background-corrected intensities (background near 0).

    Returns
    -------
    float
        Threshold in the units of ``image``; ``inf`` when the image holds no contrast.

    Notes
    -----
    The background level ``m`` and noise ``s`` are the mode and the lower-side scaled MAD of
    the pixels below a linear Otsu threshold. Otsu's method is then applied to
    ``log(max(image - m, s))``: on a log scale a nucleus four times dimmer than the
    others is still far from the noise, whereas a linear Otsu threshold would cut it. The
    result is never below ``m + 3 s``, so pure noise gives no foreground.

    References
    ----------
    Otsu N. A threshold selection method from gray-level histograms.
    IEEE Trans Syst Man Cybern 1979;9(1):62-66.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> image = rng.normal(0, 1, (64, 64)).astype(np.float32)
    >>> image[8:24, 8:24] += 100; image[40:56, 40:56] += 20    # bright and dim nucleus
    >>> 3 < threshold_log_otsu(image) < 20
    True
    """
    values = np.asarray(image, dtype=np.float32).ravel()
    if values.size == 0 or not values.max() > values.min():
        return math.inf
    level, noise = _background_level_and_noise(values)
    if noise <= 0:
        noise = max(1e-6 * float(values.max() - values.min()), float(np.finfo(np.float32).tiny))
    log_values = np.log(np.maximum(values - level, noise))
    if not log_values.max() > log_values.min():
        return math.inf
    threshold = level + math.exp(threshold_otsu(log_values))
    return max(threshold, level + 3.0 * noise)


def _background_level_and_noise(values: np.ndarray) -> tuple[float, float]:
    """Mode and lower-side spread (scaled MAD) of the pixels below a linear Otsu threshold.

    Only the side below the mode is used for the spread, so neither the nuclei nor the
    truncation at the Otsu threshold (which halves a pure-noise image) bias it.
    """
    below = values[values <= threshold_otsu(values)]
    low, high = np.percentile(below, [0.5, 99.5])
    if not high > low:
        return float(low), 0.0
    counts, edges = np.histogram(below, bins=256, range=(low, high))
    counts = ndi.gaussian_filter1d(counts.astype(np.float32), 2.0)
    peak = int(np.argmax(counts))
    level = float(0.5 * (edges[peak] + edges[peak + 1]))
    lower = below[below <= level]
    noise = 1.4826 * float(np.median(level - lower)) if lower.size else 0.0
    return level, noise


def foreground_mask(
    corrected: np.ndarray,
    *,
    threshold: float,
    contrast_radius_px: float,
    edge_fraction: float = 0.4,
    max_hole_px: int = 0,
) -> np.ndarray:
    """Return the nuclear foreground: above ``threshold`` and bright relative to its neighbourhood.

    Parameters
    ----------
    corrected : numpy.ndarray, shape (Y, X)
        Smoothed, background-corrected DAPI.
    threshold : float
        Global threshold, e.g. from :func:`threshold_log_otsu`.
    contrast_radius_px : float
        Radius of the neighbourhood whose (smoothed) maximum is the local reference level;
        about twice the blur of a nucleus edge.
    edge_fraction : float
        A pixel is foreground only if it reaches this fraction of the local reference level.
        0 disables the local term.
    max_hole_px : int
        Dark holes (below ``threshold``) up to this many pixels inside an object are filled;
        larger enclosed regions (the gap inside a ring of nuclei) stay background. Holes made
        only by the local term are always filled.

    Returns
    -------
    numpy.ndarray of bool, shape (Y, X)

    Notes
    -----
    The local term places the edge of a blurred nucleus at a fixed fraction of its own
    brightness whatever that brightness is (a half-maximum rule at 0.5), so dim and bright
    nuclei get comparable outlines, and it opens the dimmer seam between a bright nucleus and
    a dim neighbour. The reference level is the maximum of a Gaussian-smoothed copy over the
    neighbourhood, so chromatin texture and small bright debris move it little.

    Examples
    --------
    >>> image = np.zeros((20, 20), np.float32); image[5:15, 5:15] = 10; image[9:11, 9:11] = 1
    >>> mask = foreground_mask(image, threshold=2.0, contrast_radius_px=3, max_hole_px=4)
    >>> int(mask.sum())     # the dim centre is a small hole, filled
    100
    """
    if not 0 <= edge_fraction < 1:
        raise ValueError(f"edge_fraction must be in [0, 1), got {edge_fraction!r}")
    above = _fill_small_holes(corrected > threshold, max_hole_px)
    if edge_fraction == 0:
        return above
    radius = max(1.0, float(contrast_radius_px))
    reference = ndi.gaussian_filter(corrected, radius / 2.0, mode="nearest")
    local_level = ndi.maximum_filter(reference, size=2 * round(radius) + 1, mode="nearest")
    mask = above & (corrected >= np.float32(edge_fraction) * local_level)
    return ndi.binary_fill_holes(mask) & above


def _fill_small_holes(mask: np.ndarray, max_hole_px: int) -> np.ndarray:
    """Fill background regions of at most ``max_hole_px`` pixels not touching the image edge."""
    if max_hole_px <= 0:
        return mask
    holes, count = ndi.label(~mask)
    if count == 0:
        return mask
    sizes = np.bincount(holes.ravel())
    small = sizes <= max_hole_px
    small[0] = False
    edge = np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]])
    small[edge] = False
    return mask | small[holes]


def split_touching(
    mask: np.ndarray,
    *,
    spacing_um: tuple[float, float],
    split_depth_um: float = 0.2,
    smooth_um: float = 0.4,
) -> np.ndarray:
    """Label a foreground mask, splitting touching nuclei by a distance-transform watershed.

    Parameters
    ----------
    mask : numpy.ndarray of bool, shape (Y, X)
        Nuclear foreground.
    spacing_um : tuple of float
        ``(y, x)`` pixel size of ``mask`` in micrometres.
    split_depth_um : float
        Two distance maxima become separate nuclei only if the distance to the edge drops by
        more than this between them, i.e. the neck between two touching nuclei is at least
        this much narrower (per side) than the nuclei themselves. Larger values split less.
        Nuclei pressed together in tissue often meet along a waist only 0.2-0.4 um
        narrower. On 8 synthetic 2048 x 2048 fields of about 2500 nuclei, 0.4 left 105
        merged with a neighbour and 0.2 left 77, cutting 2 nuclei in two at either depth;
        nuclei F1 rose from 0.953 to 0.965-0.966 on each of 6 presets. A kidney-shaped
        nucleus with a 3 um bay stays whole.
    smooth_um : float
        Gaussian smoothing of the distance map, which removes maxima made by a ragged edge.

    Returns
    -------
    numpy.ndarray, shape (Y, X), int32
        Sequential labels, 0 background.

    Notes
    -----
    The watershed (Beucher and Meyer 1993) floods the negative smoothed Euclidean distance
    transform within the mask from every regional maximum of the distance, and basins are
    then merged by their dynamic (Grimaud 1992): going down the saddles between basins from
    the highest, two basins become one while the lower peak rises less than
    ``split_depth_um`` above their saddle. The distance is in micrometres, so the rule has
    the same meaning at every pixel size; an elongated or kidney-shaped nucleus has a single
    ridge and is not cut. This gives the segmentation of a watershed from the h-maxima
    markers (Soille 2003) without the reconstruction, which cost a third of the
    segmentation: on four 2048x2048 fields the two agree at F1 0.998-1.000.

    References
    ----------
    Grimaud M. New measure of contrast: the dynamics. Proc SPIE 1992;1769:292-305.
    Soille P. Morphological Image Analysis, 2nd ed. Springer 2003, ch. 6.
    Beucher S, Meyer F. The morphological approach to segmentation: the watershed
    transformation. In: Mathematical Morphology in Image Processing, 1993:433-481.

    Examples
    --------
    >>> yy, xx = np.mgrid[:40, :60]
    >>> pair = ((yy - 20) ** 2 + (xx - 18) ** 2 < 144) | ((yy - 20) ** 2 + (xx - 40) ** 2 < 144)
    >>> int(split_touching(pair, spacing_um=(0.4, 0.4)).max())
    2
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    distance = ndi.distance_transform_edt(mask, sampling=spacing_um).astype(np.float32)
    sigma = [smooth_um / s for s in spacing_um]
    distance = ndi.gaussian_filter(distance, sigma) * mask
    peaks = local_maxima(distance, connectivity=2, allow_borders=True) & mask
    labels = watershed(-distance, connected_components(peaks, connectivity=2), mask=mask)
    # Parts of the mask that hold no maximum (flat slivers) stay as their own components.
    orphans = connected_components(mask & (labels == 0))
    labels = np.where(orphans > 0, orphans + labels.max(), labels)
    labels = _merge_shallow_basins(labels, distance, split_depth_um)
    return relabel_sequential(labels.astype(np.int32))[0]


def trim_to_object_level(
    labels: np.ndarray, corrected: np.ndarray, *, fraction: float = 0.5
) -> np.ndarray:
    """Keep the pixels of each object that reach ``fraction`` of the object's median level.

    Parameters
    ----------
    labels : numpy.ndarray of int, shape (Y, X)
        A first segmentation, e.g. from :func:`split_touching`.
    corrected : numpy.ndarray, shape (Y, X)
        Background-corrected DAPI at the resolution of ``labels``.
    fraction : float
        Edge level as a fraction of the object's mean intensity, in (0, 1).

    Returns
    -------
    numpy.ndarray of bool, shape (Y, X)
        The trimmed foreground, interior holes filled; split it again to get labels.

    Notes
    -----
    An out-of-focus nucleus spreads a halo that a global threshold includes and that can
    bridge it to a neighbour. Its own mean level puts the edge near the half-maximum of
    its profile, whatever its brightness, and thins such bridges so that a second
    :func:`split_touching` separates the nuclei. Small bright debris on a nucleus moves the
    mean of the whole nucleus little.

    Examples
    --------
    >>> profile = np.array([0, 20, 60, 100, 100, 100, 60, 20, 0], np.float32)
    >>> trim_to_object_level((profile > 10).astype(int)[None, :], profile[None, :])
    array([[False, False,  True,  True,  True,  True,  True, False, False]])
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    labels = np.asarray(labels)
    count = int(labels.max())
    if count == 0:
        return np.zeros(labels.shape, bool)
    sums = np.bincount(labels.ravel(), weights=corrected.ravel(), minlength=count + 1)
    level = (sums / np.maximum(np.bincount(labels.ravel(), minlength=count + 1), 1)).astype(
        np.float32
    )
    mask = (labels > 0) & (corrected >= np.float32(fraction) * level[labels])
    return ndi.binary_fill_holes(mask) & (labels > 0)


def _merge_shallow_basins(labels: np.ndarray, surface: np.ndarray, depth: float) -> np.ndarray:
    """Merge neighbouring basins of ``labels`` whose lower peak is within ``depth`` of
    their saddle on ``surface``, from the highest saddle down (a basin's dynamic).
    """
    n = int(labels.max())
    if n < 2:
        return labels
    flat = labels.ravel()
    inside = flat > 0
    peak = np.full(n + 1, -np.inf)
    np.maximum.at(peak, flat[inside], surface.ravel()[inside])  # no sort, unlike ndi.maximum
    pairs, saddles = _basin_saddles(labels, surface)
    parent = np.arange(n + 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for index in np.argsort(-saddles, kind="stable"):
        a, b = root(pairs[index, 0]), root(pairs[index, 1])
        if a != b and min(peak[a], peak[b]) - saddles[index] < depth:
            high, low = (a, b) if peak[a] >= peak[b] else (b, a)
            parent[low] = high
    roots = np.array([root(i) for i in range(n + 1)])
    return roots[labels]


def _basin_saddles(labels: np.ndarray, surface: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Neighbouring label pairs (8-connectivity) and the highest pass between each pair.

    A pass between two touching pixels of different basins is the lower of their values;
    the saddle of a pair of basins is the highest such pass.
    """
    height, width = labels.shape
    found_pairs, found_passes = [], []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        rows_a, rows_b = slice(0, height - dy), slice(dy, height)
        cols_a = slice(max(0, -dx), width - max(0, dx))
        cols_b = slice(max(0, dx), width + min(0, dx))
        a, b = labels[rows_a, cols_a], labels[rows_b, cols_b]
        border = (a != b) & (a > 0) & (b > 0)
        found_pairs.append(np.sort(np.column_stack([a[border], b[border]]), axis=1))
        passes = np.minimum(surface[rows_a, cols_a][border], surface[rows_b, cols_b][border])
        found_passes.append(passes)
    pairs = np.concatenate(found_pairs).astype(np.int64)
    passes = np.concatenate(found_passes).astype(np.float64)
    if len(pairs) == 0:
        return pairs.reshape(0, 2), passes
    key = pairs[:, 0] * (int(labels.max()) + 1) + pairs[:, 1]
    order = np.lexsort((-passes, key))
    first = np.r_[True, key[order][1:] != key[order][:-1]]
    return pairs[order][first], passes[order][first]


def filter_by_area(
    labels: np.ndarray,
    *,
    spacing_um: tuple[float, float],
    min_area_um2: float | None = 20.0,
    max_area_um2: float | None = None,
    min_cut_area_um2: float | None = None,
) -> np.ndarray:
    """Remove objects smaller or larger than the area limits and relabel sequentially.

    Parameters
    ----------
    labels : numpy.ndarray of int, shape (Y, X)
    spacing_um : tuple of float
        ``(y, x)`` pixel size in micrometres.
    min_area_um2, max_area_um2 : float or None
        Inclusive limits in square micrometres; None disables a limit.
    min_cut_area_um2 : float or None
        Lower limit for objects touching the image edge, which show only part of a nucleus;
        None applies ``min_area_um2`` to them too.

    Returns
    -------
    numpy.ndarray, shape (Y, X), int32
        Sequential labels from 1, 0 background.

    Examples
    --------
    >>> labels = np.zeros((10, 10), int); labels[:2, :2] = 4; labels[4:, 4:] = 9
    >>> filter_by_area(labels, spacing_um=(1, 1), min_area_um2=5).max()
    np.int32(1)
    """
    labels = np.asarray(labels)
    pixel_area = float(spacing_um[0]) * float(spacing_um[1])
    areas = np.bincount(labels.ravel()) * pixel_area
    keep = np.ones(areas.shape, bool)
    if min_area_um2 is not None:
        keep &= areas >= min_area_um2
    if min_cut_area_um2 is not None and labels.size:
        cut = edge_labels(labels)
        keep[cut] = areas[cut] >= min_cut_area_um2
    if max_area_um2 is not None:
        keep &= areas <= max_area_um2
    keep[0] = False
    return _keep_and_relabel(labels, keep)


def _keep_and_relabel(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Map the labels flagged in ``keep`` (indexed by label) to 1..n and the rest to 0."""
    lookup = np.zeros(keep.shape, np.int32)
    lookup[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lookup[labels]


# --------------------------------------------------------------------------------------------
# the convenience function
# --------------------------------------------------------------------------------------------


def segment_nuclei(
    dapi: np.ndarray,
    *,
    spacing_um: Sequence[float] | None = None,
    min_area_um2: float = 20.0,
    max_area_um2: float | None = 400.0,
    roi: np.ndarray | None = None,
    working_pixel_um: float = 0.4,
    background_scale_um: float = 30.0,
    split_depth_um: float = 0.2,
    edge_fraction: float = 0.4,
    contrast_radius_um: float = 1.0,
    object_fraction: float = 0.5,
    projection: str = "focus",
) -> np.ndarray:
    """Segment nuclei in a DAPI image or z-stack.

    Parameters
    ----------
    dapi : array_like, shape (Y, X) or (Z, Y, X)
        DAPI intensities, any real dtype. Non-finite values are treated as background.
    spacing_um : sequence of float, optional
        Pixel size per axis in micrometres, ``(y, x)`` or ``(z, y, x)``. When None, lateral
        pixels of 0.1 um (:data:`DEFAULT_PIXEL_UM`) are assumed.
    min_area_um2, max_area_um2 : float
        Projected nucleus area limits (defaults 20 and 400 um^2, i.e. diameters of about
        5-22 um). Smaller objects (debris) and larger ones (unsplit clumps) are removed.
        ``max_area_um2=None`` keeps large objects. A nucleus cut by the image edge is kept
        from a quarter of ``min_area_um2`` (it is flagged by :func:`edge_labels`).
    roi : array_like of bool, shape (Y, X), optional
        Region of interest (e.g. the invasive tumour area). Nuclei entirely outside it are
        removed; nuclei cut by its edge are kept, see :func:`edge_labels`.
    working_pixel_um : float
        Pixel size at which the segmentation runs (block mean of the input). Outlines are
        accurate to about half of it.
    background_scale_um : float
        Block size of the background estimate; larger than a nucleus.
    split_depth_um : float
        Marker depth for splitting touching nuclei, see :func:`split_touching`.
    edge_fraction : float
        Local-contrast term of :func:`foreground_mask`, in [0, 1); 0 disables it.
    contrast_radius_um : float
        Neighbourhood of that local term; about twice the blur of a nucleus edge.
    object_fraction : float
        Edge level of :func:`trim_to_object_level` as a fraction of each nucleus's mean
        brightness, in [0, 1); 0 skips the trimming (and its second split).
    projection : {'focus', 'max', 'mean'}
        How a z-stack is projected, see :func:`project_stack`. ``'focus'`` (default) takes
        each tile from its sharpest plane; on synthetic 2048 x 2048 x 9 stacks it raised the
        nuclei F1 from 0.953 (``'max'``) to 0.962 by keeping defocused halos out of the gaps
        between touching nuclei.

    Returns
    -------
    numpy.ndarray, shape (Y, X), int32
        Nucleus labels, sequential from 1, 0 background; all zero when no nucleus is found
        (blank, constant or all-NaN image).

    Raises
    ------
    ValueError
        If ``dapi`` is not 2D or 3D or is empty, ``spacing_um`` does not fit, a size parameter
        is not positive, or ``roi`` has the wrong shape.
    TypeError
        If ``dapi`` does not hold real numbers.

    Notes
    -----
    The steps are listed in the module docstring. Everything after the block mean runs at
    the working resolution (a 2048 x 2048 field at 0.1 um becomes 512 x 512), so the cost is
    dominated by reading the input once.

    Examples
    --------
    >>> yy, xx = np.mgrid[:300, :300]
    >>> dapi = 100 + 900 * (((yy - 150) ** 2 + (xx - 100) ** 2) < 40 ** 2)
    >>> dapi = dapi + 300 * (((yy - 150) ** 2 + (xx - 210) ** 2) < 35 ** 2)  # a dim nucleus
    >>> labels = segment_nuclei(dapi, spacing_um=(0.1, 0.1))
    >>> labels.dtype, int(labels.max())
    (dtype('int32'), 2)
    """
    image = project_stack(dapi, projection)
    pixel_um = _lateral_spacing(spacing_um, np.ndim(dapi))
    _check_positive("max_area_um2", max_area_um2, allow_none=True)
    _check_parameters(
        positive={
            "min_area_um2": min_area_um2,
            "working_pixel_um": working_pixel_um,
            "background_scale_um": background_scale_um,
            "split_depth_um": split_depth_um,
            "contrast_radius_um": contrast_radius_um,
        },
        fractions={"edge_fraction": edge_fraction, "object_fraction": object_fraction},
    )
    roi_mask = None if roi is None else _check_roi(roi, image.shape)

    factors = tuple(max(1, round(working_pixel_um / p)) for p in pixel_um)
    work_um = (pixel_um[0] * factors[0], pixel_um[1] * factors[1])
    small = downsample_mean(image, factors)
    small = ndi.gaussian_filter(small, [0.3 / s for s in work_um], mode="nearest")
    block_px = round(background_scale_um / min(work_um))
    corrected = small - estimate_background(small, block_px=block_px)
    threshold = threshold_log_otsu(corrected)
    if not math.isfinite(threshold):
        return np.zeros(image.shape, np.int32)
    mask = foreground_mask(
        corrected,
        threshold=threshold,
        contrast_radius_px=contrast_radius_um / min(work_um),
        edge_fraction=edge_fraction,
        max_hole_px=round(0.25 * min_area_um2 / (work_um[0] * work_um[1])),
    )
    if object_fraction > 0:
        first = _coarse_split(mask, work_um, split_depth_um) * mask
        mask = trim_to_object_level(first, corrected, fraction=object_fraction)
    labels = split_touching(mask, spacing_um=work_um, split_depth_um=split_depth_um)
    labels = filter_by_area(
        labels,
        spacing_um=work_um,
        min_area_um2=min_area_um2,
        max_area_um2=max_area_um2,
        min_cut_area_um2=0.25 * min_area_um2,
    )
    labels = upsample_labels(labels, factors, image.shape)
    return labels if roi_mask is None else apply_roi(labels, roi_mask)


def _coarse_split(mask: np.ndarray, spacing_um: tuple[float, float], depth: float) -> np.ndarray:
    """First-pass nuclei at half the working resolution (a quarter of the cost), upsampled."""
    coarse = downsample_mean(mask, (2, 2)) >= 0.5
    coarse_um = (2 * spacing_um[0], 2 * spacing_um[1])
    labels = split_touching(coarse, spacing_um=coarse_um, split_depth_um=depth)
    return upsample_labels(labels, (2, 2), mask.shape)


# --------------------------------------------------------------------------------------------
# labels from elsewhere, regions of interest, measurements
# --------------------------------------------------------------------------------------------


def prepare_labels(
    labels: np.ndarray,
    *,
    shape: Sequence[int],
    spacing_um: Sequence[float] | None = None,
    roi: np.ndarray | None = None,
    min_area_um2: float | None = 20.0,
    max_area_um2: float | None = None,
) -> np.ndarray:
    """Validate nucleus labels made elsewhere (Cellpose, StarDist, a person) for this pipeline.

    Parameters
    ----------
    labels : array_like, shape (Y, X)
        Integer labels (0 background; any positive ids, gaps allowed) or a boolean mask, whose
        connected components become the nuclei. Float arrays holding whole numbers are accepted.
    shape : sequence of int
        Shape of the image the labels belong to, ``(Y, X)`` or ``(Z, Y, X)``; the labels must
        match its last two axes.
    spacing_um : sequence of float, optional
        Pixel size per axis of that image (as for :func:`segment_nuclei`); default 0.1 um.
    roi : array_like of bool, shape (Y, X), optional
        Region of interest, applied as in :func:`apply_roi`.
    min_area_um2, max_area_um2 : float or None
        Area limits in square micrometres; None disables one. By default only objects below
        20 um^2 are removed.

    Returns
    -------
    numpy.ndarray, shape (Y, X), int32
        Sequential labels from 1, 0 background.

    Raises
    ------
    ValueError
        If the labels do not match ``shape``, hold negative or fractional values, or
        ``spacing_um`` / ``roi`` do not fit.
    TypeError
        If ``labels`` is not numeric.

    Examples
    --------
    >>> external = np.zeros((100, 100), np.uint16)
    >>> external[10:60, 10:60] = 7; external[70:72, 70:72] = 3      # a nucleus and a speck
    >>> out = prepare_labels(external, shape=(100, 100))
    >>> out.dtype, np.unique(out).tolist()
    (dtype('int32'), [0, 1])
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"shape must be (Y, X) or (Z, Y, X), got {shape!r}")
    array = np.asarray(labels)
    if array.shape != shape[-2:]:
        raise ValueError(
            f"labels must have shape {shape[-2:]} (Y, X) to match the image, got {array.shape}"
        )
    pixel_um = _lateral_spacing(spacing_um, len(shape))
    array = _integer_labels(array)
    labels = filter_by_area(
        array, spacing_um=pixel_um, min_area_um2=min_area_um2, max_area_um2=max_area_um2
    )
    return labels if roi is None else apply_roi(labels, roi)


def _integer_labels(array: np.ndarray) -> np.ndarray:
    """Return a non-negative integer label array from labels or a boolean mask."""
    if array.dtype == bool:
        return connected_components(array, connectivity=1).astype(np.int64)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or not (array == np.round(array)).all():
            raise ValueError("labels must hold whole numbers, got non-integer or non-finite values")
        array = array.astype(np.int64)
    elif not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"labels must be an integer or boolean array, got dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise ValueError(f"labels must be >= 0 (0 = background), got minimum {array.min()}")
    return relabel_sequential(array.astype(np.int64, copy=False))[0]


def apply_roi(labels: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """Remove nuclei entirely outside a region of interest; keep those cut by its edge.

    Parameters
    ----------
    labels : numpy.ndarray of int, shape (Y, X)
    roi : array_like of bool, shape (Y, X)
        True inside the region (e.g. the invasive tumour area a pathologist drew).

    Returns
    -------
    numpy.ndarray, shape (Y, X), int32
        Sequential labels of the nuclei with at least one pixel in the region. Nuclei that
        cross the region's edge keep all their pixels; find them with :func:`edge_labels`.

    Raises
    ------
    ValueError
        If ``roi`` does not have the shape of ``labels``.

    Examples
    --------
    >>> labels = np.array([[1, 1, 0, 2, 2], [1, 1, 0, 2, 2]])
    >>> roi = np.array([[0, 1, 1, 0, 0], [0, 1, 1, 0, 0]], bool)
    >>> apply_roi(labels, roi).tolist()
    [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0]]
    """
    labels = np.asarray(labels)
    roi = _check_roi(roi, labels.shape)
    inside = np.bincount(labels[roi].ravel(), minlength=int(labels.max()) + 1) > 0
    inside[0] = False
    return _keep_and_relabel(labels, inside)


def edge_labels(labels: np.ndarray, roi: np.ndarray | None = None) -> np.ndarray:
    """Return the labels of nuclei cut by the image edge or by the edge of a region of interest.

    Parameters
    ----------
    labels : numpy.ndarray of int, shape (Y, X)
    roi : array_like of bool, shape (Y, X), optional
        Region of interest; a nucleus touches its edge if any of its pixels lies outside the
        region or on the region's boundary.

    Returns
    -------
    numpy.ndarray of int64
        Sorted label ids (no 0).

    Raises
    ------
    ValueError
        If ``roi`` does not have the shape of ``labels``.

    Examples
    --------
    >>> labels = np.zeros((6, 6), int); labels[0:2, 0:2] = 1; labels[2:4, 2:4] = 2
    >>> labels[2:4, 4:6] = 3
    >>> edge_labels(labels).tolist()
    [1, 3]
    >>> roi = np.zeros((6, 6), bool); roi[1:5, 1:4] = True
    >>> edge_labels(labels, roi).tolist()
    [1, 2, 3]
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2D (Y, X), got shape {labels.shape}")
    if roi is None:
        frame = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    else:
        interior = ndi.binary_erosion(_check_roi(roi, labels.shape), border_value=0)
        frame = labels[~interior]
    ids = np.unique(frame).astype(np.int64)
    return ids[ids > 0]


def nucleus_shape_table(
    labels: np.ndarray,
    *,
    spacing_um: Sequence[float] | None = None,
    dapi: np.ndarray | None = None,
    roi: np.ndarray | None = None,
) -> pd.DataFrame:
    """Measure the size, shape and DAPI content of every nucleus.

    Parameters
    ----------
    labels : numpy.ndarray of int, shape (Y, X)
    spacing_um : sequence of float, optional
        ``(y, x)`` or ``(z, y, x)`` pixel size in micrometres; default 0.1 um.
    dapi : array_like, shape (Y, X) or (Z, Y, X), optional
        When given (a stack is projected by maximum), adds ``mean_dapi``, ``integrated_dapi``
        and ``relative_dapi_content`` (integrated DAPI over the median nucleus of the field).
    roi : array_like of bool, shape (Y, X), optional
        Region of interest; ``touches_border`` then also covers its edge.

    Returns
    -------
    pandas.DataFrame
        One row per label with columns ``label`` (int64), ``centroid_y``, ``centroid_x``
        (pixels), ``area_um2``, ``major_axis_um``, ``minor_axis_um``, ``eccentricity``,
        ``solidity`` (float64), ``touches_border`` (bool), plus the DAPI columns. Zero rows and
        the same columns when there is no nucleus.

    Raises
    ------
    ValueError
        If ``labels`` is not 2D, or ``dapi`` / ``roi`` / ``spacing_um`` do not fit.

    Notes
    -----
    Overlapping or clumped nuclei show as low solidity (< ~0.9), and a region with about twice
    the DAPI content of a typical nucleus (``relative_dapi_content`` near 2 or more) often holds
    two nuclei on top of each other. Axis lengths assume square pixels (the mean of the y and x
    size is used).

    Examples
    --------
    >>> labels = np.zeros((50, 50), np.int32); labels[10:30, 5:45] = 1
    >>> table = nucleus_shape_table(labels, spacing_um=(0.5, 0.5))
    >>> table[["label", "area_um2", "solidity", "touches_border"]].values.tolist()
    [[1, 200.0, 1.0, False]]
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2D (Y, X), got shape {labels.shape}")
    ndim = 3 if spacing_um is not None and len(tuple(spacing_um)) == 3 else 2
    pixel_um = _lateral_spacing(spacing_um, ndim)
    intensity = None
    if dapi is not None:
        intensity = project_stack(dapi)
        if intensity.shape != labels.shape:
            raise ValueError(f"dapi must have shape {labels.shape} in (Y, X), got {np.shape(dapi)}")
    columns = SHAPE_COLUMNS + (DAPI_COLUMNS if intensity is not None else ())
    if not labels.any():
        return pd.DataFrame({c: pd.Series(dtype=_column_dtype(c)) for c in columns})
    props = ["label", "centroid", "area", "axis_major_length", "axis_minor_length"]
    props += ["eccentricity", "solidity"] + (["intensity_mean"] if intensity is not None else [])
    raw = regionprops_table(labels.astype(np.int32), intensity_image=intensity, properties=props)
    length_um = 0.5 * (pixel_um[0] + pixel_um[1])
    table = pd.DataFrame(
        {
            "label": raw["label"].astype(np.int64),
            "centroid_y": raw["centroid-0"],
            "centroid_x": raw["centroid-1"],
            "area_um2": raw["area"] * pixel_um[0] * pixel_um[1],
            "major_axis_um": raw["axis_major_length"] * length_um,
            "minor_axis_um": raw["axis_minor_length"] * length_um,
            "eccentricity": raw["eccentricity"],
            "solidity": raw["solidity"],
        }
    )
    table["touches_border"] = table["label"].isin(edge_labels(labels, roi))
    if intensity is not None:
        table["mean_dapi"] = raw["intensity_mean"]
        table["integrated_dapi"] = raw["intensity_mean"] * raw["area"]
        table["relative_dapi_content"] = (
            table["integrated_dapi"] / table["integrated_dapi"].median()
        )
    return table.astype({c: _column_dtype(c) for c in columns})


def _column_dtype(column: str) -> str:
    return {"label": "int64", "touches_border": "bool"}.get(column, "float64")
