"""DAPI bleed-through into the probe channels: measure it and take it out.

A little of the DAPI emission reaches the orange and green filter sets on most
microscopes. Its smooth part is harmless (the spot filter removes smooth background),
but the chromatin texture and the bright chromocentres of DAPI come through as
spot-sized detail inside every nucleus, which is exactly where weak FISH signals are
looked for. :func:`dapi_crosstalk` measures the fraction of DAPI in a probe channel
from that spot-scale detail alone; :func:`subtract_crosstalk` removes it.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> dapi = 1000 + 300 * rng.standard_normal((256, 256))
>>> probe = 100 + 0.03 * dapi + rng.normal(0, 2, (256, 256))
>>> round(dapi_crosstalk(probe, dapi), 2)
0.03
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ishcount.spots import DEFAULT_LATERAL_SPACING_UM, DEFAULT_SPOT_SIGMA_UM, gaussian_smooth

__all__ = ["MAX_CROSSTALK", "dapi_crosstalk", "subtract_crosstalk"]

#: Largest bleed-through fraction reported; anything above is not bleed-through.
MAX_CROSSTALK = 0.5
_SIGNAL_SDS = 3.0  # probe detail beyond this many robust sds is a signal, left out of the fit
_MAD_TO_SD = 1.4826


def _tiles(shape: tuple[int, int], tile_px: int) -> list[tuple[slice, slice]]:
    """Non-overlapping tiles of ``tile_px`` covering ``shape`` (one tile if smaller)."""
    ny, nx = (max(1, s // tile_px) for s in shape)
    hy, hx = shape[0] // ny, shape[1] // nx
    return [
        (slice(i * hy, (i + 1) * hy), slice(j * hx, (j + 1) * hx))
        for i in range(ny)
        for j in range(nx)
    ]


def dapi_crosstalk(
    channel: Any,
    dapi: Any,
    *,
    spacing_um: float | tuple[float, float] | None = None,
    spot_sigma_um: float = DEFAULT_SPOT_SIGMA_UM,
    tile_px: int = 256,
    max_tiles: int = 4,
) -> float:
    """Fraction of the DAPI image that shows in a probe channel.

    Parameters
    ----------
    channel : array_like, shape (Y, X)
        A probe channel (HER2 or CEP17), raw intensities.
    dapi : array_like, shape (Y, X)
        The DAPI channel of the same field.
    spacing_um : float or tuple of float, optional
        Lateral pixel size; default 0.1 um.
    spot_sigma_um : float
        PSF sigma, which sets the scale of the detail compared.
    tile_px : int
        Edge of the tiles the fit is made on.
    max_tiles : int
        The fit uses the tiles with the most DAPI detail, at most this many (a global
        optical constant needs a few hundred thousand pixels, not the whole field).

    Returns
    -------
    float
        ``k`` in [0, :data:`MAX_CROSSTALK`]: ``channel - k * dapi`` holds no DAPI detail.
        0 when the DAPI has no detail (blank or constant) or the two are uncorrelated.

    Raises
    ------
    ValueError
        If the images are not 2D, differ in shape, or a size is not positive.

    Notes
    -----
    Both images go through the difference-of-Gaussians of :func:`ishcount.spot_filter`
    (so smooth background and illumination drop out) and the probe's detail is
    regressed on the DAPI detail through the origin, leaving out pixels near probe
    signals (beyond 3 robust standard deviations, grown by one PSF). Signals are not
    correlated with chromatin texture, so they only add scatter, not bias.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> dapi = 500 + 200 * rng.standard_normal((128, 128))
    >>> dapi_crosstalk(rng.normal(100, 5, (128, 128)), dapi) < 0.01
    True
    """
    probe, nuclear = np.asarray(channel), np.asarray(dapi)
    if probe.ndim != 2 or nuclear.shape != probe.shape:
        raise ValueError(
            f"channel and dapi must be 2D images of one shape, got {probe.shape} and "
            f"{nuclear.shape}"
        )
    pixel_um = DEFAULT_LATERAL_SPACING_UM if spacing_um is None else np.ravel(spacing_um)[-1]
    if not (pixel_um > 0 and spot_sigma_um > 0 and tile_px > 0 and max_tiles > 0):
        raise ValueError(
            f"spacing_um, spot_sigma_um, tile_px and max_tiles must be positive, got "
            f"{spacing_um!r}, {spot_sigma_um!r}, {tile_px!r}, {max_tiles!r}"
        )
    sigma_px = float(spot_sigma_um / pixel_um)
    tiles = _tiles(probe.shape, int(tile_px))
    detail = [float(np.std(nuclear[tile][::4, ::4], dtype=np.float64)) for tile in tiles]
    chosen = [tiles[i] for i in np.argsort(detail)[::-1][: int(max_tiles)]]
    cross = square = 0.0
    for tile in chosen:
        probe_detail = _detail(probe[tile], sigma_px)
        dapi_detail = _detail(nuclear[tile], sigma_px)
        keep = _away_from_signals(probe_detail, sigma_px)
        cross += float(np.dot(probe_detail[keep], dapi_detail[keep]))
        square += float(np.dot(dapi_detail[keep], dapi_detail[keep]))
    if not square > 0:
        return 0.0
    return float(np.clip(cross / square, 0.0, MAX_CROSSTALK))


def _detail(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Spot-scale detail: the difference of Gaussians of :func:`ishcount.spot_filter`."""
    smoothed = gaussian_smooth(image, sigma_px)
    return smoothed - gaussian_smooth(smoothed, math.sqrt(3.0) * sigma_px)


def _away_from_signals(detail: np.ndarray, sigma_px: float) -> np.ndarray:
    """Pixels further than one PSF from probe detail beyond :data:`_SIGNAL_SDS` sds."""
    sample = detail[::2, ::2]  # a robust centre and spread need not see every pixel
    centre = np.median(sample)
    spread = _MAD_TO_SD * np.median(np.abs(sample - centre))
    signal = np.abs(detail - centre) > _SIGNAL_SDS * max(float(spread), 1e-12)
    grown = ndi.maximum_filter(signal.view(np.uint8), size=2 * max(1, round(2 * sigma_px)) + 1)
    return grown == 0


def subtract_crosstalk(channel: Any, dapi: Any, fraction: float) -> np.ndarray:
    """Return ``channel - fraction * dapi`` as float32 (the input is not modified).

    Parameters
    ----------
    channel : array_like
        A probe channel, 2D or a z-stack.
    dapi : array_like
        DAPI of the same shape.
    fraction : float
        Bleed-through fraction, e.g. from :func:`dapi_crosstalk`.

    Returns
    -------
    numpy.ndarray of float32

    Raises
    ------
    ValueError
        If the shapes differ or ``fraction`` is not in [0, :data:`MAX_CROSSTALK`].

    Examples
    --------
    >>> subtract_crosstalk(np.array([[10, 20]]), np.array([[100, 200]]), 0.05).tolist()
    [[5.0, 10.0]]
    """
    out = np.array(channel, dtype=np.float32)
    if not 0.0 <= fraction <= MAX_CROSSTALK:
        raise ValueError(f"fraction must be in [0, {MAX_CROSSTALK}], got {fraction!r}")
    nuclear = np.asarray(dapi)
    if nuclear.shape != out.shape:
        raise ValueError(f"dapi must have the channel's shape {out.shape}, got {nuclear.shape}")
    if fraction:
        out -= np.float32(fraction) * nuclear.astype(np.float32, copy=False)
    return out
