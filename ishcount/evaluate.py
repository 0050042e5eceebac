"""Accuracy against ground truth: spots, per-nucleus counts, nuclei and case results.

Every function takes arrays or tables and returns an immutable record (a frozen
dataclass with a ``to_dict()``), in the manner of stardist's ``matching.py``.

Conventions shared by all records
---------------------------------
- ``precision = tp / n_pred`` and ``recall = tp / n_true``; a ratio whose
  denominator is zero is **NaN** (undefined), never silently 0 or 1. So an
  empty prediction has NaN precision and, when there is truth, recall 0.0.
- ``f1 = 2 tp / (n_true + n_pred)`` (equal to ``2 P R / (P + R)``); NaN only
  when both sets are empty. With truth but no prediction (or the reverse) it is 0.0.
- Errors are ``predicted - truth`` (positive = over-count / over-estimate).
- Matching is one-to-one and optimal: the largest possible number of pairs,
  and among those the smallest total cost (distance, or ``1 - IoU``).

References
----------
.. [1] Schmidt U, Weigert M, Broaddus C, Myers G. Cell detection with star-convex
   polygons. MICCAI 2018 (stardist ``matching.py``: matching at an IoU threshold).
.. [2] Caicedo JC et al. Nucleus segmentation across imaging experiments: the 2018
   Data Science Bowl. Nat Methods 2019;16:1247-1253 (``tp / (tp + fp + fn)``).
.. [3] Kirillov A et al. Panoptic segmentation. CVPR 2019 (panoptic quality).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ishcount.rules import dual_probe_group

__all__ = [
    "CaseAccuracy",
    "ClusterCopies",
    "CountAccuracy",
    "PointMatch",
    "SegmentationAccuracy",
    "SpotAccuracy",
    "case_errors",
    "count_errors",
    "evaluate_spots",
    "match_labels",
    "match_points",
]

_AXES = ("z", "y", "x")

# --------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, or NaN when the denominator is zero."""
    return float(numerator) / float(denominator) if denominator else math.nan


@dataclass(frozen=True)
class PointMatch:
    """One-to-one matching of true and predicted points within a distance.

    Attributes
    ----------
    max_distance : float
        Largest distance of a match, in the units of the scaled coordinates.
    n_true, n_pred : int
        Number of true and of predicted points.
    tp, fp, fn : int
        Matched pairs, unmatched predictions, unmatched truths.
    precision, recall, f1 : float
        See the module conventions (NaN when undefined).
    mean_error, median_error : float
        Mean and median distance of the matched pairs (localisation error), in the
        units of the scaled coordinates; NaN when ``tp == 0``.
    pairs : tuple of (int, int)
        ``(true_index, pred_index)`` of each match, sorted by ``true_index``.
    distances : tuple of float
        Distance of each pair, in the order of ``pairs``.
    """

    max_distance: float
    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    mean_error: float
    median_error: float
    pairs: tuple[tuple[int, int], ...] = field(repr=False)
    distances: tuple[float, ...] = field(repr=False)

    def to_dict(self, *, include_pairs: bool = False) -> dict[str, Any]:
        """Return the metrics as a plain dict (pairs and distances as lists if asked).

        Examples
        --------
        >>> sorted(match_points([[0, 0]], [[0, 1]], max_distance=2).to_dict())[:3]
        ['f1', 'fn', 'fp']
        """
        record = asdict(self)
        pairs, distances = record.pop("pairs"), record.pop("distances")
        if include_pairs:
            record["pairs"] = [list(pair) for pair in pairs]
            record["distances"] = list(distances)
        return record


def _point_match(
    n_true: int, n_pred: int, pairs: np.ndarray, distances: np.ndarray, max_distance: float
) -> PointMatch:
    """Build a :class:`PointMatch` from matched index pairs ``(k, 2)`` and their distances."""
    order = np.lexsort((pairs[:, 1], pairs[:, 0])) if len(pairs) else np.arange(0)
    pairs, distances = pairs[order], distances[order]
    tp = len(pairs)
    return PointMatch(
        max_distance=float(max_distance),
        n_true=int(n_true),
        n_pred=int(n_pred),
        tp=tp,
        fp=int(n_pred - tp),
        fn=int(n_true - tp),
        precision=_ratio(tp, n_pred),
        recall=_ratio(tp, n_true),
        f1=_ratio(2 * tp, n_true + n_pred),
        mean_error=float(np.mean(distances)) if tp else math.nan,
        median_error=float(np.median(distances)) if tp else math.nan,
        pairs=tuple(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist(), strict=True)),
        distances=tuple(distances.tolist()),
    )


@dataclass(frozen=True)
class CountAccuracy:
    """Agreement of paired counts (per nucleus, per cluster, ...).

    Attributes
    ----------
    n : int
        Number of compared pairs.
    mae : float
        Mean absolute error ``mean(|pred - true|)``.
    bias : float
        Mean signed error ``mean(pred - true)`` (positive = over-counting).
    rmse : float
        Root mean squared error.
    exact_match_rate : float
        Fraction of pairs with ``pred == true``.
    mean_relative_error : float
        ``mean(|pred - true| / true)`` over the pairs with ``true > 0``.
    n_relative : int
        Number of pairs entering ``mean_relative_error``.
    n_unpaired_true, n_unpaired_pred : int
        Keys present only in the truth / only in the prediction when counts are
        aligned by label; 0 for positionally aligned arrays.

    Every float is NaN when ``n == 0`` (``mean_relative_error`` when ``n_relative == 0``).
    """

    n: int
    mae: float
    bias: float
    rmse: float
    exact_match_rate: float
    mean_relative_error: float
    n_relative: int
    n_unpaired_true: int = 0
    n_unpaired_pred: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a plain dict.

        Examples
        --------
        >>> count_errors([2, 4], [2, 5]).to_dict()["mae"]
        0.5
        """
        return asdict(self)


@dataclass(frozen=True)
class ClusterCopies:
    """Copy-number comparison of one true cluster.

    Attributes
    ----------
    channel : str or None
        Channel of the cluster (None when the tables have no ``channel`` column).
    cluster_id : int
        The truth table's ``cluster_id``.
    true_copies : int
        True signals in the cluster (split halves sharing a ``signal_id`` count once).
    detected_copies : int
        Sum of ``copies`` of the detections assigned to the cluster.
    n_detections : int
        Number of detections assigned to the cluster.
    """

    channel: str | None
    cluster_id: int
    true_copies: int
    detected_copies: int
    n_detections: int


@dataclass(frozen=True)
class SpotAccuracy:
    """Spot detection accuracy, overall and split by isolated and clustered truth.

    Attributes
    ----------
    channel : str or None
        The channel evaluated, or None for all channels (pooled; never matched across channels).
    all : PointMatch
        Every true signal against every detection (a cluster detection matches one copy).
    isolated : PointMatch
        True signals with ``cluster_id == -1`` against the detections not assigned to a cluster.
    clustered : PointMatch
        True signals inside clusters against the detections assigned to a cluster.
    cluster_copies : CountAccuracy
        Per-cluster copy-count agreement (``true_copies`` vs ``detected_copies``).
    clusters : tuple of ClusterCopies
        One record per true cluster, sorted by channel and cluster id.

    Notes
    -----
    ``pairs`` of the three :class:`PointMatch` records index rows of the tables as
    passed (``iloc`` positions); a split truth signal is represented by its first row.
    """

    channel: str | None
    all: PointMatch
    isolated: PointMatch
    clustered: PointMatch
    cluster_copies: CountAccuracy
    clusters: tuple[ClusterCopies, ...]

    def cluster_table(self) -> pd.DataFrame:
        """Return the per-cluster comparison as a new table (one row per true cluster).

        Examples
        --------
        >>> truth = pd.DataFrame({"y": [5.0, 5.5], "x": [5.0, 5.5], "cluster_id": [3, 3]})
        >>> found = pd.DataFrame({"y": [5.2], "x": [5.2], "copies": [3]})
        >>> evaluate_spots(truth, found, max_distance=2).cluster_table()[
        ...     ["cluster_id", "true_copies", "detected_copies"]].values.tolist()
        [[3, 2, 3]]
        """
        columns = {"channel": "object", "cluster_id": "int64", "true_copies": "int64"}
        columns |= {"detected_copies": "int64", "n_detections": "int64"}
        rows = [asdict(cluster) for cluster in self.clusters]
        return pd.DataFrame(rows, columns=list(columns)).astype(columns)

    def to_dict(self, *, include_pairs: bool = False) -> dict[str, Any]:
        """Return the record as nested plain dicts (clusters as a list of dicts).

        Examples
        --------
        >>> truth = pd.DataFrame({"y": [1.0], "x": [1.0], "cluster_id": [-1]})
        >>> evaluate_spots(truth, truth, max_distance=1).to_dict()["isolated"]["f1"]
        1.0
        """
        return {
            "channel": self.channel,
            "all": self.all.to_dict(include_pairs=include_pairs),
            "isolated": self.isolated.to_dict(include_pairs=include_pairs),
            "clustered": self.clustered.to_dict(include_pairs=include_pairs),
            "cluster_copies": self.cluster_copies.to_dict(),
            "clusters": [asdict(cluster) for cluster in self.clusters],
        }


@dataclass(frozen=True)
class SegmentationAccuracy:
    """Object-level agreement of a predicted label image with a true one.

    Attributes
    ----------
    iou_threshold : float
        Smallest intersection-over-union of a match (inclusive).
    n_true, n_pred, tp, fp, fn : int
        Objects, matches, unmatched predictions, unmatched truths.
    precision, recall, f1 : float
        See the module conventions.
    average_precision : float
        ``tp / (tp + fp + fn)``, the Data Science Bowl 2018 score at this threshold [2]_.
    mean_matched_iou : float
        Mean IoU of the matches (NaN when ``tp == 0``).
    panoptic_quality : float
        ``sum(matched IoU) / (tp + fp / 2 + fn / 2)`` [3]_.
    n_merges : int
        Predicted objects that cover at least ``min_overlap_fraction`` of the area of each of
        two or more true objects (under-segmentation).
    n_splits : int
        True objects that contain at least ``min_overlap_fraction`` of the area of each of two
        or more predicted objects (over-segmentation).
    merged_labels : tuple of int
        The predicted labels counted in ``n_merges``.
    split_labels : tuple of int
        The true labels counted in ``n_splits``.
    matches : tuple of (int, int, float)
        ``(true_label, pred_label, iou)`` of each match, sorted by true label.
    """

    iou_threshold: float
    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    average_precision: float
    mean_matched_iou: float
    panoptic_quality: float
    n_merges: int
    n_splits: int
    merged_labels: tuple[int, ...]
    split_labels: tuple[int, ...]
    matches: tuple[tuple[int, int, float], ...] = field(repr=False)

    @property
    def mapping(self) -> dict[int, int]:
        """Matched true label -> predicted label (a new dict, for :func:`count_errors`)."""
        return {true: pred for true, pred, _ in self.matches}

    def to_dict(self, *, include_matches: bool = False) -> dict[str, Any]:
        """Return the metrics as a plain dict (labels as lists; matches if asked).

        Examples
        --------
        >>> labels = np.array([[1, 1, 0, 2]])
        >>> match_labels(labels, labels).to_dict()["f1"]
        1.0
        """
        record = asdict(self)
        matches = record.pop("matches")
        record["merged_labels"] = list(self.merged_labels)
        record["split_labels"] = list(self.split_labels)
        if include_matches:
            record["matches"] = [list(match) for match in matches]
        return record


@dataclass(frozen=True)
class CaseAccuracy:
    """Errors of one case's predicted result against its true result.

    For each quantity ``q`` in ``ratio``, ``mean_her2`` and ``mean_cep17`` there are
    ``q_true``, ``q_pred``, ``q_error`` (``pred - true``), ``q_abs_error`` (``|pred - true|``)
    and ``q_rel_error`` (``|pred - true| / true``, NaN when the truth is 0).
    ``group_true`` and ``group_pred`` are ASCO/CAP 2018 dual-probe groups (None when not
    determinable); ``group_agrees`` is True only when both are known and equal.
    """

    group_true: int | None
    group_pred: int | None
    group_agrees: bool
    ratio_true: float
    ratio_pred: float
    ratio_error: float
    ratio_abs_error: float
    ratio_rel_error: float
    mean_her2_true: float
    mean_her2_pred: float
    mean_her2_error: float
    mean_her2_abs_error: float
    mean_her2_rel_error: float
    mean_cep17_true: float
    mean_cep17_pred: float
    mean_cep17_error: float
    mean_cep17_abs_error: float
    mean_cep17_rel_error: float

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a plain dict.

        Examples
        --------
        >>> case = {"mean_her2": 4.0, "mean_cep17": 2.0, "ratio": 2.0}
        >>> case_errors(case, case).to_dict()["group_agrees"]
        True
        """
        return asdict(self)


# --------------------------------------------------------------------------------------
# Optimal one-to-one matching on a sparse bipartite graph
# --------------------------------------------------------------------------------------


def _optimal_matching(
    rows: np.ndarray, cols: np.ndarray, costs: np.ndarray, n_rows: int, n_cols: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximum-cardinality, then minimum-total-cost, one-to-one matching.

    Only the given edges ``(rows[k], cols[k])`` with ``costs[k] >= 0`` may be used. The
    graph is cut into connected components; a component with a single node on one side
    is solved by taking its cheapest edge (vectorised), the others by
    :func:`scipy.optimize.linear_sum_assignment` on a small dense matrix. Returns the
    matched rows, cols and costs.
    """
    if rows.size == 0:
        return rows, cols, costs
    adjacency = sparse.coo_matrix(
        (np.ones(rows.size), (rows, cols + n_rows)), shape=(n_rows + n_cols,) * 2
    )
    _, component = connected_components(adjacency, directed=False)
    edge_component = component[rows]
    rows_per_component = np.bincount(component[np.unique(rows)], minlength=component.max() + 1)
    cols_per_component = np.bincount(
        component[np.unique(cols) + n_rows], minlength=component.max() + 1
    )
    is_star = np.minimum(rows_per_component, cols_per_component)[edge_component] == 1
    # Stars: the cheapest edge of each component (ties broken by row, then col).
    order = np.lexsort((cols, rows, costs, edge_component))
    order = order[is_star[order]]
    first = np.ones(order.size, dtype=bool)
    first[1:] = np.diff(edge_component[order]) != 0
    chosen = [order[first]]
    # Components with two or more nodes on each side: dense assignment per component.
    order = np.flatnonzero(~is_star)
    order = order[np.argsort(edge_component[order], kind="stable")]
    starts = np.flatnonzero(np.r_[True, np.diff(edge_component[order]) != 0])
    for block in np.split(order, starts[1:]) if order.size else []:
        chosen.append(block[_assign_dense(rows[block], cols[block], costs[block])])
    chosen_edges = np.concatenate(chosen)
    return rows[chosen_edges], cols[chosen_edges], costs[chosen_edges]


def _assign_dense(rows: np.ndarray, cols: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Indices of the edges chosen by a cardinality-first dense assignment of one component."""
    row_ids, local_rows = np.unique(rows, return_inverse=True)
    col_ids, local_cols = np.unique(cols, return_inverse=True)
    # A bonus larger than any total cost makes one more pair always worth more than
    # any saving in cost, so the assignment has maximum cardinality first.
    bonus = (min(row_ids.size, col_ids.size) + 1) * (float(costs.max()) + 1.0)
    matrix = np.zeros((row_ids.size, col_ids.size))
    edge_index = np.full(matrix.shape, -1)
    matrix[local_rows, local_cols] = costs - bonus
    edge_index[local_rows, local_cols] = np.arange(rows.size)
    picked_rows, picked_cols = linear_sum_assignment(matrix)
    picked = edge_index[picked_rows, picked_cols]
    return picked[picked >= 0]


# --------------------------------------------------------------------------------------
# Points
# --------------------------------------------------------------------------------------


def _as_coordinates(coords: Any, name: str) -> np.ndarray:
    """Validate an ``(n, ndim)`` coordinate array; an empty sequence gives ``(0, 0)``."""
    array = np.asarray(coords, dtype=float)
    if array.size == 0:
        return array.reshape(0, array.shape[-1] if array.ndim == 2 else 0)
    if array.ndim != 2 or array.shape[1] not in (2, 3):
        raise ValueError(f"{name} must have shape (n, 2) or (n, 3), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must hold finite coordinates, got a NaN or infinite value")
    return array


def _check_positive(value: Any, name: str) -> float:
    """Return ``value`` as a float, or raise if it is not a finite positive number."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


def _check_spacing(spacing: Any, ndim: int) -> np.ndarray:
    """Return the per-axis scale factors (ones when ``spacing`` is None)."""
    if spacing is None:
        return np.ones(ndim)
    scale = np.asarray(spacing, dtype=float)
    if scale.shape != (ndim,) or not (np.isfinite(scale).all() and (scale > 0).all()):
        raise ValueError(
            f"spacing must hold {ndim} finite positive sizes, one per coordinate axis, "
            f"got {spacing!r}"
        )
    return scale


def _match_scaled(
    true_scaled: np.ndarray,
    pred_scaled: np.ndarray,
    max_distance: float,
    parts_scaled: np.ndarray | None = None,
    part_owner: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Matched ``(k, 2)`` index pairs and their distances for scaled coordinates.

    ``parts_scaled`` are further points of the true signals ``part_owner`` (the halves of
    a split signal): a detection's distance to a signal is that to its nearest point.
    """
    if len(true_scaled) == 0 or len(pred_scaled) == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    n_true = len(true_scaled)
    owner = np.arange(n_true)
    if parts_scaled is not None and len(parts_scaled):
        true_scaled = np.vstack([true_scaled, parts_scaled])
        owner = np.r_[owner, np.asarray(part_owner, dtype=np.int64)]
    near = cKDTree(true_scaled).sparse_distance_matrix(
        cKDTree(pred_scaled), max_distance, output_type="ndarray"
    )
    rows, cols, costs = owner[near["i"]].astype(np.int64), near["j"].astype(np.int64), near["v"]
    order = np.lexsort((costs, cols, rows))  # the nearest point of each signal first
    first = np.diff(rows[order], prepend=-1) != 0
    first |= np.diff(cols[order], prepend=-1) != 0
    order = order[first]
    rows, cols, distances = _optimal_matching(
        rows[order], cols[order], costs[order].astype(float), n_true, len(pred_scaled)
    )
    return np.column_stack([rows, cols]), distances


def match_points(
    true_coords: Any,
    pred_coords: Any,
    *,
    max_distance: float,
    spacing: Sequence[float] | None = None,
) -> PointMatch:
    """Match predicted points to true points one-to-one within ``max_distance``.

    Parameters
    ----------
    true_coords, pred_coords : array_like, shape (n, 2) or (n, 3)
        Coordinates in array order, ``(y, x)`` or ``(z, y, x)``, in pixels. Either may be
        empty.
    max_distance : float
        Largest distance of a match (inclusive), in the units of ``spacing`` (micrometres
        when ``spacing`` is the pixel size in micrometres; pixels when ``spacing`` is None).
    spacing : sequence of float, optional
        Size of a pixel along each axis; coordinates are multiplied by it before measuring
        distances, so anisotropic z-stacks are matched in physical space.

    Returns
    -------
    PointMatch
        Counts, precision, recall, F1, localisation error and the matched index pairs.

    Raises
    ------
    ValueError
        If the coordinates are not ``(n, 2)`` / ``(n, 3)``, differ in dimension or are not
        finite, or if ``max_distance`` or ``spacing`` is not positive.
    TypeError
        If ``max_distance`` is not a number.

    Notes
    -----
    Candidate pairs are found with a k-d tree, so only pairs closer than ``max_distance``
    are ever stored. The matching maximises the number of pairs and, among matchings of
    that size, minimises the summed distance; it is solved exactly per connected component
    of the candidate graph (:func:`scipy.optimize.linear_sum_assignment`), which keeps
    20 000 x 20 000 points well under a second when spots are sparse.

    Examples
    --------
    >>> m = match_points([[0, 0], [10, 10]], [[0, 1], [30, 30]], max_distance=2)
    >>> m.tp, m.fp, m.fn, m.precision, m.recall, m.pairs
    (1, 1, 1, 0.5, 0.5, ((0, 0),))
    >>> match_points([[0, 0, 0]], [[1, 0, 0]], max_distance=1, spacing=(2, 1, 1)).tp
    0
    """
    max_distance = _check_positive(max_distance, "max_distance")
    true_array = _as_coordinates(true_coords, "true_coords")
    pred_array = _as_coordinates(pred_coords, "pred_coords")
    ndims = {a.shape[1] for a in (true_array, pred_array) if a.shape[1] or len(a)}
    if len(ndims) > 1:
        raise ValueError(
            f"true_coords and pred_coords must have the same number of axes, got "
            f"{true_array.shape[1]} and {pred_array.shape[1]}"
        )
    ndim = ndims.pop() if ndims else (len(spacing) if spacing is not None else 2)
    scale = _check_spacing(spacing, ndim)
    true_array = true_array.reshape(-1, ndim) * scale
    pred_array = pred_array.reshape(-1, ndim) * scale
    pairs, distances = _match_scaled(true_array, pred_array, max_distance)
    return _point_match(len(true_array), len(pred_array), pairs, distances, max_distance)


# --------------------------------------------------------------------------------------
# Spot tables
# --------------------------------------------------------------------------------------


def _coordinate_columns(truth: pd.DataFrame, detected: pd.DataFrame, spacing: Any) -> list[str]:
    """Coordinate columns used for matching: ``z, y, x`` or ``y, x``."""
    if spacing is not None and len(spacing) not in (2, 3):
        raise ValueError(f"spacing must hold 2 (y, x) or 3 (z, y, x) sizes, got {spacing!r}")
    if spacing is not None:
        columns = list(_AXES[-len(spacing) :])
    else:
        has_z = "z" in truth.columns and "z" in detected.columns
        columns = list(_AXES if has_z else _AXES[1:])
    for name, table in (("truth_spots", truth), ("detected_spots", detected)):
        missing = [column for column in columns if column not in table.columns]
        if missing:
            raise ValueError(f"{name} is missing coordinate column(s) {missing}")
    return columns


def _truth_signals(truth: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per true signal: split halves sharing a ``signal_id`` averaged into one.

    Columns: ``row`` (first table row), ``channel``, ``cluster_id`` and the coordinates.
    The second table holds the halves of split signals (``row`` of their signal and the
    coordinates): a detection on either half has found that signal.
    """
    table = pd.DataFrame({column: truth[column].to_numpy(float) for column in columns})
    table["row"] = np.arange(len(truth))
    table["channel"] = truth["channel"].to_numpy() if "channel" in truth.columns else None
    if "cluster_id" in truth.columns:
        table["cluster_id"] = truth["cluster_id"].to_numpy().astype(np.int64)
    else:
        table["cluster_id"] = -1
    if "signal_id" not in truth.columns:
        return table, table.iloc[:0][["row", *columns]]
    if truth["signal_id"].isna().any():
        raise ValueError("truth_spots['signal_id'] must not contain missing values")
    table["signal_id"] = truth["signal_id"].to_numpy()
    grouped = table.groupby(["channel", "signal_id"], sort=False, dropna=False)
    aggregations = dict.fromkeys(columns, "mean") | {"row": "min", "cluster_id": "first"}
    signals = grouped.agg(aggregations).reset_index()
    signals = signals.sort_values("row", kind="stable").reset_index(drop=True)
    size = grouped["row"].transform("size").to_numpy()
    parts = table.loc[size > 1, columns].assign(row=grouped["row"].transform("min")[size > 1])
    return signals, parts[["row", *columns]].reset_index(drop=True)


def _detections(detected: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Detections with ``row``, ``channel``, ``copies`` (1 when absent) and coordinates."""
    table = pd.DataFrame({column: detected[column].to_numpy(float) for column in columns})
    table["row"] = np.arange(len(detected))
    table["channel"] = detected["channel"].to_numpy() if "channel" in detected.columns else None
    copies = detected["copies"].to_numpy() if "copies" in detected.columns else 1
    table["copies"] = np.asarray(copies, dtype=np.int64) * np.ones(len(detected), np.int64)
    return table


def _nearest_cluster(
    signals: pd.DataFrame, detections: pd.DataFrame, columns: list[str], scale, max_distance
) -> tuple[np.ndarray, list[int]]:
    """Assign each detection to a true cluster or not (-1), by its nearest truth anchor.

    Anchors are every true signal and every cluster's centroid. A detection belongs to a
    cluster when its nearest anchor within ``max_distance`` is a copy or the centroid of
    that cluster, or, with no anchor that near, when it lies within ``max_distance`` of
    the cluster's extent (the disc about its centroid reaching its farthest copy): a
    detection standing for a wide cluster sits at the centre of its light, which can be
    further than ``max_distance`` from every copy and from their centroid. Returns the
    cluster index per detection and the cluster ids.
    """
    clustered = signals[signals["cluster_id"] >= 0]
    cluster_ids, cluster_index = np.unique(clustered["cluster_id"].to_numpy(), return_inverse=True)
    centroids = clustered.groupby(cluster_index)[columns].mean().to_numpy()
    anchors = np.vstack([signals[columns].to_numpy(), centroids]) * scale
    anchor_cluster = np.full(len(signals), -1)
    anchor_cluster[(signals["cluster_id"] >= 0).to_numpy()] = cluster_index
    anchor_cluster = np.r_[anchor_cluster, np.arange(len(cluster_ids))]
    if len(detections) == 0 or len(anchors) == 0:
        return np.full(len(detections), -1), cluster_ids.tolist()
    bound = np.nextafter(max_distance, math.inf)  # query's bound is exclusive
    distance, nearest = cKDTree(anchors).query(
        detections[columns].to_numpy() * scale, distance_upper_bound=bound
    )
    found = np.isfinite(distance)
    owner = np.full(len(detections), -1)
    owner[found] = anchor_cluster[nearest[found]]
    if len(cluster_ids) and not found.all():
        from_centre = (clustered[columns].to_numpy() - centroids[cluster_index]) * scale
        reach = np.zeros(len(cluster_ids))
        np.maximum.at(reach, cluster_index, np.linalg.norm(from_centre, axis=1))
        owner[~found] = _within_extent(
            detections.loc[~found, columns].to_numpy() * scale,
            centroids * scale,
            reach + max_distance,
        )
    return owner, cluster_ids.tolist()


def _within_extent(points: np.ndarray, centres: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """Index of the nearest centre whose ``reach`` holds each point, or -1 (scaled units)."""
    k = min(len(centres), 8)
    distance, nearest = cKDTree(centres).query(points, k=k)
    distance, nearest = distance.reshape(len(points), k), nearest.reshape(len(points), k)
    inside = distance <= reach[nearest]
    first = inside.argmax(axis=1)
    return np.where(inside.any(axis=1), nearest[np.arange(len(points)), first], -1)


def _evaluate_channel(signals, halves, detections, columns, scale, max_distance, channel):
    """Matches (as global-row pairs) and cluster records of one channel's tables."""

    def match(truth_part: pd.DataFrame, detection_part: pd.DataFrame):
        local = pd.Series(np.arange(len(truth_part)), index=truth_part["row"].to_numpy())
        parts = halves[halves["row"].isin(local.index)]
        local_pairs, distances = _match_scaled(
            truth_part[columns].to_numpy() * scale,
            detection_part[columns].to_numpy() * scale,
            max_distance,
            parts[columns].to_numpy() * scale,
            local[parts["row"].to_numpy()].to_numpy(),
        )
        pairs = np.column_stack(
            [
                truth_part["row"].to_numpy()[local_pairs[:, 0]],
                detection_part["row"].to_numpy()[local_pairs[:, 1]],
            ]
        )
        return len(truth_part), len(detection_part), pairs, distances

    owner, cluster_ids = _nearest_cluster(signals, detections, columns, scale, max_distance)
    is_clustered = (signals["cluster_id"] >= 0).to_numpy()
    results = {
        "all": match(signals, detections),
        "isolated": match(signals[~is_clustered], detections[owner < 0]),
        "clustered": match(signals[is_clustered], detections[owner >= 0]),
    }
    true_copies = signals.loc[is_clustered, "cluster_id"].value_counts()
    copies = detections["copies"].to_numpy()
    clusters = [
        ClusterCopies(
            channel=channel,
            cluster_id=int(cluster_id),
            true_copies=int(true_copies[cluster_id]),
            detected_copies=int(copies[owner == index].sum()),
            n_detections=int((owner == index).sum()),
        )
        for index, cluster_id in enumerate(cluster_ids)
    ]
    return results, clusters


def evaluate_spots(
    truth_spots: pd.DataFrame,
    detected_spots: pd.DataFrame,
    *,
    max_distance: float,
    spacing: Sequence[float] | None = None,
    channel: str | None = None,
) -> SpotAccuracy:
    """Spot detection accuracy for isolated signals and for clusters.

    Parameters
    ----------
    truth_spots : pandas.DataFrame
        True signals: ``y, x`` (and ``z``) in pixels; optional ``channel``, ``cluster_id``
        (-1 = isolated; missing = all isolated) and ``signal_id`` (rows sharing one are the
        halves of a split signal and count as one signal: a detection within
        ``max_distance`` of their mean position or of either half matches it).
    detected_spots : pandas.DataFrame
        Detections in the :data:`ishcount.tables.SPOT_SCHEMA` layout; only the coordinates,
        ``channel`` and ``copies`` (1 when absent) are used.
    max_distance : float
        Largest distance of a match (inclusive), in the units of ``spacing`` (pixels if None).
    spacing : sequence of float, optional
        Pixel size per axis: 2 values match on ``(y, x)``, 3 on ``(z, y, x)``. When None,
        ``z`` is used if both tables have it.
    channel : str, optional
        Evaluate only rows of this channel. When None and both tables have a ``channel``
        column, each channel is matched separately and the results are pooled.

    Returns
    -------
    SpotAccuracy
        ``all``, ``isolated`` and ``clustered`` point matches plus per-cluster copy counts.

    Raises
    ------
    TypeError
        If a table is not a DataFrame or ``max_distance`` is not a number.
    ValueError
        If a coordinate or the ``channel`` column is missing, ``signal_id`` has missing
        values, or ``max_distance`` / ``spacing`` are not positive.

    Notes
    -----
    A detection is *assigned to a cluster* when the nearest truth anchor within
    ``max_distance`` (an anchor is any true signal or the centroid of a cluster) belongs to
    that cluster. ``isolated`` matches the isolated truth against the detections not
    assigned to any cluster (the others are neither false positives nor matches there);
    ``clustered`` matches clustered truth against the assigned detections. Because a cluster
    detection stands for several copies, ``cluster_copies`` compares each cluster's true
    copy number with the summed ``copies`` of its assigned detections, which is the fairer
    figure for clusters. ``all`` ignores clusters and ``copies`` altogether.

    Examples
    --------
    >>> truth = pd.DataFrame({"y": [10.0, 40, 41, 40], "x": [10.0, 40, 40, 41],
    ...                       "cluster_id": [-1, 7, 7, 7]})
    >>> found = pd.DataFrame({"y": [10.5, 40.3, 80], "x": [10.0, 40.3, 80],
    ...                       "copies": [1, 4, 1]})
    >>> acc = evaluate_spots(truth, found, max_distance=2)
    >>> acc.isolated.tp, acc.isolated.fp, acc.clustered.tp, acc.clustered.fn
    (1, 1, 1, 2)
    >>> acc.clusters[0].true_copies, acc.clusters[0].detected_copies
    (3, 4)
    """
    for name, table in (("truth_spots", truth_spots), ("detected_spots", detected_spots)):
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"{name} must be a pandas DataFrame, got {type(table).__name__}")
    max_distance = _check_positive(max_distance, "max_distance")
    columns = _coordinate_columns(truth_spots, detected_spots, spacing)
    scale = _check_spacing(spacing, len(columns))
    signals, halves = _truth_signals(truth_spots, columns)
    detections = _detections(detected_spots, columns)
    if channel is not None:
        for name, table in (("truth_spots", truth_spots), ("detected_spots", detected_spots)):
            if "channel" not in table.columns:
                raise ValueError(f"channel={channel!r} given but {name} has no 'channel' column")
        signals = signals[signals["channel"] == channel]
        detections = detections[detections["channel"] == channel]
    channels = pd.unique(pd.concat([signals["channel"], detections["channel"]]))
    pooled: dict[str, list] = {"all": [], "isolated": [], "clustered": []}
    clusters: list[ClusterCopies] = []
    for name in sorted(channels, key=str) if len(channels) else [channel]:
        parts = _evaluate_channel(
            signals[signals["channel"].isna() if name is None else signals["channel"] == name],
            halves,
            detections[
                detections["channel"].isna() if name is None else detections["channel"] == name
            ],
            columns,
            scale,
            max_distance,
            name,
        )
        for key, value in parts[0].items():
            pooled[key].append(value)
        clusters.extend(parts[1])
    matches = {key: _pool(parts, max_distance) for key, parts in pooled.items()}
    return SpotAccuracy(
        channel=channel,
        cluster_copies=count_errors(
            [cluster.true_copies for cluster in clusters],
            [cluster.detected_copies for cluster in clusters],
        ),
        clusters=tuple(clusters),
        **matches,
    )


def _pool(parts: list, max_distance: float) -> PointMatch:
    """Pool per-channel ``(n_true, n_pred, pairs, distances)`` into one PointMatch."""
    pairs = [part[2] for part in parts] or [np.zeros((0, 2), np.int64)]
    distances = [part[3] for part in parts] or [np.zeros(0)]
    return _point_match(
        sum(part[0] for part in parts),
        sum(part[1] for part in parts),
        np.concatenate(pairs).astype(np.int64).reshape(-1, 2),
        np.concatenate(distances),
        max_distance,
    )


# --------------------------------------------------------------------------------------
# Counts
# --------------------------------------------------------------------------------------


def _as_counts(values: Any, name: str) -> np.ndarray:
    """Validate a 1D array of finite real counts."""
    if isinstance(values, str):
        raise TypeError(f"{name} must hold numbers, got a string {values!r}")
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must hold numbers, got {values!r}") from error
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must hold finite numbers, got {values!r}")
    return array


def _align_counts(true_counts: Any, pred_counts: Any, mapping: Mapping | None):
    """Return paired true and predicted values and the unpaired key counts."""
    keyed = [isinstance(c, Mapping | pd.Series) for c in (true_counts, pred_counts)]
    if mapping is not None and not all(keyed):
        raise TypeError(
            "with a mapping, true_counts and pred_counts must be mappings or Series keyed by "
            f"label, got {type(true_counts).__name__} and {type(pred_counts).__name__}"
        )
    if not any(keyed):
        true_array = _as_counts(true_counts, "true_counts")
        pred_array = _as_counts(pred_counts, "pred_counts")
        if true_array.shape != pred_array.shape:
            raise ValueError(
                f"true_counts and pred_counts must have the same length, got "
                f"{true_array.size} and {pred_array.size}"
            )
        return true_array, pred_array, 0, 0
    if not all(keyed):
        raise TypeError("true_counts and pred_counts must both be keyed by label or both not")
    true_map, pred_map = dict(true_counts.items()), dict(pred_counts.items())
    if mapping is None:
        mapping = {key: key for key in true_map if key in pred_map}
    for true_key, pred_key in mapping.items():
        if true_key not in true_map or pred_key not in pred_map:
            raise ValueError(f"mapping pair {true_key!r} -> {pred_key!r} has no count")
    true_values = _as_counts([true_map[key] for key in mapping], "true_counts")
    pred_values = _as_counts([pred_map[key] for key in mapping.values()], "pred_counts")
    unpaired_true = len(set(true_map) - set(mapping))
    unpaired_pred = len(set(pred_map) - set(mapping.values()))
    return true_values, pred_values, unpaired_true, unpaired_pred


def count_errors(
    true_counts: Any, pred_counts: Any, *, mapping: Mapping[Any, Any] | None = None
) -> CountAccuracy:
    """Errors of predicted counts (per nucleus, per cluster, ...) against true counts.

    Parameters
    ----------
    true_counts, pred_counts : array_like, mapping or pandas.Series
        Either two sequences of the same length, paired by position, or two mappings /
        Series keyed by label, paired by equal keys (or through ``mapping``).
    mapping : mapping, optional
        True key -> predicted key, for example :attr:`SegmentationAccuracy.mapping`; only
        these pairs are compared.

    Returns
    -------
    CountAccuracy
        ``n``, MAE, bias, RMSE, exact-match rate and mean relative error.

    Raises
    ------
    TypeError
        If the counts are not numeric, or are keyed and not keyed in a mixed way.
    ValueError
        If positional counts differ in length, are not finite or not 1D, or a mapping pair
        has no count.

    Examples
    --------
    >>> acc = count_errors([4, 2, 2, 0], [2, 3, 3, 0])
    >>> acc.n, acc.mae, acc.bias, acc.exact_match_rate, acc.mean_relative_error
    (4, 1.0, 0.0, 0.25, 0.5)
    >>> count_errors({1: 2, 2: 5}, {10: 2, 20: 4}, mapping={1: 10, 2: 20}).bias
    -0.5
    """
    truth, pred, unpaired_true, unpaired_pred = _align_counts(true_counts, pred_counts, mapping)
    error = pred - truth
    positive = truth > 0
    relative = np.abs(error[positive]) / truth[positive]
    n = int(truth.size)
    return CountAccuracy(
        n=n,
        mae=float(np.mean(np.abs(error))) if n else math.nan,
        bias=float(np.mean(error)) if n else math.nan,
        rmse=float(np.sqrt(np.mean(error**2))) if n else math.nan,
        exact_match_rate=float(np.mean(np.isclose(error, 0, rtol=0, atol=1e-9))) if n else math.nan,
        mean_relative_error=float(np.mean(relative)) if relative.size else math.nan,
        n_relative=int(positive.sum()),
        n_unpaired_true=unpaired_true,
        n_unpaired_pred=unpaired_pred,
    )


# --------------------------------------------------------------------------------------
# Label images
# --------------------------------------------------------------------------------------


def _check_labels(labels: Any, name: str) -> np.ndarray:
    """Validate a non-negative integer label image."""
    array = np.asarray(labels)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must be an integer label image, got dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise ValueError(f"{name} must hold non-negative labels, got minimum {array.min()}")
    return array.ravel()


def _overlaps(true_labels: np.ndarray, pred_labels: np.ndarray):
    """Non-zero overlaps ``(true_label, pred_label, pixels)`` in one vectorised pass."""
    true_ids = pred_ids = None
    n_true = int(true_labels.max(initial=0)) + 1
    n_pred = int(pred_labels.max(initial=0)) + 1
    if n_true * n_pred > 2**25:  # sparse, large label values: make them consecutive first
        true_ids, true_labels = np.unique(true_labels, return_inverse=True)
        pred_ids, pred_labels = np.unique(pred_labels, return_inverse=True)
        n_true, n_pred = true_ids.size, pred_ids.size
    codes = true_labels.astype(np.int64) * n_pred + pred_labels
    counts = np.bincount(codes, minlength=n_true * n_pred)
    nonzero = np.flatnonzero(counts)
    true_of, pred_of = np.divmod(nonzero, n_pred)
    if true_ids is not None:
        true_of, pred_of = true_ids[true_of], pred_ids[pred_of]
    return true_of.astype(np.int64), pred_of.astype(np.int64), counts[nonzero]


def _areas(labels_of_pairs: np.ndarray, pixels: np.ndarray) -> dict[int, int]:
    """Area of every label from the overlap list."""
    ids, inverse = np.unique(labels_of_pairs, return_inverse=True)
    return dict(zip(ids.tolist(), np.bincount(inverse, weights=pixels).tolist(), strict=True))


def _merged_and_split(true_of, pred_of, pixels, true_area, pred_area, fraction):
    """Predicted labels that merge true objects and true labels split by predictions."""
    of_true = pixels / true_area >= fraction  # the prediction covers most of this truth
    of_pred = pixels / pred_area >= fraction  # this truth holds most of the prediction
    merged_ids, merged_count = np.unique(pred_of[of_true], return_counts=True)
    split_ids, split_count = np.unique(true_of[of_pred], return_counts=True)
    return (
        tuple(merged_ids[merged_count >= 2].tolist()),
        tuple(split_ids[split_count >= 2].tolist()),
    )


def match_labels(
    true_labels: Any,
    pred_labels: Any,
    *,
    iou_threshold: float = 0.5,
    min_overlap_fraction: float = 0.5,
) -> SegmentationAccuracy:
    """Match predicted objects to true objects at an IoU threshold.

    Parameters
    ----------
    true_labels, pred_labels : array_like of int, shape (Y, X) or (Z, Y, X)
        Label images of the same shape; 0 is background.
    iou_threshold : float
        Smallest intersection-over-union of a match (inclusive), in (0, 1].
    min_overlap_fraction : float
        Defines merges and splits (see :class:`SegmentationAccuracy`), in (0, 1].

    Returns
    -------
    SegmentationAccuracy
        Precision, recall, F1, average precision, mean matched IoU, panoptic quality,
        merges, splits and the true -> predicted label mapping.

    Raises
    ------
    TypeError
        If a label image is not of an integer dtype.
    ValueError
        If the shapes differ, a label is negative or a fraction lies outside (0, 1].

    Notes
    -----
    The overlap of every pair of labels comes from one :func:`numpy.bincount` of the
    combined label codes (no per-label loop). The matching maximises the number of pairs
    with IoU >= ``iou_threshold`` and then their summed IoU, as in stardist [1]_; above 0.5
    each object has at most one candidate, so it equals the greedy answer.

    Examples
    --------
    >>> truth = np.array([[1, 1, 0, 2, 2, 0, 3]])
    >>> pred = np.array([[4, 4, 0, 5, 5, 5, 0]])
    >>> acc = match_labels(truth, pred)
    >>> acc.tp, acc.fp, acc.fn, round(acc.mean_matched_iou, 3), acc.mapping
    (2, 0, 1, 0.833, {1: 4, 2: 5})
    """
    iou_threshold = _check_fraction(iou_threshold, "iou_threshold")
    min_overlap_fraction = _check_fraction(min_overlap_fraction, "min_overlap_fraction")
    if np.shape(true_labels) != np.shape(pred_labels):
        raise ValueError(
            f"true_labels and pred_labels must have the same shape, got "
            f"{np.shape(true_labels)} and {np.shape(pred_labels)}"
        )
    true_of, pred_of, pixels = _overlaps(
        _check_labels(true_labels, "true_labels"), _check_labels(pred_labels, "pred_labels")
    )
    true_areas, pred_areas = _areas(true_of, pixels), _areas(pred_of, pixels)
    objects = (true_of > 0) & (pred_of > 0)
    true_of, pred_of, pixels = true_of[objects], pred_of[objects], pixels[objects]
    true_area = np.array([true_areas[label] for label in true_of.tolist()], dtype=float)
    pred_area = np.array([pred_areas[label] for label in pred_of.tolist()], dtype=float)
    iou = pixels / (true_area + pred_area - pixels)
    candidate = iou >= iou_threshold
    true_ids, pred_ids = np.unique(true_of), np.unique(pred_of)
    rows, cols, cost = _optimal_matching(
        np.searchsorted(true_ids, true_of[candidate]),
        np.searchsorted(pred_ids, pred_of[candidate]),
        1.0 - iou[candidate],
        true_ids.size,
        pred_ids.size,
    )
    merged, split = _merged_and_split(
        true_of, pred_of, pixels, true_area, pred_area, min_overlap_fraction
    )
    return _segmentation_record(
        iou_threshold,
        sum(1 for label in true_areas if label > 0),
        sum(1 for label in pred_areas if label > 0),
        (true_ids[rows], pred_ids[cols], 1.0 - cost),
        merged,
        split,
    )


def _check_fraction(value: Any, name: str) -> float:
    """Return ``value`` as a float in (0, 1], or raise."""
    value = _check_positive(value, name)
    if value > 1:
        raise ValueError(f"{name} must lie in (0, 1], got {value!r}")
    return value


def _segmentation_record(threshold, n_true, n_pred, matched, merged, split):
    """Assemble a :class:`SegmentationAccuracy` from matched labels and IoUs."""
    true_matched, pred_matched, ious = matched
    order = np.argsort(true_matched, kind="stable")
    tp = int(order.size)
    matches = tuple(
        zip(
            true_matched[order].tolist(),
            pred_matched[order].tolist(),
            ious[order].tolist(),
            strict=True,
        )
    )
    fp, fn = n_pred - tp, n_true - tp
    return SegmentationAccuracy(
        iou_threshold=threshold,
        n_true=n_true,
        n_pred=n_pred,
        tp=tp,
        fp=fp,
        fn=fn,
        precision=_ratio(tp, n_pred),
        recall=_ratio(tp, n_true),
        f1=_ratio(2 * tp, n_true + n_pred),
        average_precision=_ratio(tp, tp + fp + fn),
        mean_matched_iou=float(np.mean(ious)) if tp else math.nan,
        panoptic_quality=_ratio(float(np.sum(ious)), tp + fp / 2 + fn / 2),
        n_merges=len(merged),
        n_splits=len(split),
        merged_labels=merged,
        split_labels=split,
        matches=matches,
    )


# --------------------------------------------------------------------------------------
# Case level
# --------------------------------------------------------------------------------------

_CASE_QUANTITIES = ("ratio", "mean_her2", "mean_cep17")


def _case_value(case: Any, name: str, attribute: str, required: bool = True) -> Any:
    """Read ``attribute`` from a mapping or an object."""
    if isinstance(case, Mapping):
        if attribute in case:
            return case[attribute]
    elif hasattr(case, attribute):
        return getattr(case, attribute)
    if required:
        raise TypeError(f"{name} must have a {attribute!r} key or attribute, got {case!r}")
    return None


def _case_number(case: Any, name: str, attribute: str) -> float:
    """A non-negative real; None, NaN and inf mean undefined (a ratio without CEP17)."""
    value = _case_value(case, name, attribute)
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise TypeError(f"{name}.{attribute} must be a number, got {value!r}")
    if value < 0:
        raise ValueError(f"{name}.{attribute} must be non-negative, got {value!r}")
    return float(value)


def _case_group(case: Any, name: str, ratio: float, mean_her2: float) -> int | None:
    """The given group, or the ASCO/CAP 2018 group of ``ratio`` and ``mean_her2``."""
    group = _case_value(case, name, "group", required=False)
    if group is None:
        if math.isfinite(ratio) and math.isfinite(mean_her2):
            return dual_probe_group(ratio, mean_her2)
        return None
    if isinstance(group, bool) or not isinstance(group, int | np.integer) or not 1 <= group <= 5:
        raise ValueError(f"{name}.group must be an integer 1-5 or None, got {group!r}")
    return int(group)


def case_errors(truth: Any, predicted: Any) -> CaseAccuracy:
    """Errors of a predicted case result against the true one.

    Parameters
    ----------
    truth, predicted : mapping or object
        With ``ratio``, ``mean_her2`` and ``mean_cep17`` (keys or attributes, for example an
        :class:`ishcount.score.CaseSummary`) and optionally ``group``. A value of None (a
        ratio without CEP17 signals) is taken as undefined and gives NaN errors. When
        ``group`` is absent or None it is derived with :func:`ishcount.rules.dual_probe_group`
        (None if ratio or mean is not finite).

    Returns
    -------
    CaseAccuracy
        Signed, absolute and relative errors of ratio and means, and group agreement.

    Raises
    ------
    TypeError
        If a quantity is missing or not a number.
    ValueError
        If a quantity is negative or a given group is not 1-5.

    References
    ----------
    Wolff AC et al. J Clin Oncol 2018;36:2105-2122 (ASCO/CAP dual-probe groups).

    Examples
    --------
    >>> truth = {"mean_her2": 4.4, "mean_cep17": 2.0, "ratio": 2.2}
    >>> pred = {"mean_her2": 3.8, "mean_cep17": 2.0, "ratio": 1.9}
    >>> acc = case_errors(truth, pred)
    >>> acc.group_true, acc.group_pred, acc.group_agrees, round(acc.ratio_error, 2)
    (1, 5, False, -0.3)
    """
    values: dict[str, Any] = {}
    for quantity in _CASE_QUANTITIES:
        true_value = _case_number(truth, "truth", quantity)
        pred_value = _case_number(predicted, "predicted", quantity)
        error = pred_value - true_value
        values |= {
            f"{quantity}_true": true_value,
            f"{quantity}_pred": pred_value,
            f"{quantity}_error": error,
            f"{quantity}_abs_error": abs(error),
            f"{quantity}_rel_error": abs(error) / true_value if true_value else math.nan,
        }
    group_true = _case_group(truth, "truth", values["ratio_true"], values["mean_her2_true"])
    group_pred = _case_group(predicted, "predicted", values["ratio_pred"], values["mean_her2_pred"])
    return CaseAccuracy(
        group_true=group_true,
        group_pred=group_pred,
        group_agrees=group_true is not None and group_true == group_pred,
        **values,
    )
