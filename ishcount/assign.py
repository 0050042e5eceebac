"""Signals to nuclei: per-nucleus counts and which nuclei may be scored.

The kit and guideline counting rules decide which nuclei enter the case
result: only intact, non-overlapping nuclei with clear borders, inside the
invasive tumour area, with at least one signal of each colour (ASCO/CAP 2018;
Leica HER2 FISH System instructions for use). Each excluded nucleus carries
the first rule it failed, so a reviewer can see why.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from ishcount.tables import SPOT_SCHEMA, conform
>>> labels = np.zeros((40, 40), np.int32)
>>> labels[5:25, 5:25] = 1
>>> spots = conform(pd.DataFrame({
...     "spot_id": [0, 1, 2], "channel": ["her2", "her2", "cep17"],
...     "z": 0.0, "y": [10.0, 12.0, 30.0], "x": [10.0, 14.0, 30.0],
...     "amplitude": 1.0, "intensity": 1.0, "background": 0.0, "sigma": 1.0, "snr": 10.0,
...     "is_cluster": False, "copies": [1, 3, 1], "label": 0, "in_cytoplasm": False,
...     "saturated": False}),
...     SPOT_SCHEMA)
>>> assign_spots(spots, labels)["label"].tolist()
[1, 1, 0]
>>> cells = count_spots(assign_spots(spots, labels), labels, spacing_um=(0.5, 0.5),
...                     params=CountParams(min_area_um2=10))
>>> cells[["label", "n_her2", "n_cep17", "is_scored", "exclusion_reason"]].to_dict("records")
[{'label': 1, 'n_her2': 4, 'n_cep17': 0, 'is_scored': False, 'exclusion_reason': 'no CEP17 signal'}]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ishcount.image import max_projection
from ishcount.segment import downsample_mean, edge_labels
from ishcount.tables import CELL_SCHEMA, conform, empty_table

#: Exclusion reasons, in the order they are tested: a nucleus carries the first that applies.
OUTSIDE_ROI = "outside ROI"
TOUCHES_BORDER = "touches image edge"
TOUCHES_ROI_EDGE = "touches ROI edge"
TOO_SMALL = "too small"
TOO_LARGE = "too large"
IRREGULAR = "irregular shape"
OVERLAPPING = "overlapping nuclei"
DEBRIS = "autofluorescent debris"
NO_HER2 = "no HER2 signal"
NO_CEP17 = "no CEP17 signal"

#: Fewest nuclei in a field for its median nucleus to judge one as two merged nuclei.
MIN_NUCLEI_FOR_MEDIAN = 10


@dataclass(frozen=True)
class CountParams:
    """Which nuclei are scorable.

    Parameters
    ----------
    min_area_um2, max_area_um2 : float
        Projected nucleus area limits in square micrometres. Invasive breast carcinoma
        nuclei are roughly 6-20 um across (about 30-300 um^2).
    min_solidity : float
        Area / convex-hull area below which a nucleus is irregular (folded, fragmented,
        or two nuclei merged by segmentation).
    max_bright_fraction : float
        Largest fraction of a nucleus whose DAPI exceeds ``overlap_brightness`` times the
        nucleus median before it is judged to overlap another nucleus (overlapping
        nuclei add up their DAPI). Only used when DAPI is given.
    overlap_brightness : float
        See ``max_bright_fraction``.
    merged_area_ratio, merged_min_solidity : float
        A nucleus larger than ``merged_area_ratio`` times the median nucleus of its field
        and less solid than ``merged_min_solidity`` is two overlapping nuclei taken as one
        (their union is larger than one nucleus and notched where the outlines cross).
        Judged in fields of at least :data:`MIN_NUCLEI_FOR_MEDIAN` nuclei; ``inf`` turns
        it off.
    require_both_signals : bool
        Kit convention: score only nuclei with at least one HER2 and one CEP17 signal.
        Switch off for single-probe assays (the CEP17 rule is then skipped).
    """

    min_area_um2: float = 25.0
    max_area_um2: float = 400.0
    min_solidity: float = 0.85
    max_bright_fraction: float = 0.12
    overlap_brightness: float = 1.6
    merged_area_ratio: float = 1.5
    merged_min_solidity: float = 0.92
    require_both_signals: bool = True


def assign_spots(
    spots: pd.DataFrame,
    labels: np.ndarray,
    *,
    spacing_um: Sequence[float] | None = None,
    cytoplasm_margin_um: float = 3.0,
    edge_tolerance_um: float = 0.2,
) -> pd.DataFrame:
    """Return a copy of ``spots`` whose ``label`` is the nucleus under each signal.

    Parameters
    ----------
    spots : pandas.DataFrame
        Spot table (:data:`ishcount.tables.SPOT_SCHEMA`), coordinates in pixels of ``labels``.
    labels : ndarray of int, shape (Y, X)
        Nucleus labels; 0 is background. For z-stacks the labels are the 2D footprints and
        each signal is looked up at its ``(y, x)``.
    spacing_um : sequence of float, optional
        Pixel size of ``labels`` (``(y, x)``; a leading z is ignored); 0.1 um when None.
    cytoplasm_margin_um : float
        Signals outside every nucleus but at most this far from one lie over its
        cytoplasm (``in_cytoplasm``); signals further away lie over stroma or background.
    edge_tolerance_um : float
        A signal this close to a nucleus's outline belongs to it: half the 0.4 um grid on
        which :func:`ishcount.segment_nuclei` traces outlines.

    Returns
    -------
    pandas.DataFrame
        Same rows; ``label`` 0 for signals outside every nucleus or outside the image.

    Notes
    -----
    ``in_cytoplasm`` feeds the kit's quality rule "more than 10% of signals over
    cytoplasm": a sign of non-specific hybridisation. Signals far from every nucleus
    (debris, stroma) are not the cells' cytoplasm and do not count toward it.
    """
    labels = _check_labels(labels)
    out = spots.copy()
    if len(out) == 0:
        return out
    y = np.rint(out["y"].to_numpy()).astype(np.int64)
    x = np.rint(out["x"].to_numpy()).astype(np.int64)
    inside = (y >= 0) & (y < labels.shape[0]) & (x >= 0) & (x < labels.shape[1])
    found = np.zeros(len(out), dtype=np.int64)
    found[inside] = labels[y[inside], x[inside]]
    pixel_um = float(min(tuple(spacing_um)[-2:])) if spacing_um is not None else 0.1
    at_edge = _label_within(labels, y, x, inside & (found == 0), edge_tolerance_um / pixel_um)
    found[at_edge > 0] = at_edge[at_edge > 0]
    out["label"] = found
    distance = _distance_to_nuclei_um(labels, y, x, inside, pixel_um)
    out["in_cytoplasm"] = (found == 0) & (distance <= cytoplasm_margin_um)
    return out


def _label_within(
    labels: np.ndarray, y: np.ndarray, x: np.ndarray, which: np.ndarray, radius_px: float
) -> np.ndarray:
    """For the positions ``which``, the largest label within ``radius_px`` (0 if none)."""
    found = np.zeros(len(y), dtype=np.int64)
    r = int(np.floor(radius_px))
    if r < 1 or not which.any():
        return found
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = dy**2 + dx**2 <= radius_px**2
    yy = np.clip(y[which, None] + dy[keep], 0, labels.shape[0] - 1)
    xx = np.clip(x[which, None] + dx[keep], 0, labels.shape[1] - 1)
    found[which] = labels[yy, xx].max(axis=1)
    return found


def _distance_to_nuclei_um(
    labels: np.ndarray, y: np.ndarray, x: np.ndarray, inside: np.ndarray, pixel_um: float
) -> np.ndarray:
    """Distance from each position to the nearest nucleus, on a grid of about 0.4 um."""
    step = max(1, round(0.4 / pixel_um))
    background = labels[::step, ::step] == 0
    distance = np.full(len(y), np.inf)
    if background.all():
        return distance
    grid = ndi.distance_transform_edt(background) * step * pixel_um
    yi = np.clip(y[inside] // step, 0, grid.shape[0] - 1)
    xi = np.clip(x[inside] // step, 0, grid.shape[1] - 1)
    distance[inside] = grid[yi, xi]
    return distance


def count_spots(
    spots: pd.DataFrame,
    labels: np.ndarray,
    *,
    spacing_um: Sequence[float],
    image: str = "image",
    dapi: np.ndarray | None = None,
    roi: np.ndarray | None = None,
    obscured: Sequence[int] | np.ndarray | None = None,
    params: CountParams | None = None,
) -> pd.DataFrame:
    """Count HER2 and CEP17 copies per nucleus and decide which nuclei are scored.

    Parameters
    ----------
    spots : pandas.DataFrame
        Spot table with ``label`` already set (see :func:`assign_spots`); ``copies`` holds
        the estimated copies of each signal (clusters > 1).
    labels : ndarray of int, shape (Y, X)
        Nucleus labels.
    spacing_um : sequence of float
        Pixel size of ``labels`` in micrometres, ``(y, x)`` (a leading z size is ignored).
    image : str
        Field name written into the ``image`` column.
    dapi : ndarray, shape (Y, X) or (Z, Y, X), optional
        DAPI channel, used to recognise overlapping nuclei by their summed brightness.
        A z-stack is max-projected.
    roi : ndarray of bool, shape (Y, X), optional
        Region of interest (for example the invasive tumour a pathologist outlined).
        Nuclei with no pixel inside it are "outside ROI"; nuclei cut by its edge are
        "touches ROI edge".
    obscured : sequence of int, optional
        Labels of nuclei under autofluorescent debris (:func:`nuclei_near` of
        :func:`ishcount.spots.broadband_debris`): their signals cannot be counted, so
        they are "autofluorescent debris", as a person scoring by eye skips them.
    params : CountParams, optional
        Scorability rules; defaults to :class:`CountParams`.

    Returns
    -------
    pandas.DataFrame
        One row per nucleus (:data:`ishcount.tables.CELL_SCHEMA`), in label order.

    Notes
    -----
    Rules are tested in the order of the module-level reason constants and the
    first that applies is recorded. Signals with ``label`` 0 are counted for no
    nucleus; they remain in the spot table for the "signals over cytoplasm"
    quality flag.
    """
    labels = _check_labels(labels)
    params = params or CountParams()
    pixel_area = float(np.prod(tuple(spacing_um)[-2:]))
    area = _areas(labels)
    ids = np.flatnonzero(area)
    if ids.size == 0:
        return empty_table(CELL_SCHEMA)
    step = _step_for(area[ids])
    centroid_y, centroid_x = _centroids(labels, area, step)
    cells = pd.DataFrame(
        {
            "image": image,
            "label": ids.astype(np.int64),
            "centroid_y": centroid_y[ids],
            "centroid_x": centroid_x[ids],
            "area_um2": area[ids] * pixel_area,
        }
    )
    cells = cells.join(_signal_counts(spots, cells["label"]), on="label")
    cells["touches_border"] = np.isin(cells["label"], edge_labels(labels))
    cells["exclusion_reason"] = _exclusion_reasons(cells, labels, dapi, roi, obscured, params, step)
    cells["is_scored"] = cells["exclusion_reason"] == ""
    return conform(cells, CELL_SCHEMA)


def _areas(labels: np.ndarray) -> np.ndarray:
    """Pixel count of every label (index = label; index 0 set to 0)."""
    flat = labels.ravel()
    area = np.bincount(flat, minlength=int(flat.max()) + 1 if flat.size else 1)
    area = area.astype(np.float64)
    area[0] = 0.0
    return area


def _centroids(labels: np.ndarray, area: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Centroid of every label from the pixels on a grid of ``step`` (index = label).

    A grid of :func:`measuring_step` still holds hundreds of pixels of a nucleus, so the
    centroid is within a fraction of a pixel of the exact one at 1/step**2 of the cost.
    Labels that no grid pixel hits (smaller than a grid cell) are measured exactly.
    """
    grid = labels[::step, ::step]
    flat = grid.ravel()
    rows = np.repeat(np.arange(0, labels.shape[0], step, dtype=np.float64), grid.shape[1])
    cols = np.tile(np.arange(0, labels.shape[1], step, dtype=np.float64), grid.shape[0])
    hits = np.bincount(flat, minlength=area.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        centroid_y = np.bincount(flat, rows, minlength=area.size) / hits
        centroid_x = np.bincount(flat, cols, minlength=area.size) / hits
    missed = np.flatnonzero((hits == 0) & (area > 0))
    if missed.size:
        ys, xs = np.nonzero(np.isin(labels, missed))
        owners = labels[ys, xs]
        counts = np.bincount(owners, minlength=area.size)[missed]
        centroid_y[missed] = np.bincount(owners, ys, minlength=area.size)[missed] / counts
        centroid_x[missed] = np.bincount(owners, xs, minlength=area.size)[missed] / counts
    return centroid_y, centroid_x


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be a 2D integer array, got shape {labels.shape} and dtype {labels.dtype}"
        )
    return labels


def _signal_counts(spots: pd.DataFrame, label_ids: pd.Series) -> pd.DataFrame:
    inside = spots[spots["label"] > 0]
    her2 = inside[inside["channel"] == "her2"]
    cep17 = inside[inside["channel"] == "cep17"]
    counts = pd.DataFrame(
        {
            "n_her2": her2.groupby("label")["copies"].sum(),
            "n_cep17": cep17.groupby("label")["copies"].sum(),
            "n_her2_clusters": her2.groupby("label")["is_cluster"].sum(),
        }
    )
    return counts.reindex(label_ids.to_numpy()).fillna(0).astype(np.int64)


def _exclusion_reasons(
    cells: pd.DataFrame,
    labels: np.ndarray,
    dapi: np.ndarray | None,
    roi: np.ndarray | None,
    obscured: Sequence[int] | np.ndarray | None,
    params: CountParams,
    step: int,
) -> np.ndarray:
    ids = cells["label"].to_numpy()
    rules: list[tuple[str, np.ndarray]] = []
    if roi is not None:
        inside, cut = _roi_membership(labels, roi, ids)
        rules.append((OUTSIDE_ROI, ~inside))
    rules.append((TOUCHES_BORDER, cells["touches_border"].to_numpy()))
    if roi is not None:
        rules.append((TOUCHES_ROI_EDGE, cut))
    area = cells["area_um2"].to_numpy()
    rules.append((TOO_SMALL, area < params.min_area_um2))
    rules.append((TOO_LARGE, area > params.max_area_um2))
    solidity = nucleus_solidity(labels, ids, step=step)
    rules.append((IRREGULAR, solidity < params.min_solidity))
    overlapping = np.zeros(len(ids), dtype=bool)
    if len(ids) >= MIN_NUCLEI_FOR_MEDIAN:
        large = area > params.merged_area_ratio * np.median(area)
        overlapping |= large & (solidity < params.merged_min_solidity)
    if dapi is not None:
        bright = bright_fraction(labels, dapi, ids, params.overlap_brightness, step=step)
        overlapping |= bright > params.max_bright_fraction
    rules.append((OVERLAPPING, overlapping))
    if obscured is not None:
        rules.append((DEBRIS, np.isin(ids, np.asarray(obscured, dtype=np.int64))))
    rules.append((NO_HER2, cells["n_her2"].to_numpy() < 1))
    if params.require_both_signals:
        rules.append((NO_CEP17, cells["n_cep17"].to_numpy() < 1))
    reasons = np.full(len(ids), "", dtype=object)
    for reason, failed in reversed(rules):
        reasons[failed] = reason
    return reasons


def nuclei_near(labels: np.ndarray, positions: Any, radius_px: Any) -> np.ndarray:
    """Labels of the nuclei with a pixel within ``radius_px`` of any of ``positions``.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
        Nucleus labels; 0 is background.
    positions : array_like of float, shape (n, 2)
        ``(y, x)`` in pixels of ``labels``.
    radius_px : float or array_like of float, shape (n,)
        Reach of each position, pixels.

    Returns
    -------
    numpy.ndarray of int64
        Sorted unique labels (no 0).

    Examples
    --------
    >>> labels = np.zeros((20, 20), np.int32)
    >>> labels[2:8, 2:8], labels[12:18, 12:18] = 1, 2
    >>> nuclei_near(labels, [[10.0, 10.0]], 3.0).tolist(), nuclei_near(labels, [[4, 4]], 0).tolist()
    ([2], [1])
    """
    labels = _check_labels(labels)
    points = np.asarray(positions, dtype=float).reshape(-1, 2)
    radii = np.broadcast_to(np.asarray(radius_px, dtype=float), (len(points),))
    found: list[np.ndarray] = []
    for (y, x), radius in zip(points, radii, strict=True):
        if not (np.isfinite(y) and np.isfinite(x) and np.isfinite(radius)):
            continue
        lo = np.maximum(np.floor([y - radius, x - radius]).astype(int), 0)
        hi = np.minimum(np.ceil([y + radius, x + radius]).astype(int) + 1, labels.shape)
        if np.any(hi <= lo):
            continue
        yy, xx = np.ogrid[lo[0] : hi[0], lo[1] : hi[1]]
        disc = (yy - y) ** 2 + (xx - x) ** 2 <= max(radius, 0.5) ** 2
        found.append(labels[lo[0] : hi[0], lo[1] : hi[1]][disc])
    near = np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)
    return near[near > 0].astype(np.int64)


def _roi_membership(
    labels: np.ndarray, roi: np.ndarray, ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    roi = np.asarray(roi, dtype=bool)
    if roi.shape != labels.shape:
        raise ValueError(f"roi must have the labels' shape {labels.shape}, got {roi.shape}")
    size = int(labels.max()) + 1
    in_roi = np.bincount(labels[roi], minlength=size)[ids]
    total = np.bincount(labels.ravel(), minlength=size)[ids]
    return in_roi > 0, (in_roi > 0) & (in_roi < total)


def nucleus_solidity(
    labels: np.ndarray, ids: np.ndarray | None = None, *, step: int | None = None
) -> np.ndarray:
    """Area over convex-hull area for each nucleus.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
        Nucleus labels.
    ids : ndarray of int, optional
        Labels to report, in this order; default every label present, ascending.
    step : int, optional
        Subsampling step; default :func:`measuring_step` of ``labels``.

    Returns
    -------
    ndarray of float
        Solidity in (0, 1]; 1.0 for labels too small to measure.

    Notes
    -----
    Measured on labels subsampled by :func:`measuring_step` (solidity is scale-free). The
    convex hull of each object's pixel centres is the polygon through its outline pixels
    that lie furthest out in :data:`HULL_DIRECTIONS` evenly spaced directions, all objects
    at once. A nucleus some 20 pixels across at the measuring step has fewer hull vertices
    than directions, so the polygon is the hull itself, or a hair inside it. Pick's
    theorem converts the polygon to the pixels it covers, so both areas count pixels.

    Examples
    --------
    >>> labels = np.zeros((60, 60), np.int32)
    >>> labels[10:50, 10:50] = 1
    >>> labels[10:30, 10:30] = 0                # an L shape
    >>> float(np.round(nucleus_solidity(labels)[0], 2))
    0.8
    """
    ids = _label_ids(labels) if ids is None else np.asarray(ids)
    if ids.size == 0:
        return np.ones(0)
    step = step or measuring_step(labels)
    small = np.ascontiguousarray(labels[::step, ::step])
    size = int(labels.max()) + 1
    pixels = np.bincount(small.ravel(), minlength=size).astype(np.float64)
    hull_pixels = _hull_pixels(small, size)
    solidity = np.ones(size)
    measurable = np.isfinite(hull_pixels) & (pixels > 0)
    solidity[measurable] = np.minimum(1.0, pixels[measurable] / hull_pixels[measurable])
    return solidity[ids]


#: Directions of the support lines that bound each convex hull (see :func:`nucleus_solidity`).
HULL_DIRECTIONS = 64


def _outline_pixels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, label) of the labelled pixels with a 4-neighbour of another value."""
    padded = np.pad(labels, 1)
    core = padded[1:-1, 1:-1]
    edge = (
        (core != padded[:-2, 1:-1])
        | (core != padded[2:, 1:-1])
        | (core != padded[1:-1, :-2])
        | (core != padded[1:-1, 2:])
    ) & (core > 0)
    rows, cols = np.nonzero(edge)
    return rows, cols, labels[rows, cols]


def _hull_pixels(labels: np.ndarray, size: int) -> np.ndarray:
    """Pixels covered by the convex hull of each label's pixel centres (index = label).

    ``inf`` for labels absent or too thin to have an area (a line or a point).
    """
    rows, cols, owners = _outline_pixels(labels)
    hull = np.full(size, np.inf)
    if owners.size == 0:
        return hull
    # Row-major order within each label; only the ends of each row can be hull vertices.
    order = np.argsort(owners, kind="stable")
    owners, rows, cols = owners[order], rows[order], cols[order]
    run = owners.astype(np.int64) * labels.shape[0] + rows
    ends = np.r_[True, run[1:] != run[:-1]] | np.r_[run[:-1] != run[1:], True]
    owners, rows, cols = owners[ends], rows[ends], cols[ends]
    starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
    points = np.column_stack([rows, cols]).astype(np.float64)
    # Offset from the lattice directions so that no two pixels tie on a projection.
    angles = (np.arange(HULL_DIRECTIONS) + 0.3183) * (2 * np.pi / HULL_DIRECTIONS)
    projection = points @ np.stack([np.cos(angles), np.sin(angles)])  # (pixels, K)
    support = np.maximum.reduceat(projection, starts, axis=0)
    counts = np.diff(np.r_[starts, owners.size])
    is_extreme = projection == np.repeat(support, counts, axis=0)
    index = np.where(is_extreme, np.arange(owners.size)[:, None], -1)
    vertices = points[np.maximum.reduceat(index, starts, axis=0)]  # (n, K, 2), in hull order
    vy, vx = vertices[..., 0], vertices[..., 1]
    ny, nx = np.roll(vy, -1, axis=1), np.roll(vx, -1, axis=1)
    area = 0.5 * np.abs(np.sum(vy * nx - vx * ny, axis=1))
    perimeter = np.hypot(ny - vy, nx - vx).sum(axis=1)
    pixels = area + perimeter / 2.0 + 1.0  # Pick: the pixels a lattice polygon covers
    hull[owners[starts]] = np.where(area > 0, pixels, np.inf)
    return hull


def _label_ids(labels: np.ndarray) -> np.ndarray:
    present = np.unique(labels)
    return present[present > 0]


def measuring_step(labels: np.ndarray, target_px: float = 20.0) -> int:
    """Subsampling step at which the median nucleus is about ``target_px`` pixels across.

    Shape and brightness measures are computed at that step: they are scale-free, and
    full-resolution nuclei (often > 100 pixels across) cost far more for the same answer.

    Examples
    --------
    >>> labels = np.zeros((400, 400), np.int32)
    >>> labels[:100, :100] = 1
    >>> measuring_step(labels)
    5
    """
    return _step_for(np.bincount(labels.ravel())[1:], target_px)


def _step_for(pixel_counts: np.ndarray, target_px: float = 20.0) -> int:
    counts = pixel_counts[pixel_counts > 0]
    if counts.size == 0:
        return 1
    return max(1, int(np.sqrt(np.median(counts)) / target_px))


def bright_fraction(
    labels: np.ndarray,
    dapi: np.ndarray,
    ids: np.ndarray,
    factor: float,
    *,
    step: int | None = None,
) -> np.ndarray:
    """Fraction of each nucleus brighter than ``factor`` times its median DAPI.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
        Nucleus labels.
    dapi : ndarray, shape (Y, X) or (Z, Y, X)
        DAPI intensities (a z-stack is max-projected).
    ids : ndarray of int
        Labels to report, in this order.
    factor : float
        Brightness multiple of the nucleus median that counts as "bright".
    step : int, optional
        Block size of the averaging; default :func:`measuring_step` of ``labels``.

    Returns
    -------
    ndarray of float
        Fraction of pixels in [0, 1] for each label in ``ids``.

    Notes
    -----
    Where two nuclei overlap in a section, their DAPI adds up, so part of the
    object is about twice as bright as the rest. Chromatin texture also varies,
    hence the image is block-averaged (:func:`measuring_step`) and smoothed
    first, and the fraction, not a single pixel, is thresholded.
    """
    dapi = max_projection(dapi)
    if dapi.shape != labels.shape:
        raise ValueError(f"dapi must have the labels' shape {labels.shape}, got {dapi.shape}")
    step = step or measuring_step(labels)
    height, width = (labels.shape[0] // step) * step, (labels.shape[1] // step) * step
    small = downsample_mean(dapi[:height, :width], (step, step))
    small_labels = labels[:height:step, :width:step]
    smooth = ndi.uniform_filter(small, size=max(3, 5 // step))
    fg = small_labels > 0
    values, owners = smooth[fg].astype(np.float64), small_labels[fg]
    size = int(labels.max()) + 1
    n_total = np.bincount(owners, minlength=size)
    if values.size == 0:
        return np.zeros(len(ids))
    # One sort of "label + brightness scaled into [0, 1)" orders the pixels by label, then
    # by brightness within each label: the middle pixel of each run is its median.
    rank = (values - values.min()) / (np.ptp(values) + 1.0)
    order = np.argsort(owners + rank)
    starts = np.concatenate([[0], np.cumsum(n_total)[:-1]])
    medians = values[order][np.minimum(starts + n_total // 2, len(values) - 1)]
    threshold = np.where(n_total > 0, factor * medians, np.inf)
    n_bright = np.bincount(owners[values > threshold[owners]], minlength=size)
    n_bright, n_total = n_bright[ids], n_total[ids]
    return n_bright / np.maximum(n_total, 1)
