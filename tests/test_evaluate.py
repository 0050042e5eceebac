"""Tests of ishcount.evaluate on analytic cases whose answers are computed by hand."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from ishcount.evaluate import (
    case_errors,
    count_errors,
    evaluate_spots,
    match_labels,
    match_points,
)
from ishcount.tables import SPOT_SCHEMA, empty_table

# ---------------------------------------------------------------------------------------
# match_points
# ---------------------------------------------------------------------------------------


def test_match_points_hand_counted_case():
    truth = [[0, 0], [0, 10], [20, 20]]
    pred = [[0, 1], [0, 12.5], [50, 50]]  # 1.0 away; 2.5 away (too far); far away
    m = match_points(truth, pred, max_distance=2)
    assert (m.n_true, m.n_pred, m.tp, m.fp, m.fn) == (3, 3, 1, 2, 2)
    assert m.precision == pytest.approx(1 / 3)
    assert m.recall == pytest.approx(1 / 3)
    assert m.f1 == pytest.approx(1 / 3)
    assert m.mean_error == pytest.approx(1.0)
    assert m.median_error == pytest.approx(1.0)
    assert m.pairs == ((0, 0),)
    assert m.distances == pytest.approx((1.0,))


def test_match_points_maximises_pairs_where_greedy_nearest_would_not():
    # Greedy (closest pair first) takes P0-T0 (0.9) and leaves P1 without a partner.
    truth = [[0, 0], [0, 2]]
    pred = [[0, 0.9], [0, -1.9]]
    m = match_points(truth, pred, max_distance=2)
    assert m.tp == 2
    assert m.pairs == ((0, 1), (1, 0))
    assert m.mean_error == pytest.approx((1.9 + 1.1) / 2)


def test_match_points_minimises_distance_among_largest_matchings():
    m = match_points([[0, 0], [0, 1]], [[0, 1.1], [0, 0.1]], max_distance=2)
    assert m.pairs == ((0, 1), (1, 0))
    assert m.mean_error == pytest.approx(0.1)


def test_match_points_distance_limit_is_inclusive():
    assert match_points([[0, 0]], [[3, 4]], max_distance=5).tp == 1
    assert match_points([[0, 0]], [[3, 4]], max_distance=4.999).tp == 0


def test_match_points_identical_points_match_at_zero_distance():
    m = match_points([[1, 1], [5, 5]], [[5, 5], [1, 1]], max_distance=0.5)
    assert m.tp == 2
    assert m.pairs == ((0, 1), (1, 0))
    assert m.mean_error == 0.0


def test_match_points_applies_anisotropic_spacing():
    spacing = (2.0, 0.5, 0.5)  # z steps are 4x coarser than y, x
    # one z step = 2.0 um; three y pixels = 1.5 um
    assert match_points([[0, 0, 0]], [[1, 0, 0]], max_distance=2, spacing=spacing).tp == 1
    assert match_points([[0, 0, 0]], [[1, 0, 0]], max_distance=1.9, spacing=spacing).tp == 0
    m = match_points([[0, 0, 0]], [[0, 3, 0]], max_distance=1.6, spacing=spacing)
    assert m.tp == 1
    assert m.mean_error == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("truth", "pred", "expected"),
    [
        (np.zeros((0, 2)), np.zeros((0, 2)), (math.nan, math.nan, math.nan)),
        (np.zeros((0, 2)), [[1, 1], [2, 2]], (0.0, math.nan, 0.0)),
        ([[1, 1]], [], (math.nan, 0.0, 0.0)),
    ],
)
def test_match_points_empty_inputs_give_documented_values(truth, pred, expected):
    m = match_points(truth, pred, max_distance=1)
    got = (m.precision, m.recall, m.f1)
    np.testing.assert_equal(got, expected)
    assert m.tp == 0
    assert math.isnan(m.mean_error)
    assert m.pairs == ()


def test_match_points_record_is_immutable_and_serialisable():
    m = match_points([[0, 0]], [[0, 1]], max_distance=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.tp = 5  # type: ignore[misc]
    assert "pairs" not in m.to_dict()
    assert m.to_dict(include_pairs=True)["pairs"] == [[0, 0]]


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"true_coords": np.zeros((2, 4))}, ValueError, "true_coords"),
        ({"pred_coords": np.zeros((2, 3))}, ValueError, "same number of axes"),
        ({"pred_coords": [[0, math.nan]]}, ValueError, "pred_coords"),
        ({"max_distance": 0}, ValueError, "max_distance"),
        ({"max_distance": "2"}, TypeError, "max_distance"),
        ({"spacing": (1.0, 1.0, 1.0)}, ValueError, "spacing"),
        ({"spacing": (1.0, -1.0)}, ValueError, "spacing"),
    ],
)
def test_match_points_rejects_bad_arguments(kwargs, error, pattern):
    arguments = {"true_coords": [[0, 0]], "pred_coords": [[0, 1]], "max_distance": 2}
    with pytest.raises(error, match=pattern):
        match_points(**(arguments | kwargs))


def _reference_matching(truth, pred, max_distance):
    """Number of pairs and total distance from one dense, cardinality-first assignment."""
    distance = cdist(truth, pred)
    allowed = distance <= max_distance
    bonus = (min(distance.shape) + 1) * (max_distance + 1)
    rows, cols = linear_sum_assignment(np.where(allowed, distance - bonus, 0.0))
    keep = allowed[rows, cols]
    return int(keep.sum()), float(distance[rows, cols][keep].sum())


@pytest.mark.parametrize("seed", range(6))
def test_match_points_is_optimal_on_crowded_random_sets(seed):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0, 12, (40, 2))  # crowded: components with many points each
    pred = np.vstack([truth[:30] + rng.normal(0, 0.8, (30, 2)), rng.uniform(0, 12, (15, 2))])
    m = match_points(truth, pred, max_distance=1.5)
    n_pairs, total = _reference_matching(truth, pred, 1.5)
    assert m.tp == n_pairs
    assert sum(m.distances) == pytest.approx(total)
    assert len({t for t, _ in m.pairs}) == len({p for _, p in m.pairs}) == m.tp


def test_match_points_20k_by_20k_is_fast():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 2048, (20_000, 2))
    pred = np.vstack(
        [truth[:19_000] + rng.normal(0, 0.7, (19_000, 2)), rng.uniform(0, 2048, (1000, 2))]
    )
    m = match_points(truth, pred, max_distance=3)  # speed is measured in benchmarks/, not here
    assert m.tp >= 19_000
    assert m.n_pred == 20_000


# ---------------------------------------------------------------------------------------
# evaluate_spots
# ---------------------------------------------------------------------------------------


def _truth(rows):
    """Truth table from (channel, z, y, x, cluster_id, signal_id) tuples."""
    columns = ["channel", "z", "y", "x", "cluster_id", "signal_id"]
    table = pd.DataFrame(rows, columns=columns)
    table["label"] = 1
    return table


def _detected(rows):
    """Detection table in SPOT_SCHEMA layout from (channel, y, x, copies) tuples."""
    table = empty_table(SPOT_SCHEMA)
    frame = pd.DataFrame(rows, columns=["channel", "y", "x", "copies"])
    for column in table.columns:
        if column not in frame:
            frame[column] = 0
    frame["is_cluster"] = frame["copies"] > 1
    return frame[list(table.columns)].astype(SPOT_SCHEMA)


def test_split_signal_counts_once_at_its_mean_position():
    truth = _truth([("her2", 0, 10, 9, -1, 0), ("her2", 0, 10, 11, -1, 0)])
    found = _detected([("her2", 10, 10, 1)])
    acc = evaluate_spots(truth, found, max_distance=0.5)
    assert (acc.all.n_true, acc.all.tp, acc.all.fp, acc.all.fn) == (1, 1, 0, 0)
    assert acc.all.mean_error == pytest.approx(0.0)
    assert acc.all.pairs == ((0, 0),)  # first row of the split signal
    unsplit = evaluate_spots(truth.drop(columns="signal_id"), found, max_distance=1.0)
    assert (unsplit.all.n_true, unsplit.all.tp, unsplit.all.fn) == (2, 1, 1)


def test_split_signal_is_found_by_a_detection_on_either_half():
    # One half below the detection limit: the other half's detection, 2 px from the mean
    # position, has found the signal (one signal, counted once), not missed it.
    truth = _truth(
        [("her2", 0, 10, 8, -1, 0), ("her2", 0, 10, 12, -1, 0), ("her2", 0, 30, 30, -1, 1)]
    )
    on_half = evaluate_spots(truth, _detected([("her2", 10, 12.2, 1)]), max_distance=1.0)
    assert (on_half.isolated.tp, on_half.isolated.fp, on_half.isolated.fn) == (1, 0, 1)
    assert on_half.isolated.mean_error == pytest.approx(0.2)
    # both halves reported apart: one signal found, one extra detection
    both = evaluate_spots(
        truth, _detected([("her2", 10, 8, 1), ("her2", 10, 12, 1)]), max_distance=1.0
    )
    assert (both.isolated.tp, both.isolated.fp) == (1, 1)
    far = evaluate_spots(truth, _detected([("her2", 10, 14.5, 1)]), max_distance=1.0)
    assert far.isolated.tp == 0


def test_isolated_and_clustered_are_reported_separately():
    truth = _truth(
        [
            ("her2", 0, 10, 10, -1, 0),  # isolated, found
            ("her2", 0, 60, 60, -1, 1),  # isolated, missed
            *[
                ("her2", 0, 30 + dy, 30 + dx, 5, 2 + i)
                for i, (dy, dx) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1), (0.5, 0.5)])
            ],  # cluster 5: 5 copies
            ("her2", 0, 80, 10, 9, 7),  # cluster 9: 2 copies, not found
            ("her2", 0, 81, 10, 9, 8),
        ]
    )
    found = _detected(
        [
            ("her2", 10.5, 10, 1),  # matches the isolated spot
            ("her2", 30.5, 30.5, 4),  # cluster 5 as one blob of ~4 copies
            ("her2", 31.6, 31.6, 1),  # an extra single at the edge of cluster 5
            ("her2", 45, 45, 1),  # false positive far from everything
        ]
    )
    acc = evaluate_spots(truth, found, max_distance=1.5)
    iso, clu = acc.isolated, acc.clustered
    assert (iso.n_true, iso.n_pred, iso.tp, iso.fp, iso.fn) == (2, 2, 1, 1, 1)
    assert (clu.n_true, clu.n_pred, clu.tp, clu.fp, clu.fn) == (7, 2, 2, 0, 5)
    assert (acc.all.n_true, acc.all.n_pred, acc.all.tp) == (9, 4, 3)
    table = acc.cluster_table()
    assert table[
        ["cluster_id", "true_copies", "detected_copies", "n_detections"]
    ].values.tolist() == [
        [5, 5, 5, 2],
        [9, 2, 0, 0],
    ]
    assert acc.cluster_copies.n == 2
    assert acc.cluster_copies.mae == pytest.approx(1.0)
    assert acc.cluster_copies.bias == pytest.approx(-1.0)
    assert acc.cluster_copies.exact_match_rate == pytest.approx(0.5)


def test_a_detection_inside_a_wide_cluster_belongs_to_it():
    # Six copies on a ring of radius 4: the detection of the whole cluster sits at the
    # centre of its light, 2.8 from the copies' centroid and further from every copy.
    ring = [(4 * np.sin(a), 4 * np.cos(a)) for a in np.linspace(0, 2 * np.pi, 6, endpoint=False)]
    truth = _truth(
        [("her2", 0, 40 + dy, 40 + dx, 3, i) for i, (dy, dx) in enumerate(ring)]
        + [("her2", 0, 10, 10, -1, 6)]
    )
    found = _detected(
        [
            ("her2", 42, 42, 6),  # the cluster, off its copies' centroid
            ("her2", 42.4, 44.2, 1),  # between two copies at the rim, 2.4 from each
            ("her2", 40, 48, 1),  # 3 past the ring: an isolated false positive
            ("her2", 10, 10, 1),
        ]
    )
    acc = evaluate_spots(truth, found, max_distance=1.0)
    assert (acc.isolated.n_pred, acc.isolated.tp, acc.isolated.fp) == (2, 1, 1)
    assert acc.cluster_table()["detected_copies"].tolist() == [7]


def test_channels_never_match_each_other():
    truth = _truth([("her2", 0, 5, 5, -1, 0), ("cep17", 0, 20, 20, -1, 0)])
    swapped = _detected([("her2", 20, 20, 1), ("cep17", 5, 5, 1)])
    right = _detected([("her2", 5, 5, 1), ("cep17", 20, 20, 1)])
    assert evaluate_spots(truth, swapped, max_distance=2).all.tp == 0
    pooled = evaluate_spots(truth, right, max_distance=2)
    assert (pooled.all.n_true, pooled.all.tp) == (2, 2)
    her2 = evaluate_spots(truth, swapped, max_distance=2, channel="her2")
    assert (her2.channel, her2.all.n_true, her2.all.n_pred, her2.all.tp) == ("her2", 1, 1, 0)


def test_pairs_index_table_positions_not_index_labels():
    truth = _truth([("her2", 0, 5, 5, -1, 0), ("her2", 0, 50, 50, -1, 1)])
    found = _detected([("her2", 50, 50, 1), ("her2", 5, 5, 1)]).set_axis([100, 7])
    assert evaluate_spots(truth, found, max_distance=1).all.pairs == ((0, 1), (1, 0))


def test_evaluate_spots_in_3d_with_spacing():
    truth = _truth([("her2", 2, 10, 10, -1, 0)])
    found = _detected([("her2", 10, 10, 1)])  # z = 0: two planes below
    found["z"] = 0.0
    assert evaluate_spots(truth, found, max_distance=1.0, spacing=(0.3, 0.1, 0.1)).all.tp == 1
    assert evaluate_spots(truth, found, max_distance=0.5, spacing=(0.3, 0.1, 0.1)).all.tp == 0
    assert evaluate_spots(truth, found, max_distance=0.5, spacing=(0.1, 0.1)).all.tp == 1


def test_evaluate_spots_empty_tables_give_a_record():
    truth = _truth([])
    acc = evaluate_spots(truth, empty_table(SPOT_SCHEMA), max_distance=2, channel="her2")
    assert (acc.all.n_true, acc.all.n_pred, acc.all.tp) == (0, 0, 0)
    assert math.isnan(acc.all.f1)
    assert acc.clusters == ()
    assert acc.cluster_copies.n == 0
    assert len(acc.cluster_table()) == 0
    missed = evaluate_spots(
        _truth([("her2", 0, 1, 1, 3, 0)]), empty_table(SPOT_SCHEMA), max_distance=2
    )
    assert missed.clustered.recall == 0.0
    assert missed.clusters[0].detected_copies == 0


def test_evaluate_spots_rejects_bad_tables():
    truth = _truth([("her2", 0, 1, 1, -1, 0)])
    no_channel = pd.DataFrame({"y": [1.0], "x": [1.0]})
    with pytest.raises(ValueError, match="detected_spots has no 'channel'"):
        evaluate_spots(truth, no_channel, max_distance=1, channel="her2")
    with pytest.raises(ValueError, match="coordinate"):
        evaluate_spots(truth, no_channel.drop(columns="x"), max_distance=1)
    with pytest.raises(TypeError, match="truth_spots"):
        evaluate_spots(truth.to_numpy(), no_channel, max_distance=1)
    with pytest.raises(ValueError, match="signal_id"):
        evaluate_spots(truth.assign(signal_id=np.nan), no_channel, max_distance=1)


# ---------------------------------------------------------------------------------------
# count_errors
# ---------------------------------------------------------------------------------------


def test_count_errors_hand_computed():
    acc = count_errors([4, 2, 2, 0, 3], [2, 3, 3, 0, 3])  # errors -2, 1, 1, 0, 0
    assert acc.n == 5
    assert acc.mae == pytest.approx(4 / 5)
    assert acc.bias == pytest.approx(0.0)
    assert acc.rmse == pytest.approx(math.sqrt(6 / 5))
    assert acc.exact_match_rate == pytest.approx(2 / 5)
    assert acc.mean_relative_error == pytest.approx((0.5 + 0.5 + 0.5 + 0) / 4)
    assert acc.n_relative == 4


def test_count_errors_by_label_and_through_a_mapping():
    truth = pd.Series({1: 2, 2: 4, 3: 6})
    by_label = count_errors(truth, pd.Series({2: 5, 3: 6, 9: 1}))
    assert (by_label.n, by_label.n_unpaired_true, by_label.n_unpaired_pred) == (2, 1, 1)
    assert by_label.bias == pytest.approx(0.5)
    mapped = count_errors(truth, {10: 3, 20: 4}, mapping={1: 10, 2: 20})
    assert (mapped.n, mapped.mae, mapped.bias) == (2, 0.5, 0.5)
    assert mapped.n_unpaired_true == 1


def test_count_errors_per_matched_nucleus_from_label_matching():
    truth_labels = np.zeros((6, 12), np.int32)
    truth_labels[1:5, 1:5], truth_labels[1:5, 7:11] = 1, 2
    pred_labels = np.zeros_like(truth_labels)
    pred_labels[1:5, 7:11], pred_labels[1:5, 1:5] = 30, 40
    mapping = match_labels(truth_labels, pred_labels).mapping
    assert mapping == {1: 40, 2: 30}
    acc = count_errors({1: 3, 2: 8}, {30: 6, 40: 3}, mapping=mapping)
    assert (acc.n, acc.mae, acc.bias, acc.exact_match_rate) == (2, 1.0, -1.0, 0.5)


def test_count_errors_empty_is_nan():
    acc = count_errors([], [])
    assert acc.n == 0
    assert all(math.isnan(v) for v in (acc.mae, acc.bias, acc.rmse, acc.exact_match_rate))


@pytest.mark.parametrize(
    ("true_counts", "pred_counts", "kwargs", "error"),
    [
        ([1, 2], [1], {}, ValueError),
        ([1, math.nan], [1, 2], {}, ValueError),
        ([[1, 2]], [[1, 2]], {}, ValueError),
        ("12", "12", {}, TypeError),
        ({1: 2}, [2], {}, TypeError),
        ([1], [2], {"mapping": {0: 0}}, TypeError),
        ({1: 2}, {5: 2}, {"mapping": {1: 6}}, ValueError),
    ],
)
def test_count_errors_rejects_bad_input(true_counts, pred_counts, kwargs, error):
    with pytest.raises(error):
        count_errors(true_counts, pred_counts, **kwargs)


# ---------------------------------------------------------------------------------------
# match_labels
# ---------------------------------------------------------------------------------------


def _squares():
    truth = np.zeros((10, 20), np.int32)
    truth[1:5, 1:5] = 1
    truth[1:5, 10:14] = 2
    pred = np.zeros_like(truth)
    pred[1:5, 1:5] = 7  # exact: IoU 1
    pred[1:5, 11:15] = 8  # shifted one column: IoU 12 / 20 = 0.6
    pred[7:9, 16:18] = 9  # false positive
    return truth, pred


def test_match_labels_hand_computed():
    acc = match_labels(*_squares())
    assert (acc.n_true, acc.n_pred, acc.tp, acc.fp, acc.fn) == (2, 3, 2, 1, 0)
    assert acc.precision == pytest.approx(2 / 3)
    assert acc.recall == pytest.approx(1.0)
    assert acc.f1 == pytest.approx(0.8)
    assert acc.average_precision == pytest.approx(2 / 3)
    assert acc.mean_matched_iou == pytest.approx(0.8)
    assert acc.panoptic_quality == pytest.approx(1.6 / 2.5)
    assert acc.matches == ((1, 7, 1.0), (2, 8, pytest.approx(0.6)))
    assert acc.mapping == {1: 7, 2: 8}
    assert (acc.n_merges, acc.n_splits) == (0, 0)


def test_match_labels_threshold_is_a_parameter():
    acc = match_labels(*_squares(), iou_threshold=0.7)
    assert (acc.tp, acc.fp, acc.fn, acc.mapping) == (1, 2, 1, {1: 7})
    assert match_labels(*_squares(), iou_threshold=0.6).tp == 2  # inclusive


def test_merge_and_split_are_detected():
    two = np.zeros((6, 10), np.int32)
    two[1:5, 1:5], two[1:5, 5:9] = 1, 2
    one = np.zeros_like(two)
    one[1:5, 1:9] = 3
    merged = match_labels(two, one)  # each truth has IoU exactly 0.5 with the merged object
    assert (merged.n_merges, merged.merged_labels, merged.n_splits) == (1, (3,), 0)
    assert (merged.tp, merged.fn, merged.mapping) == (1, 1, {1: 3})
    split = match_labels(one, two)
    assert (split.n_splits, split.split_labels, split.n_merges) == (1, (3,), 0)
    # A prediction covering truth 1 fully and 25 % of truth 2 is not a merge at 0.5 ...
    partial = np.zeros_like(two)
    partial[1:5, 1:6] = 4
    assert match_labels(two, partial).n_merges == 0
    # ... but is one when a quarter of an object counts as substantial.
    assert match_labels(two, partial, min_overlap_fraction=0.25).n_merges == 1


def test_match_labels_below_half_uses_optimal_assignment():
    # 1D strips: A = [0, 10), B = [10, 20); X = [2, 13), Y = [0, 2).
    # IoU(A, X) = 8/13, IoU(B, X) = 3/18, IoU(A, Y) = 2/10. Greedy on IoU pairs A-X only.
    truth = np.zeros((1, 20), np.int32)
    truth[0, :10], truth[0, 10:] = 1, 2
    pred = np.zeros_like(truth)
    pred[0, 2:13], pred[0, :2] = 5, 6
    low = match_labels(truth, pred, iou_threshold=0.15)
    assert low.mapping == {1: 6, 2: 5}
    assert low.mean_matched_iou == pytest.approx((0.2 + 3 / 18) / 2)
    assert match_labels(truth, pred).mapping == {1: 5}


def test_match_labels_large_label_values_and_3d():
    truth, pred = _squares()
    big = match_labels(truth * 1_000_003, np.where(pred > 0, pred + 5_000_000, 0))
    assert big.mapping == {1_000_003: 5_000_007, 2_000_006: 5_000_008}
    assert big.f1 == pytest.approx(0.8)
    stack = match_labels(np.stack([truth, truth]), np.stack([pred, pred]).astype(np.uint16))
    assert (stack.tp, stack.fp) == (2, 1)


def test_match_labels_empty_images():
    empty = np.zeros((4, 4), np.int32)
    acc = match_labels(empty, empty)
    assert (acc.n_true, acc.n_pred, acc.tp) == (0, 0, 0)
    assert math.isnan(acc.precision)
    assert math.isnan(acc.average_precision)
    only_truth = match_labels(np.ones((4, 4), np.int32), empty)
    assert (only_truth.recall, only_truth.f1, only_truth.average_precision) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("truth", "pred", "kwargs", "error", "pattern"),
    [
        (np.zeros((4, 4)), np.zeros((4, 4), int), {}, TypeError, "true_labels"),
        (np.zeros((4, 4), int), np.zeros((4, 4), bool), {}, TypeError, "pred_labels"),
        (np.zeros((4, 4), int), np.zeros((4, 5), int), {}, ValueError, "shape"),
        (-np.ones((4, 4), int), np.zeros((4, 4), int), {}, ValueError, "non-negative"),
        (np.zeros((4, 4), int), np.zeros((4, 4), int), {"iou_threshold": 1.5}, ValueError, "iou"),
        (np.zeros((4, 4), int), np.zeros((4, 4), int), {"iou_threshold": 0}, ValueError, "iou"),
    ],
)
def test_match_labels_rejects_bad_input(truth, pred, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        match_labels(truth, pred, **kwargs)


def test_match_labels_2048_squared_with_300_objects_is_fast():
    rng = np.random.default_rng(1)
    truth = np.zeros((2048, 2048), np.int32)
    for label in range(1, 301):  # 300 non-overlapping squares on a 20 x 15 grid
        row, col = divmod(label - 1, 20)
        size = int(rng.integers(30, 60))
        truth[row * 100 + 10 : row * 100 + 10 + size, col * 100 + 10 : col * 100 + 10 + size] = (
            label
        )
    pred = np.roll(truth, 2, axis=1)
    acc = match_labels(truth, pred)
    assert (acc.n_true, acc.tp, acc.fp, acc.fn) == (300, 300, 0, 0)


# ---------------------------------------------------------------------------------------
# case_errors
# ---------------------------------------------------------------------------------------


def test_case_errors_hand_computed():
    truth = {"mean_her2": 4.4, "mean_cep17": 2.0, "ratio": 2.2}
    pred = {"mean_her2": 3.8, "mean_cep17": 2.0, "ratio": 1.9}
    acc = case_errors(truth, pred)
    assert (acc.group_true, acc.group_pred, acc.group_agrees) == (1, 5, False)
    assert acc.ratio_error == pytest.approx(-0.3)
    assert acc.ratio_abs_error == pytest.approx(0.3)
    assert acc.ratio_rel_error == pytest.approx(0.3 / 2.2)
    assert acc.mean_her2_abs_error == pytest.approx(0.6)
    assert acc.mean_her2_rel_error == pytest.approx(0.6 / 4.4)
    assert (acc.mean_cep17_error, acc.mean_cep17_rel_error) == (0.0, 0.0)


def test_case_errors_reads_objects_numpy_values_and_given_groups():
    truth = SimpleNamespace(mean_her2=np.float64(7.0), mean_cep17=np.int64(4), ratio=1.75, group=3)
    pred = SimpleNamespace(mean_her2=6.5, mean_cep17=4.0, ratio=np.float32(1.625), group=None)
    acc = case_errors(truth, pred)
    assert (acc.group_true, acc.group_pred, acc.group_agrees) == (3, 3, True)
    assert acc.mean_her2_error == pytest.approx(-0.5)
    assert dataclasses.asdict(acc) == acc.to_dict()


def test_case_errors_without_cep17_signals():
    truth = {"mean_her2": 2.0, "mean_cep17": 0.0, "ratio": math.inf}
    pred = {"mean_her2": 2.0, "mean_cep17": 1.0, "ratio": 2.0}
    acc = case_errors(truth, pred)
    assert acc.group_true is None
    assert acc.group_pred == 2
    assert acc.group_agrees is False
    assert math.isnan(acc.mean_cep17_rel_error)


@pytest.mark.parametrize(
    ("change", "error", "pattern"),
    [
        ({"ratio": "2.0"}, TypeError, "ratio"),
        ({"mean_her2": -1.0}, ValueError, "mean_her2"),
        ({"mean_cep17": True}, TypeError, "mean_cep17"),
        ({"group": 7}, ValueError, "group"),
    ],
)
def test_case_errors_rejects_bad_values(change, error, pattern):
    good = {"mean_her2": 4.0, "mean_cep17": 2.0, "ratio": 2.0}
    with pytest.raises(error, match=pattern):
        case_errors(good, good | change)
    with pytest.raises(TypeError, match="truth must have a 'ratio'"):
        case_errors({"mean_her2": 4.0, "mean_cep17": 2.0}, good)


def test_case_errors_takes_none_as_undefined():
    truth = SimpleNamespace(mean_her2=3.0, mean_cep17=1.5, ratio=2.0)
    pred = SimpleNamespace(mean_her2=3.0, mean_cep17=0.0, ratio=None)  # no CEP17 counted
    acc = case_errors(truth, pred)
    assert (acc.group_true, acc.group_pred, acc.group_agrees) == (2, None, False)
    assert math.isnan(acc.ratio_pred)
    assert math.isnan(acc.ratio_abs_error)
    assert acc.mean_cep17_error == pytest.approx(-1.5)
