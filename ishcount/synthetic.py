"""Synthetic HER2/CEP17 dual-probe FISH fields with exact ground truth.

The generator is the project's test instrument. It draws a tissue-like field
(nuclei of varied size, shape, brightness and focus, chromatin texture,
stroma, debris, uneven illumination), places HER2 and CEP17 signals inside the
nuclei by a known copy-number model (single signals, split signals, weak
signals, unresolvable HER2 clusters, signals over cytoplasm), renders them as
pixel-integrated Gaussian spots, adds channel bleed-through and camera noise,
and returns the image together with its truth: the nucleus label image, one
row per rendered spot and one row per nucleus counted by the kit's rules. A
nucleus is scorable in truth unless it touches the border, overlaps another or
lies under debris at half a signal's peak or more (:data:`OBSCURING_DEBRIS`), or
lacks a signal of either colour.

Every field is reproducible from its seed. Case presets (:data:`PRESETS`)
reproduce each ASCO/CAP 2018 dual-probe group.

Intensity scale: the output is uint16 camera counts (ADU) with a 12-bit range
(0-4095) and a camera offset of about 100 ADU. Spot ``amplitude`` in the truth
table is the peak height of the continuous Gaussian in output ADU above the
local background (illumination included).

References
----------
Wolff AC et al. Human epidermal growth factor receptor 2 testing in breast
cancer: ASCO/CAP clinical practice guideline focused update. J Clin Oncol
2018;36:2105-2122.

Examples
--------
>>> field = make_field("group5", shape=(128, 128), rng=0)
>>> field.image.her2.dtype, field.nuclei.shape
(dtype('uint16'), (128, 128))
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.special import erf

from ishcount.image import FishImage
from ishcount.rules import dual_probe_group

GENERATOR_VERSION = "1.1.0"

#: Channel names written into OME metadata, in channel order.
OME_CHANNEL_NAMES: tuple[str, ...] = ("DAPI", "HER2", "CEP17")

#: One row per rendered PSF spot.
TRUTH_SPOT_SCHEMA: dict[str, str] = {
    "spot_id": "int64",
    "channel": "object",  # "her2" or "cep17"
    "z": "float64",  # pixels (0.0 for 2D)
    "y": "float64",  # pixels
    "x": "float64",  # pixels
    "amplitude": "float64",  # continuous Gaussian peak height, output ADU above background
    "sigma": "float64",  # lateral Gaussian sigma along x, pixels
    "sigma_z": "float64",  # axial sigma, pixels (0.0 for 2D)
    "snr": "float64",  # amplitude / expected noise standard deviation at the spot
    "label": "int64",  # nucleus label at the signal centre; 0 = outside nuclei
    "cluster_id": "int64",  # -1 when not part of a HER2 cluster
    "signal_id": "int64",  # one per counted signal; both halves of a split signal share it
    "is_split": "bool",
    "is_weak": "bool",  # snr < WEAK_SNR
}

#: One row per nucleus with at least one visible pixel.
TRUTH_CELL_SCHEMA: dict[str, str] = {
    "image": "object",
    "label": "int64",
    "centroid_y": "float64",  # pixels, visible footprint
    "centroid_x": "float64",
    "area_um2": "float64",  # visible footprint area
    "n_her2": "int64",  # counted HER2 copies (split = 1, cluster = its copies)
    "n_cep17": "int64",
    "n_her2_clusters": "int64",
    "n_split": "int64",  # split signals (both channels)
    "touches_border": "bool",
    "overlaps": "bool",
    "is_obscured": "bool",  # debris over it at half a signal's peak or more
    "is_scorable": "bool",
    "population": "object",  # copy-number population the nucleus was drawn from
    "is_dim": "bool",
    "blur_um": "float64",  # out-of-focus blur sigma of the nucleus
    "z_center": "float64",  # pixels (0.0 for 2D)
    "thickness_um": "float64",
}

#: A spot with amplitude / noise standard deviation below this is flagged weak.
WEAK_SNR = 3.0
#: Debris over a nucleus at this fraction of a typical signal's peak (in a probe channel)
#: or more can hide a signal or pass for one: the nucleus is not scorable.
OBSCURING_DEBRIS = 0.5
_MAX_ADU = 4095
_CHANNELS = ("her2", "cep17")


# --------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Population:
    """Copy-number model of one population of tumour nuclei.

    Parameters
    ----------
    name : str
        Short name stored in the truth cell table.
    her2_probs : tuple of float
        Probability of ``k`` single (non-cluster) HER2 signals per nucleus, ``k = 0, 1, ...``.
    cep17_probs : tuple of float
        Probability of ``k`` CEP17 signals per nucleus.
    cluster_probs : tuple of float
        Probability of ``k`` HER2 clusters per nucleus.
    cluster_copies : tuple of int
        Inclusive range of gene copies in one cluster.

    Raises
    ------
    ValueError
        If a probability table is empty, negative or does not sum to 1.

    Examples
    --------
    >>> Population("p", her2_probs=(0, 0, 1.0), cep17_probs=(0, 0, 1.0)).name
    'p'
    """

    name: str
    her2_probs: tuple[float, ...]
    cep17_probs: tuple[float, ...]
    cluster_probs: tuple[float, ...] = (1.0,)
    cluster_copies: tuple[int, int] = (4, 12)

    def __post_init__(self) -> None:
        for attr in ("her2_probs", "cep17_probs", "cluster_probs"):
            probs = np.asarray(getattr(self, attr), dtype=float)
            if probs.size == 0 or (probs < 0).any() or not math.isclose(probs.sum(), 1.0):
                raise ValueError(f"{attr} must be non-negative and sum to 1, got {probs.tolist()}")
        low, high = self.cluster_copies
        if not 2 <= low <= high:
            raise ValueError(
                f"cluster_copies must be (low, high) with 2 <= low <= high, got {low, high}"
            )

    def mean_counts(self) -> tuple[float, float]:
        """Expected (HER2, CEP17) copies per nucleus, clusters included."""
        k_her2 = np.dot(np.arange(len(self.her2_probs)), self.her2_probs)
        k_clusters = np.dot(np.arange(len(self.cluster_probs)), self.cluster_probs)
        copies = 0.5 * (self.cluster_copies[0] + self.cluster_copies[1])
        k_cep17 = np.dot(np.arange(len(self.cep17_probs)), self.cep17_probs)
        return float(k_her2 + k_clusters * copies), float(k_cep17)


@dataclass(frozen=True)
class CasePreset:
    """All parameters of one synthetic case type.

    Parameters
    ----------
    name : str
        Key in :data:`PRESETS`.
    description : str
        One line for humans.
    populations : tuple of Population
        Copy-number populations; the first is the majority.
    population_weights : tuple of float
        Fraction of nuclei in each population (sums to 1). Minority populations form a
        spatially clustered sub-clone.
    intended_group : int or None
        ASCO/CAP group the preset is designed to realise (None: deliberately near a cut-off).
    intended_ratio : tuple of float or None
        Inclusive range the true case ratio is designed to fall in.
    spot_amplitude : float
        Median peak height of one HER2 signal, ADU at full illumination.
    amplitude_log_sd : float
        Standard deviation of log amplitude (log-normal spread).
    spot_sigma_um : tuple of float
        Range of the lateral Gaussian sigma of the signals, micrometres; each field draws
        one size (each signal then varies by -5 % to +8 %).
    weak_fraction : float
        Fraction of signals rendered at SNR 2-3.
    split_fraction : float
        Fraction of single signals rendered as two half-spots.
    outside_fraction : float
        Signals placed over cytoplasm, as a fraction of nuclear signals.
    nucleus_coverage : float
        Target fraction of the field covered by nuclei.
    overlap_fraction : float
        Probability that a new nucleus is placed overlapping an earlier one.
    dim_fraction : float
        Fraction of nuclei at 25-35 % of typical DAPI brightness.
    blur_fraction : float
        Fraction of nuclei strongly out of focus.
    debris_per_1000_um2 : float
        Mean number of autofluorescent debris particles per 1000 square micrometres.
    gain : float
        Camera ADU per photo-electron (sets the Poisson noise).
    read_noise : float
        Gaussian read noise, ADU.

    Examples
    --------
    >>> PRESETS["group1"].intended_group
    1
    """

    name: str
    description: str
    populations: tuple[Population, ...]
    population_weights: tuple[float, ...] = (1.0,)
    intended_group: int | None = None
    intended_ratio: tuple[float, float] | None = None
    spot_amplitude: float = 260.0
    amplitude_log_sd: float = 0.35
    spot_sigma_um: tuple[float, float] = (0.12, 0.16)
    weak_fraction: float = 0.07
    split_fraction: float = 0.06
    outside_fraction: float = 0.04
    nucleus_coverage: float = 0.56
    overlap_fraction: float = 0.04
    dim_fraction: float = 0.12
    blur_fraction: float = 0.2
    debris_per_1000_um2: float = 0.4
    gain: float = 2.0
    read_noise: float = 3.0

    def __post_init__(self) -> None:
        weights = np.asarray(self.population_weights, dtype=float)
        if len(weights) != len(self.populations) or not math.isclose(weights.sum(), 1.0):
            raise ValueError(
                f"population_weights must give one weight per population and sum to 1, "
                f"got {self.population_weights!r}"
            )

    def expected_truth(self) -> tuple[float, float, float]:
        """Expected (mean HER2, mean CEP17, ratio) of scorable nuclei, ignoring exclusions."""
        means = np.array([pop.mean_counts() for pop in self.populations])
        her2, cep17 = np.asarray(self.population_weights) @ means
        return float(her2), float(cep17), float(her2 / cep17)


def _probs(table: Mapping[int, float]) -> tuple[float, ...]:
    """Probability tuple indexed by count from a sparse ``{count: probability}`` mapping."""
    out = np.zeros(max(table) + 1)
    for k, p in table.items():
        out[k] = p
    return tuple(float(p) for p in out)


_NORMAL = Population(
    "normal",
    her2_probs=_probs({0: 0.02, 1: 0.1, 2: 0.72, 3: 0.13, 4: 0.03}),
    cep17_probs=_probs({0: 0.03, 1: 0.12, 2: 0.72, 3: 0.11, 4: 0.02}),
)
_AMPLIFIED = Population(
    "amplified",
    her2_probs=_probs({2: 0.2, 3: 0.3, 4: 0.3, 5: 0.2}),
    cep17_probs=_probs({1: 0.1, 2: 0.6, 3: 0.25, 4: 0.05}),
    cluster_probs=_probs({0: 0.1, 1: 0.6, 2: 0.3}),
    cluster_copies=(4, 12),
)
_SUBCLONE = replace(_AMPLIFIED, cluster_probs=_probs({1: 0.5, 2: 0.4, 3: 0.1}))
_MONOSOMY = Population(
    "monosomy17",
    her2_probs=_probs({2: 0.2, 3: 0.45, 4: 0.35}),
    cep17_probs=_probs({1: 0.8, 2: 0.2}),
)
_POLYSOMY = Population(
    "polysomy17",
    her2_probs=_probs({6: 0.2, 7: 0.3, 8: 0.3, 9: 0.2}),
    cep17_probs=_probs({3: 0.2, 4: 0.4, 5: 0.3, 6: 0.1}),
)
_GAIN = Population(
    "her2_gain",
    her2_probs=_probs({4: 0.25, 5: 0.5, 6: 0.25}),
    cep17_probs=_probs({2: 0.3, 3: 0.5, 4: 0.2}),
)
_BORDERLINE = Population(
    "borderline",
    her2_probs=_probs({4: 0.3, 5: 0.4, 6: 0.3}),
    cep17_probs=_probs({2: 0.5, 3: 0.5}),
)

#: Case presets by name. Each realises its ``intended_group`` at the default size.
PRESETS: dict[str, CasePreset] = {
    preset.name: preset
    for preset in (
        CasePreset(
            "group1",
            "HER2 amplified (ratio >= 2, mean HER2 >= 4) with tight clusters",
            (_AMPLIFIED,),
            intended_group=1,
        ),
        CasePreset(
            "group2",
            "ratio >= 2 with mean HER2 < 4 through chromosome 17 monosomy",
            (_MONOSOMY,),
            intended_group=2,
        ),
        CasePreset(
            "group3",
            "ratio < 2 with mean HER2 >= 6: chromosome 17 polysomy / co-amplification",
            (_POLYSOMY,),
            intended_group=3,
        ),
        CasePreset(
            "group4",
            "ratio < 2 with 4 <= mean HER2 < 6",
            (_GAIN,),
            intended_group=4,
        ),
        CasePreset(
            "group5",
            "normal: about 2 HER2 and 2 CEP17 per nucleus",
            (_NORMAL,),
            intended_group=5,
        ),
        CasePreset(
            "heterogeneous",
            "normal tumour with a spatially clustered amplified sub-clone (30 % of nuclei)",
            (_NORMAL, _SUBCLONE),
            population_weights=(0.7, 0.3),
            intended_group=1,
        ),
        CasePreset(
            "borderline",
            "true ratio near 2.0 (1.8-2.2), mean HER2 about 5",
            (_BORDERLINE,),
            intended_ratio=(1.8, 2.2),
        ),
        CasePreset(
            "low_snr",
            "amplified case imaged at low signal-to-noise",
            (_AMPLIFIED,),
            intended_group=1,
            spot_amplitude=80.0,
            weak_fraction=0.2,
        ),
        CasePreset(
            "clean",
            "group 2 case imaged with a low-noise camera (a tenth of the usual noise)",
            (_MONOSOMY,),
            intended_group=2,
            # Weak signals are drawn at SNR 2-3, which at this noise would be 1-3 % of a
            # typical signal's brightness: not a signal anyone counts, so there are none.
            weak_fraction=0.0,
            gain=0.2,
            read_noise=0.3,
        ),
        CasePreset(
            "wide_signals",
            "amplified case with signals about twice the usual size (sigma 0.24-0.30 um)",
            (_AMPLIFIED,),
            intended_group=1,
            spot_sigma_um=(0.24, 0.30),
        ),
    )
}


def get_preset(preset: str | CasePreset) -> CasePreset:
    """Return a :class:`CasePreset` from its name (or the preset itself).

    Parameters
    ----------
    preset : str or CasePreset
        A key of :data:`PRESETS`.

    Returns
    -------
    CasePreset

    Raises
    ------
    ValueError
        If the name is unknown.
    TypeError
        If ``preset`` is neither a str nor a CasePreset.

    Examples
    --------
    >>> get_preset("group2").name
    'group2'
    """
    if isinstance(preset, CasePreset):
        return preset
    if not isinstance(preset, str):
        raise TypeError(f"preset must be a name or a CasePreset, got {type(preset).__name__}")
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    return PRESETS[preset]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CaseTruth:
    """Case-level truth over the scorable nuclei of one or more fields.

    ``fraction_amplified`` is the fraction of scorable nuclei that are individually
    amplified: HER2/CEP17 >= 2.0 with at least 4 HER2 copies, or >= 6 HER2 copies.
    With no scorable nucleus, means and ratio are NaN and ``group`` is None.
    """

    n_nuclei: int
    total_her2: int
    total_cep17: int
    mean_her2: float
    mean_cep17: float
    ratio: float
    group: int | None
    fraction_amplified: float
    n_fields: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dictionary (JSON-ready; NaN becomes None)."""
        out = asdict(self)
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in out.items()}


@dataclass(frozen=True, eq=False)
class SyntheticField:
    """One synthetic field and its truth.

    Attributes
    ----------
    image : FishImage
        uint16 channels ``(Y, X)`` or ``(Z, Y, X)``.
    nuclei : numpy.ndarray
        int32 ``(Y, X)`` truth labels (the top-most nucleus where two overlap).
    spots : pandas.DataFrame
        Rendered spots, :data:`TRUTH_SPOT_SCHEMA`.
    cells : pandas.DataFrame
        Per-nucleus truth, :data:`TRUTH_CELL_SCHEMA`.
    debris : pandas.DataFrame or None
        Autofluorescent debris, one row per Gaussian blob: ``particle, z, y, x, sigma``
        (pixels) and the blob's peak in each channel before illumination. Debris is not a
        signal: a detector should reject it (it is bright in DAPI and both probes).
    """

    image: FishImage
    nuclei: np.ndarray
    spots: pd.DataFrame
    cells: pd.DataFrame
    debris: pd.DataFrame | None = None


@dataclass(frozen=True, eq=False)
class SyntheticCase:
    """Several fields of one synthetic case and the case truth."""

    name: str
    preset: str
    fields: tuple[SyntheticField, ...]
    truth: CaseTruth
    seed: int | None = None


# --------------------------------------------------------------------------- spot rendering


def _axis_weights(
    centre: np.ndarray, sigma: np.ndarray, half: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-spot pixel integrals of exp(-t^2 / 2 sigma^2) over ``2 half + 1`` pixels."""
    start = np.floor(centre + 0.5).astype(np.int64) - half
    edges = start[:, None] + np.arange(2 * half + 2) - 0.5 - centre[:, None]
    cdf = erf(edges / (math.sqrt(2.0) * sigma[:, None]))
    weights = 0.5 * np.diff(cdf, axis=1) * math.sqrt(2.0 * math.pi) * sigma[:, None]
    return start, weights


def render_spots(
    shape: Sequence[int],
    coords: np.ndarray,
    amplitude: np.ndarray | float,
    sigma: np.ndarray | float,
    *,
    truncate: float = 4.0,
) -> np.ndarray:
    """Render Gaussian spots integrated over each pixel (or voxel).

    Parameters
    ----------
    shape : sequence of int
        Output shape ``(Y, X)`` or ``(Z, Y, X)``.
    coords : array_like, shape (n, ndim)
        Spot centres in pixels, array order; pixel ``i`` covers ``[i - 0.5, i + 0.5)``.
    amplitude : float or array_like, shape (n,)
        Peak height of the continuous Gaussian, output units.
    sigma : float or array_like, shape (n,) or (n, ndim)
        Gaussian standard deviation in pixels, one per spot or per spot and axis.
    truncate : float
        Each spot is rendered in a window of ``ceil(truncate * sigma)`` pixels around it.

    Returns
    -------
    numpy.ndarray
        float64 image; each fully contained spot sums to
        ``amplitude * (2 pi)^(ndim/2) * prod(sigma)``.

    Raises
    ------
    ValueError
        If the shapes of ``coords``, ``amplitude`` or ``sigma`` do not fit, or a sigma
        is not positive.

    Notes
    -----
    The pixel value is the integral of the Gaussian over the pixel, computed
    separably from differences of the error function, so spots narrower than a
    pixel keep their total intensity. Windows are accumulated with ``np.bincount``.

    Examples
    --------
    >>> img = render_spots((15, 15), [[7.0, 7.0]], 10.0, 1.5)
    >>> print(round(float(img.sum() / (10.0 * 2 * np.pi * 1.5**2)), 4))
    1.0
    """
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    coords = np.asarray(coords, dtype=float).reshape(-1, ndim)
    n = len(coords)
    amp = np.broadcast_to(np.asarray(amplitude, dtype=float), (n,))
    sig = np.asarray(sigma, dtype=float)
    sig = np.broadcast_to(sig[:, None] if sig.ndim == 1 else sig, (n, ndim))
    if ndim not in (2, 3):
        raise ValueError(f"shape must be (Y, X) or (Z, Y, X), got {shape}")
    if n and not (sig > 0).all():
        raise ValueError(f"sigma must be positive, got minimum {sig.min()}")
    out = np.zeros(int(np.prod(shape)), dtype=float)
    if n == 0:
        return out.reshape(shape)
    flat = np.zeros((n, 1), dtype=np.int64)
    values = amp[:, None]
    valid = np.ones((n, 1), dtype=bool)
    for axis in range(ndim):
        half = math.ceil(truncate * sig[:, axis].max())
        start, weights = _axis_weights(coords[:, axis], sig[:, axis], half)
        index = start[:, None] + np.arange(2 * half + 1)
        inside = (index >= 0) & (index < shape[axis])
        flat = (flat[:, :, None] * shape[axis] + index[:, None, :]).reshape(n, -1)
        values = (values[:, :, None] * weights[:, None, :]).reshape(n, -1)
        valid = (valid[:, :, None] & inside[:, None, :]).reshape(n, -1)
    out += np.bincount(flat[valid], weights=values[valid], minlength=out.size)
    return out.reshape(shape)


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Grid:
    shape: tuple[int, int]  # (Y, X)
    n_z: int | None
    spacing: tuple[float, float, float]  # (z, y, x) micrometres; z unused in 2D

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.shape if self.n_z is None else (self.n_z, *self.shape)

    @property
    def pad(self) -> tuple[int, int]:
        return (math.ceil(12.0 / self.spacing[1]), math.ceil(12.0 / self.spacing[2]))


@dataclass
class _Nucleus:
    cy: float  # micrometres, image frame
    cx: float
    radius_a: float
    radius_b: float
    angle: float
    harmonics: np.ndarray  # (k, 3): order, relative amplitude, phase
    brightness: float
    is_dim: bool
    blur_um: float
    z_um: float
    thickness_um: float
    population: int = 0
    overlaps: bool = False
    origin: tuple[int, int] = (0, 0)  # image-frame pixel of mask[0, 0]
    mask: np.ndarray | None = None
    rho: np.ndarray | None = None
    depth_um: np.ndarray | None = None

    @property
    def max_radius(self) -> float:
        return max(self.radius_a, self.radius_b) * (1.0 + np.abs(self.harmonics[:, 1]).sum())

    def radius(self, theta: np.ndarray) -> np.ndarray:
        """Boundary radius (um) in direction ``theta`` (radians, atan2(dy, dx))."""
        t = theta - self.angle
        a, b = self.radius_a, self.radius_b
        ellipse = a * b / np.sqrt((b * np.cos(t)) ** 2 + (a * np.sin(t)) ** 2)
        k, amp, phase = self.harmonics.T
        wobble = np.cos(np.asarray(theta)[..., None] * k + phase) @ amp
        return ellipse * (1.0 + wobble)

    def polar(self, dy_um: np.ndarray, dx_um: np.ndarray) -> np.ndarray:
        """Normalised radius rho (< 1 inside) at offsets from the centre.

        Same boundary as :meth:`radius`, evaluated without trigonometric calls:
        the harmonics are real parts of powers of the unit phasor (dx + i dy) / r.
        """
        dist = np.hypot(dy_um, dx_um).astype(np.float32)
        safe = np.where(dist > 0, dist, np.float32(1.0))
        cos_t = np.where(dist > 0, dx_um / safe, np.float32(1.0)).astype(np.float32)
        sin_t = (dy_um / safe).astype(np.float32)
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        ct, st = cos_t * ca + sin_t * sa, sin_t * ca - cos_t * sa
        a, b = self.radius_a, self.radius_b
        ellipse = a * b / np.sqrt((b * ct) ** 2 + (a * st) ** 2)
        phasor = (cos_t + 1j * sin_t).astype(np.complex64)
        power = phasor
        wobble = np.ones_like(dist)
        for k in range(1, int(self.harmonics[:, 0].max()) + 1):
            if k > 1:
                power = power * phasor
            for _order, amp, phase in self.harmonics[self.harmonics[:, 0] == k]:
                rot = complex(math.cos(phase), math.sin(phase))
                wobble += np.float32(amp) * (power * np.complex64(rot)).real
        return dist / (ellipse * wobble)


def _random_nucleus(preset: CasePreset, rng: np.random.Generator, grid: _Grid) -> _Nucleus:
    diameter = float(np.clip(rng.lognormal(math.log(9.5), 0.2), 6.0, 14.0))
    aspect = rng.uniform(1.0, 1.6)
    irregular = 2.0 if rng.random() < 0.12 else 1.0
    orders = np.arange(2, 6, dtype=float)
    amps = np.clip(rng.normal(0.0, 0.045 * irregular / (orders - 1)), -0.12, 0.12)
    harmonics = np.column_stack([orders, amps, rng.uniform(0, 2 * math.pi, orders.size)])
    is_dim = bool(rng.random() < preset.dim_fraction)
    brightness = 1100.0 * rng.lognormal(0.0, 0.22) * (rng.uniform(0.25, 0.35) if is_dim else 1.0)
    blurred = rng.random() < preset.blur_fraction
    blur_um = rng.uniform(0.4, 1.0) if blurred else rng.uniform(0.05, 0.25)
    stack_um = 0.0 if grid.n_z is None else (grid.n_z - 1) * grid.spacing[0]
    z_um = float(np.clip(stack_um / 2 + rng.normal(0.0, 0.4), 0.0, stack_um))
    return _Nucleus(
        cy=0.0,
        cx=0.0,
        radius_a=diameter / 2 * math.sqrt(aspect),
        radius_b=diameter / 2 / math.sqrt(aspect),
        angle=rng.uniform(0, math.pi),
        harmonics=harmonics,
        brightness=brightness,
        is_dim=is_dim,
        blur_um=blur_um,
        z_um=z_um,
        thickness_um=rng.uniform(2.5, 4.5),
    )


def _patch_axes(nuc: _Nucleus, grid: _Grid, margin_um: float) -> tuple[np.ndarray, ...]:
    """Pixel indices (image frame) and micrometre offsets of a patch around a nucleus."""
    _, sy, sx = grid.spacing
    reach = nuc.max_radius + margin_um
    iy = np.arange(math.floor((nuc.cy - reach) / sy), math.ceil((nuc.cy + reach) / sy) + 1)
    ix = np.arange(math.floor((nuc.cx - reach) / sx), math.ceil((nuc.cx + reach) / sx) + 1)
    return iy, ix, iy[:, None] * sy - nuc.cy, ix[None, :] * sx - nuc.cx


def _rasterise(nuc: _Nucleus, grid: _Grid) -> None:
    """Attach the footprint mask, rho and boundary distance to ``nuc``."""
    iy, ix, dy, dx = _patch_axes(nuc, grid, grid.spacing[1] + grid.spacing[2])
    nuc.rho = nuc.polar(dy, dx)
    nuc.mask = nuc.rho < 1.0
    nuc.origin = (int(iy[0]), int(ix[0]))


def _contact_position(anchor: _Nucleus, nuc: _Nucleus, rng: np.random.Generator, overlap: bool):
    theta = rng.uniform(-math.pi, math.pi)
    contact = float(anchor.radius(np.array(theta)) + nuc.radius(np.array(theta + math.pi)))
    distance = contact * rng.uniform(0.55, 0.8) if overlap else contact + rng.uniform(0.05, 0.6)
    return anchor.cy + distance * math.sin(theta), anchor.cx + distance * math.cos(theta)


def _occupancy_view(occupancy: np.ndarray, nuc: _Nucleus, grid: _Grid):
    """The occupancy window under ``nuc``'s mask, or None if it leaves the padded frame."""
    py, px = grid.pad
    y0, x0 = nuc.origin[0] + py, nuc.origin[1] + px
    h, w = nuc.mask.shape
    if y0 < 0 or x0 < 0 or y0 + h > occupancy.shape[0] or x0 + w > occupancy.shape[1]:
        return None
    return occupancy[y0 : y0 + h, x0 : x0 + w]


def _quick_collision(nuc: _Nucleus, occupancy: np.ndarray, grid: _Grid) -> bool:
    """Cheap pre-check: is the centre or a point just inside the boundary already taken?"""
    theta = np.linspace(-math.pi, math.pi, 12, endpoint=False)
    reach = np.concatenate([[0.0], 0.9 * nuc.radius(theta)])
    angle = np.concatenate([[0.0], theta])
    py, px = grid.pad
    rows = np.rint((nuc.cy + reach * np.sin(angle)) / grid.spacing[1]).astype(int) + py
    cols = np.rint((nuc.cx + reach * np.cos(angle)) / grid.spacing[2]).astype(int) + px
    ok = (rows >= 0) & (rows < occupancy.shape[0]) & (cols >= 0) & (cols < occupancy.shape[1])
    return bool((occupancy[rows[ok], cols[ok]] > 0).any())


def _try_place(
    nuc: _Nucleus, placed: list[_Nucleus], occupancy: np.ndarray, grid: _Grid, overlap: bool
) -> bool:
    """Accept ``nuc`` if it collides with nobody (or, for an overlapper, overlaps moderately)."""
    if not overlap and _quick_collision(nuc, occupancy, grid):
        return False
    _rasterise(nuc, grid)
    view = _occupancy_view(occupancy, nuc, grid)
    if view is None:
        return False
    under = view[nuc.mask]
    hit = under > 0
    if overlap:
        shared = hit.mean()
        if not 0.08 <= shared <= 0.45:
            return False
        for index in np.unique(under[hit]):
            placed[index - 1].overlaps = True
        nuc.overlaps = True
    elif hit.any():
        return False
    view[nuc.mask] = len(placed) + 1
    nuc.depth_um = ndimage.distance_transform_edt(nuc.mask, sampling=grid.spacing[1:])
    placed.append(nuc)
    return True


def _layout_nuclei(
    preset: CasePreset, grid: _Grid, rng: np.random.Generator
) -> tuple[list[_Nucleus], np.ndarray]:
    """Place nuclei in nests (touching neighbours), a few overlapping, some cut by the edge.

    Returns the nuclei in drawing order and the padded occupancy image (index + 1 of the
    top-most nucleus per pixel).
    """
    (ny, nx), (_, sy, sx), (py, px) = grid.shape, grid.spacing, grid.pad
    occupancy = np.zeros((ny + 2 * py, nx + 2 * px), dtype=np.int32)
    height, width = ny * sy, nx * sx
    target = preset.nucleus_coverage * rng.uniform(0.85, 1.15) * height * width
    placed: list[_Nucleus] = []
    area, failures, n_overlapping = 0.0, 0, 0
    while area < target and failures < 80:
        nuc = _random_nucleus(preset, rng, grid)
        quota = preset.overlap_fraction * (len(placed) + 1)
        overlap = bool(placed) and n_overlapping < quota and rng.random() < 0.5
        if placed and (overlap or rng.random() < 0.85):
            anchor = placed[rng.integers(len(placed))]
            nuc.cy, nuc.cx = _contact_position(anchor, nuc, rng, overlap)
        else:
            edge = 0.4 * nuc.radius_b
            nuc.cy = rng.uniform(-edge, height + edge)
            nuc.cx = rng.uniform(-edge, width + edge)
        if _try_place(nuc, placed, occupancy, grid, overlap):
            area += math.pi * nuc.radius_a * nuc.radius_b
            n_overlapping += overlap
            failures = 0
        else:
            failures += 1
    return placed, occupancy


# --------------------------------------------------------------------------- DAPI and backgrounds


def _band_noise(shape: tuple[int, ...], fine_px: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance band-limited noise (difference of Gaussians of white noise)."""
    white = rng.standard_normal(shape).astype(np.float32)
    band = ndimage.gaussian_filter(white, fine_px) - ndimage.gaussian_filter(white, 4 * fine_px)
    return band / max(float(band.std()), 1e-6)


def _interpolation_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) Gaussian-kernel interpolation weights from a coarse to a fine axis."""
    fine = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    weights = np.exp(-0.5 * ((fine[:, None] - np.arange(n_in)[None, :]) / 0.8) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _smooth_field(shape: tuple[int, int], scale_px: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth unit-variance random field with correlation length about ``scale_px``."""
    coarse_shape = tuple(max(4, math.ceil(s / scale_px)) for s in shape)
    coarse = rng.standard_normal(coarse_shape).astype(np.float32)
    wy = _interpolation_matrix(shape[0], coarse_shape[0])
    wx = _interpolation_matrix(shape[1], coarse_shape[1])
    field = wy @ coarse @ wx.T
    return (field - field.mean()) / max(float(field.std()), 1e-6)


def _chromatin(nuc: _Nucleus, rho: np.ndarray, grid: _Grid, rng: np.random.Generator):
    """In-focus DAPI of one nucleus on its patch and its smooth body (for haze)."""
    _, sy, sx = grid.spacing
    inside = rho < 1.0
    body = np.where(inside, (1.0 - np.minimum(rho, 1.0) ** 2) ** 0.35, 0.0).astype(np.float32)
    texture = _band_noise(rho.shape, 0.25 / sx, rng)
    rim = np.exp(-(((1.0 - np.minimum(rho, 1.0)) * nuc.radius_b / 0.35) ** 2)) * inside
    dapi = body * (1.0 + rng.uniform(0.15, 0.35) * texture) + rng.uniform(0.1, 0.4) * rim
    candidates = np.flatnonzero(rho.ravel() < 0.85)
    n_speckles = min(rng.poisson(5), candidates.size)
    if n_speckles:
        chosen = rng.choice(candidates, n_speckles, replace=False)
        coords = np.column_stack(np.unravel_index(chosen, rho.shape)).astype(float)
        sigma = rng.uniform(0.2, 0.35, n_speckles)[:, None] / np.array([sy, sx])
        dapi += render_spots(rho.shape, coords, rng.uniform(0.2, 0.6, n_speckles), sigma)
    return np.clip(dapi, 0.0, None) * nuc.brightness, body


def _plane_blur_and_weight(nuc: _Nucleus, grid: _Grid) -> list[tuple[float, float]]:
    """(blur sigma um, intensity weight) of a nucleus in each output plane."""
    if grid.n_z is None:
        return [(nuc.blur_um, 1.0)]
    out = []
    half = nuc.thickness_um / 2
    for plane in range(grid.n_z):
        dz = plane * grid.spacing[0] - nuc.z_um
        weight = 0.5 * (erf((dz + half) / 0.7) - erf((dz - half) / 0.7))
        defocus = 0.6 * max(0.0, abs(dz) - half / 2)
        out.append((math.hypot(nuc.blur_um, defocus), 0.3 + 0.7 * weight))
    return out


def _add_patch(image: np.ndarray, patch: np.ndarray, origin: tuple[int, int]) -> None:
    """Add ``patch`` (last two axes Y, X) at image-frame ``origin``, clipped to the image."""
    y0, x0 = origin
    h, w = patch.shape[-2:]
    ny, nx = image.shape[-2:]
    ya, xa = max(y0, 0), max(x0, 0)
    yb, xb = min(y0 + h, ny), min(x0 + w, nx)
    if ya >= yb or xa >= xb:
        return
    image[..., ya:yb, xa:xb] += patch[..., ya - y0 : yb - y0, xa - x0 : xb - x0]


def _render_nuclei(nuclei: list[_Nucleus], grid: _Grid, rng: np.random.Generator):
    """DAPI image of all nuclei (overlaps add) and the matching haze body image."""
    dapi = np.zeros(grid.out_shape, dtype=np.float32)
    body = np.zeros(grid.out_shape, dtype=np.float32)
    _, sy, sx = grid.spacing
    for nuc in nuclei:
        planes = _plane_blur_and_weight(nuc, grid)
        margin = 3.0 * max(b for b, _ in planes) + 2 * sx
        iy, ix, dy, dx = _patch_axes(nuc, grid, margin)
        chromatin, smooth = _chromatin(nuc, nuc.polar(dy, dx), grid, rng)
        haze = rng.uniform(0.5, 1.5)
        stack_dapi, stack_body = [], []
        for blur_um, weight in planes:
            sigma = (blur_um / sy, blur_um / sx)
            stack_dapi.append(ndimage.gaussian_filter(chromatin, sigma) * weight)
            stack_body.append(ndimage.gaussian_filter(smooth, sigma) * weight * haze)
        origin = (int(iy[0]), int(ix[0]))
        squeeze = grid.n_z is None
        _add_patch(dapi, stack_dapi[0] if squeeze else np.stack(stack_dapi), origin)
        _add_patch(body, stack_body[0] if squeeze else np.stack(stack_body), origin)
    return dapi, body


def _illumination(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Vignetting times a linear gradient, about 1 in the centre."""
    yy = np.linspace(-1.0, 1.0, shape[0], dtype=np.float32)[:, None]
    xx = np.linspace(-1.0, 1.0, shape[1], dtype=np.float32)[None, :]
    cy, cx = (float(v) for v in rng.uniform(-0.3, 0.3, 2))
    strength, slope = float(rng.uniform(0.1, 0.3)), float(rng.uniform(0.0, 0.15))
    theta = float(rng.uniform(0, 2 * math.pi))
    vignette_y = 1.0 - strength * (yy - cy) ** 2 / 2.0
    vignette = vignette_y - strength * (xx - cx) ** 2 / 2.0
    gradient_y = 1.0 + slope * math.sin(theta) * yy
    return vignette * (gradient_y + slope * math.cos(theta) * xx)


def _debris(grid: _Grid, preset: CasePreset, rng: np.random.Generator):
    """Broadband autofluorescent debris: small bright irregular blobs in every channel.

    Returns the per-channel images (before illumination) and a table with one row per blob.
    """
    _, sy, sx = grid.spacing
    area_um2 = grid.shape[0] * sy * grid.shape[1] * sx
    n_particles = rng.poisson(preset.debris_per_1000_um2 * area_um2 / 1000.0)
    sizes = rng.integers(2, 6, n_particles)
    n_blobs = int(sizes.sum())
    centres = np.repeat(rng.uniform(0, 1, (n_particles, 2)) * grid.shape, sizes, axis=0)
    coords = centres + rng.normal(0.0, 0.5, (n_blobs, 2)) / np.array([sy, sx])
    sigma_um = rng.uniform(0.15, 0.5, n_blobs)
    sigma = np.column_stack([sigma_um / sy, sigma_um / sx])
    if grid.n_z is not None:
        z = np.repeat(rng.uniform(0, grid.n_z - 1, n_particles), sizes)
        coords = np.column_stack([z, coords])
        sigma = np.column_stack([np.full(n_blobs, 1.0 / grid.spacing[0]), sigma])
    scale = np.repeat(rng.lognormal(0.0, 0.5, n_particles), sizes)
    levels = {
        "dapi": 700.0,
        "her2": 3.0 * preset.spot_amplitude,
        "cep17": 3.0 * preset.spot_amplitude,
    }
    images = {
        name: render_spots(grid.out_shape, coords, level * scale, sigma).astype(np.float32)
        for name, level in levels.items()
    }
    table = pd.DataFrame(
        {
            "particle": np.repeat(np.arange(1, n_particles + 1), sizes),
            "z": coords[:, 0] if grid.n_z is not None else 0.0,
            "y": coords[:, -2],
            "x": coords[:, -1],
            "sigma": sigma[:, -1],
            **{f"{name}_amplitude": level * scale for name, level in levels.items()},
        }
    )
    return images, table


# --------------------------------------------------------------------------- copy numbers and spots


def _stratified(probs: Sequence[float], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` draws from a discrete distribution with stratified (Latin hypercube) uniforms."""
    u = (rng.permutation(n) + rng.random(n)) / max(n, 1)
    return np.searchsorted(np.cumsum(probs)[:-1], u, side="right").astype(np.int64)


def _assign_populations(
    nuclei: list[_Nucleus], preset: CasePreset, grid: _Grid, rng: np.random.Generator
) -> None:
    """Minority populations form one spatial sub-clone each, with exact quotas per field."""
    if len(preset.populations) == 1 or not nuclei:
        return
    _, sy, sx = grid.spacing
    centre = rng.uniform(0, 1, 2) * np.array([grid.shape[0] * sy, grid.shape[1] * sx])
    position = np.array([[n.cy, n.cx] for n in nuclei])
    spread = 0.35 * max(grid.shape[0] * sy, grid.shape[1] * sx)
    order = np.argsort(np.hypot(*(position - centre).T) + rng.normal(0, spread, len(nuclei)))
    quotas = np.round(np.cumsum(preset.population_weights[::-1]) * len(nuclei)).astype(int)
    for pop, upto in zip(range(len(preset.populations) - 1, 0, -1), quotas, strict=False):
        for index in order[:upto]:
            nuclei[index].population = pop
        order = order[upto:]
        quotas = quotas - upto


def _copy_numbers(
    nuclei: list[_Nucleus], preset: CasePreset, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Per-nucleus numbers of single HER2, CEP17 signals and HER2 clusters (stratified)."""
    n = len(nuclei)
    out = {key: np.zeros(n, dtype=np.int64) for key in ("her2", "cep17", "clusters")}
    populations = np.array([nuc.population for nuc in nuclei], dtype=int)
    for index, pop in enumerate(preset.populations):
        members = np.flatnonzero(populations == index)
        out["her2"][members] = _stratified(pop.her2_probs, members.size, rng)
        out["cep17"][members] = _stratified(pop.cep17_probs, members.size, rng)
        out["clusters"][members] = _stratified(pop.cluster_probs, members.size, rng)
    return out


class _SignalRecords:
    """Rows of the spot truth table under construction; ids start at 1."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.signal_ids: Iterator[int] = count(1)
        self.cluster_ids: Iterator[int] = count(1)

    def add(self, channel, z, y, x, rel_amp, signal, cluster, split, centre, weak):
        self.rows.append((channel, z, y, x, rel_amp, signal, cluster, split, *centre, weak))


def _candidates(nuc: _Nucleus, grid: _Grid, margin_um: float) -> np.ndarray:
    """Flat patch indices of in-image pixels at least ``margin_um`` inside the footprint."""
    ok = nuc.mask & (nuc.depth_um >= margin_um + max(grid.spacing[1:]))
    iy = nuc.origin[0] + np.arange(ok.shape[0])
    ix = nuc.origin[1] + np.arange(ok.shape[1])
    my = max(0, math.ceil(margin_um / grid.spacing[1]))
    mx = max(0, math.ceil(margin_um / grid.spacing[2]))
    ok &= ((iy >= my) & (iy < grid.shape[0] - my))[:, None]
    ok &= ((ix >= mx) & (ix < grid.shape[1] - mx))[None, :]
    return np.flatnonzero(ok)


#: Smallest gap (um) between the outer edges of two independent signals of one colour in one
#: nucleus. The kit counts signals no further apart than one signal diameter (~0.3-0.4 um) as
#: one, so independent signals are kept clear of that: the truth then counts what the kit's
#: rule counts, and only deliberate split signals fall below it.
MIN_SIGNAL_GAP_UM = 0.6


def _pick_position(nuc, grid, margin_um, rng, taken=None, radius_um=0.0):
    """Random sub-pixel position (z, y, x pixels) inside the nucleus, or None.

    ``taken`` lists ``(y_um, x_um, radius_um)`` of signals already placed; the position keeps
    :data:`MIN_SIGNAL_GAP_UM` clear of each (a few tries, then None).
    """
    cand = _candidates(nuc, grid, margin_um)
    if cand.size == 0:
        return None
    _, sy, sx = grid.spacing
    for _ in range(40):
        flat = cand[rng.integers(cand.size)]
        r, c = np.unravel_index(flat, nuc.mask.shape)
        y = nuc.origin[0] + r + rng.uniform(-0.49, 0.49)
        x = nuc.origin[1] + c + rng.uniform(-0.49, 0.49)
        if all(
            math.hypot(y * sy - ty, x * sx - tx) >= radius_um + tr + MIN_SIGNAL_GAP_UM
            for ty, tx, tr in taken or ()
        ):
            break
    else:
        return None
    if taken is not None:
        taken.append((y * sy, x * sx, radius_um))
    if grid.n_z is None:
        return 0.0, y, x
    half = 0.45 * nuc.thickness_um * math.sqrt(max(1.0 - float(nuc.rho[r, c]) ** 2, 0.05))
    z_um = nuc.z_um + rng.uniform(-half, half)
    return float(np.clip(z_um / grid.spacing[0], 0, grid.n_z - 1)), y, x


def _single_or_split(nuc, channel, grid, preset, sigma_um, records, rng, taken=None):
    split = rng.random() < preset.split_fraction
    weak = rng.random() < preset.weak_fraction
    separation_um = rng.uniform(2.2, 3.6) * sigma_um if split else 0.0
    pos = _pick_position(
        nuc, grid, separation_um / 2 + 0.1, rng, taken, separation_um / 2 + sigma_um
    )
    if pos is None:
        return
    signal = next(records.signal_ids)
    rel_amp = rng.lognormal(0.0, preset.amplitude_log_sd)
    if not split:
        records.add(channel, *pos, rel_amp, signal, -1, False, pos[1:], weak)
        return
    phi = rng.uniform(0, 2 * math.pi)
    _, sy, sx = grid.spacing
    offset = np.array([math.sin(phi) / sy, math.cos(phi) / sx]) * separation_um / 2
    for sign in (-1.0, 1.0):
        z = pos[0] + (rng.normal(0, 0.1) if grid.n_z else 0.0)
        y, x = np.array(pos[1:]) + sign * offset
        records.add(
            channel, z, y, x, rel_amp * rng.uniform(0.45, 0.6), signal, -1, True, pos[1:], weak
        )


def _cluster(nuc, copies_range, grid, preset, records, rng, taken=None):
    copies = int(rng.integers(copies_range[0], copies_range[1] + 1))
    radius_um = min(1.0, rng.uniform(0.3, 0.5) + 0.03 * copies)
    pos = _pick_position(nuc, grid, radius_um + 0.1, rng, taken, radius_um)
    if pos is None:
        return
    cluster = next(records.cluster_ids)
    _, sy, sx = grid.spacing
    r = radius_um * np.sqrt(rng.random(copies))
    phi = rng.uniform(0, 2 * math.pi, copies)
    dz = rng.uniform(-0.5, 0.5, copies) * radius_um
    for k in range(copies):
        y = pos[1] + r[k] * math.sin(phi[k]) / sy
        x = pos[2] + r[k] * math.cos(phi[k]) / sx
        z = (
            pos[0]
            if grid.n_z is None
            else float(np.clip(pos[0] + dz[k] / grid.spacing[0], 0, grid.n_z - 1))
        )
        # every copy of the amplicon carries the same probe as a single signal
        rel_amp = rng.lognormal(0.0, preset.amplitude_log_sd)
        records.add(
            "her2", z, y, x, rel_amp, next(records.signal_ids), cluster, False, (y, x), False
        )


def _nuclear_signals(nuclei, counts, preset, grid, sigma_um, records, rng) -> None:
    """Place every nucleus's signals; counts are thinned by the nucleus's in-image fraction."""
    for index, nuc in enumerate(nuclei):
        full = nuc.mask.sum()
        in_image = _candidates(nuc, grid, -10.0).size
        keep = in_image / full if full else 0.0
        if keep == 0.0:
            continue
        taken: dict[str, list] = {channel: [] for channel in _CHANNELS}
        population = preset.populations[nuc.population]
        for _ in range(rng.binomial(counts["clusters"][index], keep)):
            _cluster(nuc, population.cluster_copies, grid, preset, records, rng, taken["her2"])
        for channel in _CHANNELS:
            for _ in range(rng.binomial(counts[channel][index], keep)):
                _single_or_split(nuc, channel, grid, preset, sigma_um, records, rng, taken[channel])


def _outside_signals(nuclei, labels, n_signals, grid, rng, records) -> None:
    """Signals over cytoplasm, 0.3-1.5 um outside a nucleus and clear of every footprint."""
    _, sy, sx = grid.spacing
    visible = [n for n in nuclei if _candidates(n, grid, -10.0).size]
    placed, tries = 0, 0
    while visible and placed < n_signals and tries < 50 * max(n_signals, 1):
        tries += 1
        nuc = visible[rng.integers(len(visible))]
        theta = rng.uniform(-math.pi, math.pi)
        dist = float(nuc.radius(np.array(theta))) + rng.uniform(0.3, 1.5)
        y = (nuc.cy + dist * math.sin(theta)) / sy
        x = (nuc.cx + dist * math.cos(theta)) / sx
        r, c = round(y), round(x)
        if not (2 <= r < grid.shape[0] - 2 and 2 <= c < grid.shape[1] - 2):
            continue
        if labels[r - 2 : r + 3, c - 2 : c + 3].any():
            continue
        z = 0.0
        if grid.n_z is not None:
            z = float(np.clip(nuc.z_um / grid.spacing[0] + rng.normal(0, 1.0), 0, grid.n_z - 1))
        channel = _CHANNELS[rng.integers(2)]
        rel_amp = rng.lognormal(0.0, 0.35)
        records.add(channel, z, y, x, rel_amp, next(records.signal_ids), -1, False, (y, x), False)
        placed += 1


def _spot_table(records: _SignalRecords, labels: np.ndarray) -> pd.DataFrame:
    columns = ["channel", "z", "y", "x", "rel_amp", "signal_id", "cluster_id", "is_split"]
    columns += ["centre_y", "centre_x", "weak_signal"]
    table = pd.DataFrame(records.rows, columns=columns)
    cy = np.rint(table["centre_y"].to_numpy(float)).astype(int)
    cx = np.rint(table["centre_x"].to_numpy(float)).astype(int)
    table["label"] = labels[cy, cx].astype(np.int64)
    return table


def _spot_amplitudes(
    table: pd.DataFrame,
    preset: CasePreset,
    illumination: np.ndarray,
    noise_std: dict[str, np.ndarray],
    cep17_scale: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Final amplitudes (ADU) and SNR; weak signals are set to SNR 2-3."""
    iy = np.rint(table["y"].to_numpy(float)).astype(int).clip(0, illumination.shape[0] - 1)
    ix = np.rint(table["x"].to_numpy(float)).astype(int).clip(0, illumination.shape[1] - 1)
    iz = np.rint(table["z"].to_numpy(float)).astype(int)
    is_her2 = (table["channel"] == "her2").to_numpy()
    median = np.where(is_her2, preset.spot_amplitude, preset.spot_amplitude * cep17_scale)
    amplitude = median * table["rel_amp"].to_numpy(float) * illumination[iy, ix]
    std = np.empty(len(table))
    for channel in _CHANNELS:
        sel = (table["channel"] == channel).to_numpy()
        noise = noise_std[channel]
        std[sel] = noise[iy[sel], ix[sel]] if noise.ndim == 2 else noise[iz[sel], iy[sel], ix[sel]]
    weak = table["weak_signal"].to_numpy(bool)
    half = np.where(table["is_split"].to_numpy(bool), 0.55, 1.0)
    target = rng.uniform(2.0, 3.0, len(table)) * std * half
    amplitude = np.where(weak, target, amplitude)
    return amplitude, amplitude / std


# --------------------------------------------------------------------------- truth tables


def _label_image(occupancy: np.ndarray, nuclei: list[_Nucleus], grid: _Grid):
    """Crop the occupancy to the image and renumber visible nuclei 1..n in drawing order."""
    py, px = grid.pad
    crop = occupancy[py : py + grid.shape[0], px : px + grid.shape[1]]
    visible = np.zeros(len(nuclei) + 1, dtype=bool)
    visible[np.unique(crop)] = True
    visible[0] = False
    lut = np.zeros(len(nuclei) + 1, dtype=np.int32)
    lut[visible] = np.arange(1, visible.sum() + 1, dtype=np.int32)
    order = np.flatnonzero(visible) - 1
    return lut[crop], [nuclei[i] for i in order]


def _count_signals(spots: pd.DataFrame, n_labels: int) -> dict[str, np.ndarray]:
    """Per-label counts under the kit's rules (split = 1, cluster = its copies)."""
    inside = spots[spots["label"] > 0]
    out = {}
    for channel in _CHANNELS:
        signals = inside.loc[inside["channel"] == channel].drop_duplicates("signal_id")
        out[channel] = np.bincount(signals["label"], minlength=n_labels + 1)
    clusters = inside.loc[inside["cluster_id"] >= 0].drop_duplicates("cluster_id")
    out["clusters"] = np.bincount(clusters["label"], minlength=n_labels + 1)
    splits = inside.loc[inside["is_split"]].drop_duplicates("signal_id")
    out["split"] = np.bincount(splits["label"], minlength=n_labels + 1)
    return out


def _cell_table(
    labels: np.ndarray,
    visible: list[_Nucleus],
    spots: pd.DataFrame,
    grid: _Grid,
    preset,
    name,
    debris_light: np.ndarray,
) -> pd.DataFrame:
    n = len(visible)
    _, sy, sx = grid.spacing
    flat = labels.ravel()
    area = np.bincount(flat, minlength=n + 1)[1:]
    yy, xx = np.indices(labels.shape)
    cy = np.bincount(flat, weights=yy.ravel(), minlength=n + 1)[1:] / np.maximum(area, 1)
    cx = np.bincount(flat, weights=xx.ravel(), minlength=n + 1)[1:] / np.maximum(area, 1)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    touches = np.isin(np.arange(1, n + 1), edge)
    counts = _count_signals(spots, n)
    overlaps = np.array([nuc.overlaps for nuc in visible], dtype=bool)
    brightest = np.zeros(n + 1)
    np.maximum.at(brightest, flat, debris_light.ravel())
    obscured = brightest[1:] >= OBSCURING_DEBRIS * preset.spot_amplitude
    cells = pd.DataFrame(
        {
            "image": name,
            "label": np.arange(1, n + 1),
            "centroid_y": cy,
            "centroid_x": cx,
            "area_um2": area * sy * sx,
            "n_her2": counts["her2"][1:],
            "n_cep17": counts["cep17"][1:],
            "n_her2_clusters": counts["clusters"][1:],
            "n_split": counts["split"][1:],
            "touches_border": touches,
            "overlaps": overlaps,
            "is_obscured": obscured,
            "population": [preset.populations[nuc.population].name for nuc in visible],
            "is_dim": [nuc.is_dim for nuc in visible],
            "blur_um": [nuc.blur_um for nuc in visible],
            "z_center": [
                0.0 if grid.n_z is None else nuc.z_um / grid.spacing[0] for nuc in visible
            ],
            "thickness_um": [nuc.thickness_um for nuc in visible],
        }
    )
    cells["is_scorable"] = (
        ~cells["touches_border"]
        & ~cells["overlaps"]
        & ~cells["is_obscured"]
        & (cells["n_her2"] > 0)
        & (cells["n_cep17"] > 0)
    )
    return cells[list(TRUTH_CELL_SCHEMA)].astype(TRUTH_CELL_SCHEMA)


def case_truth(cells: pd.DataFrame) -> CaseTruth:
    """Case-level truth from one or more fields' truth cell tables.

    Parameters
    ----------
    cells : pandas.DataFrame
        Rows of :data:`TRUTH_CELL_SCHEMA` (at least ``is_scorable``, ``n_her2``, ``n_cep17``;
        ``image`` is used to count fields). Concatenate several fields' tables for a case.

    Returns
    -------
    CaseTruth
        Totals over scorable nuclei, means per nucleus, ratio of sums, ASCO/CAP group and
        the fraction of individually amplified nuclei (HER2/CEP17 >= 2.0 with >= 4 HER2
        copies, or >= 6 HER2 copies).

    Raises
    ------
    ValueError
        If a needed column is missing.

    Examples
    --------
    >>> cells = pd.DataFrame({"is_scorable": [True, True, False], "n_her2": [2, 10, 20],
    ...                       "n_cep17": [2, 2, 1]})
    >>> t = case_truth(cells)
    >>> t.ratio, t.mean_her2, t.group, t.fraction_amplified
    (3.0, 6.0, 1, 0.5)
    """
    missing = [c for c in ("is_scorable", "n_her2", "n_cep17") if c not in cells.columns]
    if missing:
        raise ValueError(f"cells is missing column(s) {missing}")
    scored = cells[cells["is_scorable"].astype(bool)]
    her2 = scored["n_her2"].to_numpy(np.int64)
    cep17 = scored["n_cep17"].to_numpy(np.int64)
    n = len(scored)
    n_fields = int(cells["image"].nunique()) if "image" in cells.columns else 1
    if n == 0:
        nan = float("nan")
        return CaseTruth(0, 0, 0, nan, nan, nan, None, nan, n_fields)
    ratio = float(her2.sum() / cep17.sum())
    mean_her2 = float(her2.mean())
    amplified = ((her2 >= 2 * cep17) & (her2 >= 4)) | (her2 >= 6)
    return CaseTruth(
        n_nuclei=n,
        total_her2=int(her2.sum()),
        total_cep17=int(cep17.sum()),
        mean_her2=mean_her2,
        mean_cep17=float(cep17.mean()),
        ratio=ratio,
        group=dual_probe_group(ratio, mean_her2),
        fraction_amplified=float(amplified.mean()),
        n_fields=n_fields,
    )


# --------------------------------------------------------------------------- public generators


def _check_grid(shape, n_z, spacing_um) -> _Grid:
    if len(tuple(shape)) != 2 or not all(
        isinstance(s, int | np.integer) and s >= 16 for s in shape
    ):
        raise ValueError(f"shape must be two integers >= 16 (Y, X), got {shape!r}")
    if n_z is not None and not (isinstance(n_z, int | np.integer) and n_z >= 1):
        raise ValueError(f"n_z must be None or a positive integer, got {n_z!r}")
    ndim = 2 if n_z is None else 3
    if spacing_um is None:
        spacing = (0.4, 0.1, 0.1)[-ndim:]
    elif isinstance(spacing_um, int | float):
        spacing = (0.4, float(spacing_um), float(spacing_um))[-ndim:]
    else:
        spacing = tuple(float(s) for s in spacing_um)
    if len(spacing) != ndim or not all(0 < s <= 5 for s in spacing):
        raise ValueError(
            f"spacing_um must be a size or {ndim} sizes in (0, 5] micrometres, got {spacing_um!r}"
        )
    full = (spacing[0] if ndim == 3 else 0.4, spacing[-2], spacing[-1])
    return _Grid((int(shape[0]), int(shape[1])), None if n_z is None else int(n_z), full)


def _camera(expected: np.ndarray, preset: CasePreset, noise: bool, rng) -> np.ndarray:
    """Photon shot noise (via the gain), read noise, offset, 12-bit clipping to uint16.

    Photo-electron counts ``Poisson(expected / gain)`` are exact below 20 expected
    electrons; above, shot and read noise are drawn together as one Gaussian with
    variance ``gain * expected + read_noise**2`` (Poisson skewness there is below 0.23),
    which is an order of magnitude faster.
    """
    offset = np.float32(100.0)
    if not noise:
        return np.clip(np.rint(expected + offset), 0, _MAX_ADU).astype(np.uint16)
    gain, read = np.float32(preset.gain), np.float32(preset.read_noise)
    signal = np.clip(expected, 0, None).astype(np.float32, copy=False)
    std = np.sqrt(signal * gain + read * read)
    adu = signal + std * rng.standard_normal(signal.shape, dtype=np.float32)
    low = signal < 20 * gain
    n_low = int(low.sum())
    if n_low:
        shot = rng.poisson(signal[low] / gain).astype(np.float32) * gain
        adu[low] = shot + read * rng.standard_normal(n_low, dtype=np.float32)
    return np.clip(np.rint(adu + offset), 0, _MAX_ADU).astype(np.uint16)


def _backgrounds(dapi_nuclei, body, grid, rng) -> dict[str, np.ndarray]:
    """Stroma and nuclear haze per channel, before illumination."""
    sx = grid.spacing[2]
    stroma = _smooth_field(grid.shape, 3.0 / sx, rng)
    texture = _smooth_field(grid.shape, 0.8 / sx, rng)
    tissue = np.clip(1.0 + 0.35 * stroma + 0.15 * texture, 0.2, None)
    ramp = _illumination(grid.shape, rng)
    out = {"dapi": dapi_nuclei + float(rng.uniform(25.0, 60.0)) * tissue}
    for channel in _CHANNELS:
        level = float(rng.uniform(30.0, 70.0)) * tissue * (ramp / ramp.mean()) ** 2
        out[channel] = level + float(rng.uniform(50.0, 110.0)) * body
    return out


def _bleed_coefficients(rng: np.random.Generator) -> tuple[float, float, float, float]:
    """(DAPI->HER2, DAPI->CEP17, HER2->CEP17, CEP17->HER2) bleed-through fractions."""
    values = (rng.uniform(0.01, 0.03), rng.uniform(0.005, 0.02), *rng.uniform(0.01, 0.04, 2))
    return tuple(float(v) for v in values)


def _bleed(images: dict[str, np.ndarray], coefficients) -> dict[str, np.ndarray]:
    """Channel bleed-through: DAPI into both probes, HER2 <-> CEP17."""
    d_h, d_c, h_c, c_h = coefficients
    return {
        "dapi": images["dapi"],
        "her2": images["her2"] + d_h * images["dapi"] + c_h * images["cep17"],
        "cep17": images["cep17"] + d_c * images["dapi"] + h_c * images["her2"],
    }


def make_field(
    preset: str | CasePreset = "group5",
    *,
    shape: tuple[int, int] = (1024, 1024),
    n_z: int | None = None,
    spacing_um: float | tuple[float, ...] | None = None,
    rng: int | np.random.Generator | None = None,
    name: str = "field",
    noise: bool = True,
) -> SyntheticField:
    """Generate one synthetic HER2/CEP17 FISH field with exact truth.

    Parameters
    ----------
    preset : str or CasePreset
        Case type, a key of :data:`PRESETS`.
    shape : tuple of int
        Lateral shape ``(Y, X)`` in pixels.
    n_z : int or None
        Number of z planes; None for a single 2D plane.
    spacing_um : float, tuple of float or None
        Pixel size in micrometres: a lateral size, ``(y, x)`` or ``(z, y, x)``.
        Default 0.1 um lateral and 0.4 um axial.
    rng : None, int or numpy.random.Generator
        Seed or generator; equal seeds give equal fields.
    name : str
        Field name (``image.name`` and the ``image`` column of the cell table).
    noise : bool
        False renders the expected image without shot and read noise (offset kept).

    Returns
    -------
    SyntheticField

    Raises
    ------
    ValueError
        If ``shape``, ``n_z``, ``spacing_um`` or ``preset`` are invalid.

    Notes
    -----
    Nuclei are placed in nests by random sequential adsorption with contact
    placement; a few are placed overlapping an earlier nucleus (drawn on top).
    Per-nucleus copy numbers are drawn with stratified sampling, so the realised
    case statistics stay close to the preset's design. Spots are pixel- (voxel-)
    integrated Gaussians with the preset's lateral sigma (0.12-0.16 um unless set) and
    axial sigma 2.5-3x lateral. The output is
    ``offset + gain * Poisson(expected / gain) + read noise`` clipped to 12 bits.

    Examples
    --------
    >>> f = make_field("group1", shape=(96, 96), rng=3)
    >>> set(f.spots["channel"]) <= {"her2", "cep17"}, f.nuclei.dtype
    (True, dtype('int32'))
    """
    preset = get_preset(preset)
    grid = _check_grid(shape, n_z, spacing_um)
    rng = np.random.default_rng(rng)
    nuclei, occupancy = _layout_nuclei(preset, grid, rng)
    labels, visible = _label_image(occupancy, nuclei, grid)
    _assign_populations(visible, preset, grid, rng)
    dapi_nuclei, body = _render_nuclei(nuclei, grid, rng)
    sigma_um = rng.uniform(*preset.spot_sigma_um)
    records = _SignalRecords()
    _nuclear_signals(
        visible, _copy_numbers(visible, preset, rng), preset, grid, sigma_um, records, rng
    )
    n_inside = len(records.rows)
    _outside_signals(
        visible, labels, rng.binomial(n_inside, preset.outside_fraction), grid, rng, records
    )
    spots = _spot_table(records, labels)
    images, debris, debris_light = _compose(spots, dapi_nuclei, body, preset, grid, sigma_um, rng)
    image = FishImage(
        *(_camera(images[c], preset, noise, rng) for c in ("dapi", "her2", "cep17")),
        spacing_um=grid.spacing if grid.n_z else grid.spacing[1:],
        name=name,
        metadata={
            "generator": "ishcount.synthetic",
            "generator_version": GENERATOR_VERSION,
            "preset": preset.name,
        },
    )
    cells = _cell_table(labels, visible, spots, grid, preset, name, debris_light)
    return SyntheticField(image, labels, spots[list(TRUTH_SPOT_SCHEMA)], cells, debris)


def _compose(
    spots, dapi_nuclei, body, preset, grid, sigma_um, rng
) -> tuple[dict[str, np.ndarray], pd.DataFrame, np.ndarray]:
    """Expected (noise-free) channel images; fills the spot table's rendered columns.

    Also returns the debris table and the debris's light in the probe channels before
    illumination, projected over z (what hides or imitates a signal; compared with the
    preset's signal peak, illumination cancels out).
    """
    _, sy, sx = grid.spacing
    illumination = _illumination(grid.shape, rng)
    debris, debris_table = _debris(grid, preset, rng)
    base = _backgrounds(dapi_nuclei, body, grid, rng)
    base = {c: (base[c] + debris[c]) * illumination for c in base}
    coefficients = _bleed_coefficients(rng)
    bled = _bleed(base, coefficients)
    noise_std = {c: np.sqrt(preset.gain * bled[c] + preset.read_noise**2) for c in _CHANNELS}
    amplitude, snr = _spot_amplitudes(
        spots, preset, illumination, noise_std, rng.uniform(0.8, 1.2), rng
    )
    sigma_lat_um = sigma_um * rng.uniform(0.95, 1.08, len(spots))
    sigma_z_um = sigma_lat_um * rng.uniform(2.5, 3.0, len(spots))
    spots["amplitude"], spots["snr"] = amplitude, snr
    spots["is_weak"] = snr < WEAK_SNR
    spots["sigma"] = sigma_lat_um / sx
    spots["sigma_z"] = 0.0 if grid.n_z is None else sigma_z_um / grid.spacing[0]
    spots["spot_id"] = np.arange(1, len(spots) + 1)
    for channel in _CHANNELS:
        sel = (spots["channel"] == channel).to_numpy()
        axes = ["y", "x"] if grid.n_z is None else ["z", "y", "x"]
        sigma = [sigma_lat_um[sel] / sy, sigma_lat_um[sel] / sx]
        if grid.n_z is not None:
            sigma.insert(0, sigma_z_um[sel] / grid.spacing[0])
        rendered = render_spots(
            grid.out_shape,
            spots.loc[sel, axes].to_numpy(float),
            amplitude[sel],
            np.column_stack(sigma),
        )
        base[channel] = base[channel] + rendered.astype(np.float32)
    probes = np.maximum(debris["her2"], debris["cep17"])
    debris_light = probes.max(axis=0) if probes.ndim == 3 else probes
    return _bleed(base, coefficients), debris_table, debris_light


def _field_rngs(rng, n_fields: int) -> tuple[int | None, list[np.random.Generator]]:
    """Recorded seed (None when a Generator was given) and one generator per field."""
    if isinstance(rng, np.random.Generator):
        return None, [np.random.default_rng(child) for child in rng.spawn(n_fields)]
    if rng is None:
        rng = int(np.random.SeedSequence().entropy % 2**63)
    if not isinstance(rng, int | np.integer) or rng < 0:
        raise TypeError(f"rng must be None, a non-negative int or a numpy Generator, got {rng!r}")
    children = np.random.SeedSequence(int(rng)).spawn(n_fields)
    return int(rng), [np.random.default_rng(child) for child in children]


def make_case(
    preset: str | CasePreset,
    *,
    n_fields: int = 2,
    shape: tuple[int, int] = (1024, 1024),
    n_z: int | None = None,
    spacing_um: float | tuple[float, ...] | None = None,
    rng: int | np.random.Generator | None = None,
    name: str | None = None,
    noise: bool = True,
) -> SyntheticCase:
    """Generate a case: several fields of one preset and the case truth over all of them.

    Parameters
    ----------
    preset : str or CasePreset
        Case type, a key of :data:`PRESETS`.
    n_fields : int
        Number of fields (separate tumour areas); at least 1.
    shape, n_z, spacing_um, noise
        As in :func:`make_field`.
    rng : None, int or numpy.random.Generator
        Seed or generator. An int (or None, which draws and records a fresh seed) is
        stored in ``SyntheticCase.seed``; each field gets its own child stream.
    name : str or None
        Case name; default ``"<preset>_s<seed>"``. Fields are ``"<name>_f01"``, ...

    Returns
    -------
    SyntheticCase

    Raises
    ------
    ValueError
        If ``n_fields`` is not a positive integer (or a field argument is invalid).
    TypeError
        If ``rng`` is of the wrong type.

    Examples
    --------
    >>> case = make_case("group5", n_fields=2, shape=(96, 96), rng=1)
    >>> len(case.fields), case.name, case.seed
    (2, 'group5_s1', 1)
    """
    preset = get_preset(preset)
    if not isinstance(n_fields, int | np.integer) or n_fields < 1:
        raise ValueError(f"n_fields must be a positive integer, got {n_fields!r}")
    seed, rngs = _field_rngs(rng, int(n_fields))
    if name is None:
        name = preset.name if seed is None else f"{preset.name}_s{seed}"
    fields = tuple(
        make_field(
            preset,
            shape=shape,
            n_z=n_z,
            spacing_um=spacing_um,
            rng=child,
            name=f"{name}_f{index + 1:02d}",
            noise=noise,
        )
        for index, child in enumerate(rngs)
    )
    truth = case_truth(pd.concat([f.cells for f in fields], ignore_index=True))
    return SyntheticCase(name=name, preset=preset.name, fields=fields, truth=truth, seed=seed)


# --------------------------------------------------------------------------- files and CLI


def _atomic_write(path: Path, write) -> Path:
    """Call ``write(tmp_path)`` on a temporary name in the same folder, then rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _ome_metadata(image: FishImage) -> dict[str, Any]:
    spacing = image.spacing_um
    meta: dict[str, Any] = {
        "axes": "CYX" if image.ndim == 2 else "CZYX",
        "Channel": {"Name": list(OME_CHANNEL_NAMES)},
        "PhysicalSizeY": spacing[-2],
        "PhysicalSizeYUnit": "µm",
        "PhysicalSizeX": spacing[-1],
        "PhysicalSizeXUnit": "µm",
    }
    if image.ndim == 3:
        meta["PhysicalSizeZ"] = spacing[0]
        meta["PhysicalSizeZUnit"] = "µm"
    return meta


def write_case(case: SyntheticCase, directory: str | os.PathLike) -> list[Path]:
    """Write a case: per field an OME-TIFF and truth files, plus one ``truth.json``.

    Parameters
    ----------
    case : SyntheticCase
        From :func:`make_case`.
    directory : str or path-like
        Output folder (created if needed); existing files of the same names are replaced.

    Returns
    -------
    list of pathlib.Path
        Per field ``<field>.ome.tif`` (uint16, axes CYX or CZYX, channels DAPI/HER2/CEP17,
        physical pixel sizes in micrometres, zlib with horizontal predictor),
        ``<field>.truth_nuclei.tif`` (int32), ``<field>.truth_spots.csv`` and
        ``<field>.truth_cells.csv``, ``<field>.truth_debris.csv`` (when the field has a
        debris table); then ``truth.json``.

    Raises
    ------
    TypeError
        If ``case`` is not a SyntheticCase.

    Notes
    -----
    Every file is written under a temporary name in the same folder and renamed with
    :func:`os.replace`, so a reader never sees a half-written file.

    Examples
    --------
    >>> import tempfile
    >>> case = make_case("group5", shape=(64, 64), rng=0)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     [p.name for p in write_case(case, tmp)][-1]
    'truth.json'
    """
    import tifffile

    if not isinstance(case, SyntheticCase):
        raise TypeError(f"case must be a SyntheticCase, got {type(case).__name__}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for field in case.fields:
        written.extend(_write_field(field, out, tifffile))
    written.append(
        _atomic_write(
            out / "truth.json",
            lambda p: p.write_text(
                json.dumps(_truth_document(case), indent=2) + "\n", encoding="utf-8"
            ),
        )
    )
    return written


def _write_field(field: SyntheticField, out: Path, tifffile) -> list[Path]:
    """Write one field's OME-TIFF and its truth files atomically."""
    options = {"photometric": "minisblack", "compression": "zlib", "predictor": True}
    image = field.image
    data = np.stack([image.dapi, image.her2, image.cep17])
    metadata = _ome_metadata(image)
    stem = image.name
    # The file's OME identifier comes from its name and pixels, so the same seed writes
    # the same bytes (tifffile would draw a new UUID per write).
    digest = hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()
    metadata["UUID"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ishcount.synthetic/{stem}/{digest}"))

    def write_image(path: Path) -> None:
        tifffile.imwrite(path, data, ome=True, metadata=metadata, **options)

    def write_labels(path: Path) -> None:
        tifffile.imwrite(path, field.nuclei, **options)

    return [
        _atomic_write(out / f"{stem}.ome.tif", write_image),
        _atomic_write(out / f"{stem}.truth_nuclei.tif", write_labels),
        _atomic_write(
            out / f"{stem}.truth_spots.csv",
            lambda p: field.spots.to_csv(p, index=False, float_format="%.7g"),
        ),
        _atomic_write(
            out / f"{stem}.truth_cells.csv",
            lambda p: field.cells.to_csv(p, index=False, float_format="%.7g"),
        ),
        *(
            []
            if field.debris is None
            else [
                _atomic_write(
                    out / f"{stem}.truth_debris.csv",
                    lambda p: field.debris.to_csv(p, index=False, float_format="%.7g"),
                )
            ]
        ),
    ]


def _truth_document(case: SyntheticCase) -> dict[str, Any]:
    from ishcount import __version__

    first = case.fields[0].image
    return {
        "case": case.name,
        "preset": case.preset,
        "seed": case.seed,
        "generator": "ishcount.synthetic",
        "generator_version": GENERATOR_VERSION,
        "ishcount_version": __version__,
        "fields": [f.image.name for f in case.fields],
        "shape": list(first.shape),
        "spacing_um": list(first.spacing_um),
        "truth": case.truth.to_dict(),
    }


def describe_case(case: SyntheticCase) -> str:
    """One short text summary of a case and its truth (no pictures).

    Parameters
    ----------
    case : SyntheticCase

    Returns
    -------
    str
        Several lines: nuclei, scorable nuclei, spots per channel, clusters, split
        signals, truth means, ratio and group.

    Examples
    --------
    >>> print(describe_case(make_case("group5", shape=(64, 64), rng=0)).splitlines()[0])
    case group5_s0 (preset group5, seed 0): 2 field(s)
    """
    spots = pd.concat([f.spots for f in case.fields], ignore_index=True)
    cells = pd.concat([f.cells for f in case.fields], ignore_index=True)
    t = case.truth
    per_channel = spots.groupby("channel")["spot_id"].count().to_dict()
    group = "-" if t.group is None else str(t.group)
    clusters = spots.loc[spots["cluster_id"] >= 0, "cluster_id"].nunique()
    splits = spots.loc[spots["is_split"], "signal_id"].nunique()
    lines = [
        f"case {case.name} (preset {case.preset}, seed {case.seed}): {len(case.fields)} field(s)",
        f"nuclei {len(cells)}, scorable {t.n_nuclei}, overlapping {int(cells['overlaps'].sum())},"
        f" on border {int(cells['touches_border'].sum())},"
        f" under debris {int(cells['is_obscured'].sum())}",
        f"spots her2 {per_channel.get('her2', 0)}, cep17 {per_channel.get('cep17', 0)},"
        f" clusters {clusters}, split signals {splits}, weak spots {int(spots['is_weak'].sum())},"
        f" outside nuclei {int((spots['label'] == 0).sum())}",
        f"truth: mean HER2 {t.mean_her2:.2f}, mean CEP17 {t.mean_cep17:.2f},"
        f" ratio {t.ratio:.2f}, group {group}, amplified nuclei {t.fraction_amplified:.0%}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write one synthetic case folder and print its summary.

    Parameters
    ----------
    argv : sequence of str or None
        Arguments (default ``sys.argv[1:]``): ``--preset NAME --out DIR [--fields N]
        [--size PIXELS] [--z PLANES] [--seed INT] [--pixel-size-um UM]``.

    Returns
    -------
    int
        Exit code, 0 on success.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     main(["--preset", "group5", "--out", tmp, "--size", "64"])  # doctest: +ELLIPSIS
    case group5_s0 ...
    0
    """
    parser = argparse.ArgumentParser(
        prog="ishcount synth", description="Write a synthetic HER2/CEP17 FISH case with truth."
    )
    parser.add_argument("--preset", default="group5", choices=sorted(PRESETS))
    parser.add_argument("--out", required=True, type=Path, help="output folder for the case")
    parser.add_argument("--fields", type=int, default=2, help="number of fields (default 2)")
    parser.add_argument("--size", type=int, default=1024, help="field size in pixels (square)")
    parser.add_argument("--z", type=int, default=None, help="number of z planes (default 2D)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pixel-size-um", type=float, default=None, help="lateral pixel size")
    args = parser.parse_args(argv)
    try:
        case = make_case(
            args.preset,
            n_fields=args.fields,
            shape=(args.size, args.size),
            n_z=args.z,
            spacing_um=args.pixel_size_um,
            rng=args.seed,
        )
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    write_case(case, args.out)
    print(describe_case(case))
    return 0


if __name__ == "__main__":
    sys.exit(main())
