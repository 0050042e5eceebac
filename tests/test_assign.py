"""Signals to nuclei and the scorability rules, on hand-built label images."""

import numpy as np
import pandas as pd
import pytest
from skimage.draw import disk, ellipse

from ishcount.assign import (
    DEBRIS,
    IRREGULAR,
    NO_CEP17,
    NO_HER2,
    OUTSIDE_ROI,
    OVERLAPPING,
    TOO_LARGE,
    TOO_SMALL,
    TOUCHES_BORDER,
    TOUCHES_ROI_EDGE,
    CountParams,
    assign_spots,
    bright_fraction,
    count_spots,
    nuclei_near,
    nucleus_solidity,
)
from ishcount.tables import CELL_SCHEMA, SPOT_SCHEMA, conform, empty_table

SPACING = (0.1, 0.1)  # um; a 60-px-radius disk is then ~113 um^2


def make_spots(rows):
    """rows: (channel, y, x, copies, is_cluster)."""
    frame = pd.DataFrame(rows, columns=["channel", "y", "x", "copies", "is_cluster"])
    frame["spot_id"] = np.arange(len(frame))
    for col in ("z", "amplitude", "intensity", "background", "sigma", "snr"):
        frame[col] = 1.0
    frame["label"] = 0
    frame["in_cytoplasm"] = False
    frame["saturated"] = False
    return conform(frame, SPOT_SCHEMA)


def two_nuclei():
    labels = np.zeros((400, 400), np.int32)
    labels[disk((100, 100), 60)] = 1
    labels[disk((250, 280), 60)] = 2
    return labels


def test_assign_looks_up_rounded_positions_and_ignores_outside():
    labels = two_nuclei()
    spots = make_spots(
        [
            ("her2", 100.4, 99.6, 1, False),
            ("cep17", 5.0, 5.0, 1, False),
            ("her2", -3.0, 500.0, 1, False),
            ("cep17", 250.0, 280.0, 1, False),
        ]
    )
    assert assign_spots(spots, labels)["label"].tolist() == [1, 0, 0, 2]
    assert spots["label"].tolist() == [0, 0, 0, 0], "input must not be modified"


def test_counts_sum_copies_and_clusters_per_nucleus():
    labels = two_nuclei()
    spots = make_spots(
        [
            ("her2", 90, 90, 1, False),
            ("her2", 110, 110, 9, True),
            ("her2", 100, 120, 1, False),
            ("cep17", 95, 100, 1, False),
            ("cep17", 105, 100, 1, False),
            ("her2", 250, 280, 1, False),
            ("her2", 255, 285, 1, False),
            ("cep17", 250, 270, 1, False),
            ("her2", 10, 390, 1, False),  # over cytoplasm: counted for nobody
        ]
    )
    cells = count_spots(assign_spots(spots, labels), labels, spacing_um=SPACING, image="f1")
    assert cells[["label", "n_her2", "n_cep17", "n_her2_clusters"]].values.tolist() == [
        [1, 11, 2, 1],
        [2, 2, 1, 0],
    ]
    assert cells["is_scored"].all()
    assert (cells["image"] == "f1").all()
    assert cells["area_um2"].tolist() == pytest.approx([np.pi * 60**2 * 0.01] * 2, rel=0.02)
    assert cells[["centroid_y", "centroid_x"]].to_numpy().ravel() == pytest.approx(
        [100, 100, 250, 280]
    )


def test_exclusion_reasons():
    labels = np.zeros((600, 600), np.int32)
    labels[disk((60, 300), 60)] = 1  # fine
    labels[disk((30, 30), 60, shape=labels.shape)] = 2  # cut by the image edge
    labels[disk((300, 60), 10)] = 3  # too small (3 um^2)
    labels[disk((300, 300), 130)] = 4  # too large (530 um^2)
    labels[450:560, 400:560] = 5  # an L-shaped fragment
    labels[450:530, 450:560] = 0
    labels[disk((520, 100), 50)] = 6  # lacks CEP17
    labels[disk((400, 520), 30)] = 7  # lacks HER2
    rows = []
    for lab in range(1, 8):
        yx = np.argwhere(labels == lab)[len(np.argwhere(labels == lab)) // 2]
        if lab != 7:
            rows.append(("her2", *yx, 1, False))
        if lab != 6:
            rows.append(("cep17", *yx, 1, False))
    cells = count_spots(assign_spots(make_spots(rows), labels), labels, spacing_um=SPACING)
    assert cells["exclusion_reason"].tolist() == [
        "",
        TOUCHES_BORDER,
        TOO_SMALL,
        TOO_LARGE,
        IRREGULAR,
        NO_CEP17,
        NO_HER2,
    ]
    assert cells["is_scored"].tolist() == [True] + [False] * 6
    assert cells["touches_border"].tolist() == [False, True] + [False] * 5


def test_single_probe_does_not_require_cep17():
    labels = two_nuclei()
    spots = make_spots([("her2", 100, 100, 1, False), ("her2", 250, 280, 1, False)])
    cells = count_spots(
        assign_spots(spots, labels),
        labels,
        spacing_um=SPACING,
        params=CountParams(require_both_signals=False),
    )
    assert cells["is_scored"].all()


def test_roi_excludes_outside_and_cut_nuclei():
    labels = two_nuclei()
    roi = np.zeros(labels.shape, bool)
    roi[:, :200] = True  # holds nucleus 1 whole, nucleus 2 not at all
    spots = make_spots(
        [
            ("her2", 100, 100, 1, False),
            ("cep17", 100, 101, 1, False),
            ("her2", 250, 280, 1, False),
            ("cep17", 250, 281, 1, False),
        ]
    )
    cells = count_spots(assign_spots(spots, labels), labels, spacing_um=SPACING, roi=roi)
    assert cells["exclusion_reason"].tolist() == ["", OUTSIDE_ROI]
    roi[:, :] = False
    roi[:, :100] = True  # cuts nucleus 1 in half
    cells = count_spots(assign_spots(spots, labels), labels, spacing_um=SPACING, roi=roi)
    assert cells["exclusion_reason"].tolist() == [TOUCHES_ROI_EDGE, OUTSIDE_ROI]
    with pytest.raises(ValueError, match="roi must have"):
        count_spots(spots, labels, spacing_um=SPACING, roi=roi[:10])


def test_nuclei_under_debris_are_excluded_after_the_shape_rules():
    labels = two_nuclei()
    spots = make_spots([("her2", 100, 100, 1, False), ("cep17", 100, 101, 1, False)])
    # debris between the nuclei reaches nucleus 2 only; nucleus 2 has no signal either
    obscured = nuclei_near(labels, [[250.0, 200.0], [390.0, 390.0]], [40.0, 5.0])
    assert obscured.tolist() == [2]
    cells = count_spots(assign_spots(spots, labels), labels, spacing_um=SPACING, obscured=obscured)
    assert cells["exclusion_reason"].tolist() == ["", DEBRIS]  # before "no HER2 signal"
    cells = count_spots(assign_spots(spots, labels), labels, spacing_um=SPACING, obscured=[])
    assert cells["exclusion_reason"].tolist() == ["", NO_HER2]
    cells = count_spots(
        assign_spots(spots, labels),
        labels,
        spacing_um=SPACING,
        obscured=[1, 2],
        params=CountParams(min_area_um2=200),
    )
    assert cells["exclusion_reason"].tolist() == [TOO_SMALL, TOO_SMALL]
    assert nuclei_near(labels, np.empty((0, 2)), 3.0).tolist() == []


def test_overlapping_nuclei_recognised_by_summed_dapi():
    labels = two_nuclei()
    dapi = np.where(labels > 0, 1000.0, 100.0).astype(np.float32)
    rr, cc = ellipse(100, 140, 40, 30, shape=labels.shape)
    dapi[rr, cc] += 1000.0 * (labels[rr, cc] == 1)  # a second nucleus lies over part of nucleus 1
    fractions = bright_fraction(labels, dapi, np.array([1, 2]), 1.6)
    assert fractions[0] == pytest.approx(0.25, abs=0.08)
    assert fractions[1] == 0.0
    spots = make_spots(
        [
            ("her2", 100, 100, 1, False),
            ("cep17", 100, 101, 1, False),
            ("her2", 250, 280, 1, False),
            ("cep17", 250, 281, 1, False),
        ]
    )
    cells = count_spots(assign_spots(spots, labels), labels, spacing_um=SPACING, dapi=dapi)
    assert cells["exclusion_reason"].tolist() == [OVERLAPPING, ""]
    stack = np.stack([dapi * 0.5, dapi])
    cells3d = count_spots(assign_spots(spots, labels), labels, spacing_um=SPACING, dapi=stack)
    assert cells3d["exclusion_reason"].tolist() == [OVERLAPPING, ""]


def _field_of_discs(radius=30, n=12):
    """``n`` separate discs on a grid, with one HER2 and one CEP17 signal each."""
    labels = np.zeros((1000, 1200), np.int32)
    rows = []
    for index in range(n):
        y, x = 80 + 160 * (index // 6), 80 + 180 * (index % 6)
        labels[disk((y, x), radius)] = index + 1
        rows += [("her2", y, x, 1, False), ("cep17", y, x + 2, 1, False)]
    return labels, rows


def test_two_nuclei_taken_as_one_are_overlapping_by_their_size_and_notches():
    labels, rows = _field_of_discs()
    # two nuclei of the field's size overlapping a little: one object, notched where the
    # outlines cross, 1.9 times the median nucleus
    labels[disk((700, 300), 30)] = 13
    labels[disk((700, 354), 30)] = 13
    labels[disk((700, 700), 42)] = 14  # one large round nucleus, twice the median
    rows += [("her2", 700, 327, 1, False), ("cep17", 700, 329, 1, False)]
    rows += [("her2", 700, 700, 1, False), ("cep17", 700, 702, 1, False)]
    spots = assign_spots(make_spots(rows), labels)
    solidity = nucleus_solidity(labels, np.array([13, 14]))
    assert solidity[0] < 0.92 < solidity[1]
    cells = count_spots(spots, labels, spacing_um=SPACING).set_index("label")
    assert cells.at[13, "exclusion_reason"] == OVERLAPPING
    assert cells.at[14, "exclusion_reason"] == "", "a large single nucleus is scored"
    assert (cells.loc[1:12, "exclusion_reason"] == "").all()
    off = CountParams(merged_area_ratio=float("inf"))
    cells = count_spots(spots, labels, spacing_um=SPACING, params=off).set_index("label")
    assert cells.at[13, "exclusion_reason"] == ""
    # in a field of a few nuclei the median says nothing
    few = np.where(np.isin(labels, [1, 2, 13]), labels, 0)
    cells = count_spots(assign_spots(make_spots(rows), few), few, spacing_um=SPACING)
    assert cells.set_index("label").at[13, "exclusion_reason"] == ""


def test_solidity_is_scale_free():
    small = np.zeros((100, 100), np.int32)
    small[disk((50, 50), 30)] = 1
    big = np.kron(small, np.ones((6, 6), np.int32))
    assert nucleus_solidity(small)[0] == pytest.approx(nucleus_solidity(big)[0], abs=0.03)
    assert nucleus_solidity(small)[0] > 0.95


def test_empty_inputs_give_typed_empty_tables():
    labels = np.zeros((50, 50), np.int32)
    cells = count_spots(empty_table(SPOT_SCHEMA), labels, spacing_um=SPACING)
    assert len(cells) == 0
    assert list(cells.columns) == list(CELL_SCHEMA)
    assigned = assign_spots(empty_table(SPOT_SCHEMA), labels)
    assert len(assigned) == 0
    no_spots = count_spots(empty_table(SPOT_SCHEMA), two_nuclei(), spacing_um=SPACING)
    assert no_spots["exclusion_reason"].tolist() == [NO_HER2, NO_HER2]
    assert no_spots["n_her2"].dtype == np.int64


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 4), np.int32), np.zeros((4, 4), float)])
def test_bad_labels_are_rejected(bad):
    with pytest.raises(ValueError, match="labels must be a 2D integer array"):
        assign_spots(empty_table(SPOT_SCHEMA), bad)


def test_signals_near_a_nucleus_lie_over_cytoplasm():
    labels = two_nuclei()
    spots = make_spots(
        [
            ("her2", 100, 100, 1, False),
            ("her2", 100, 175, 1, False),
            ("cep17", 100, 230, 1, False),
            ("cep17", 390, 10, 1, False),
        ]
    )
    assigned = assign_spots(spots, labels, spacing_um=SPACING, cytoplasm_margin_um=3.0)
    # inside; 1.5 um from nucleus 1; 7 um from nucleus 1; far from both
    assert assigned["label"].tolist() == [1, 0, 0, 0]
    assert assigned["in_cytoplasm"].tolist() == [False, True, False, False]
