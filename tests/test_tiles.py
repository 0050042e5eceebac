"""Tiled analysis of large images: every nucleus and signal once, results as for the whole."""

import dataclasses

import numpy as np
import pytest

from ishcount.analyze import analyze_image
from ishcount.evaluate import match_labels
from ishcount.synthetic import make_field
from ishcount.tiles import analyze_tiled, plan_tiles


def test_tile_cores_partition_the_image():
    shape = (1000, 730)
    tiles = plan_tiles(shape, tile_size=256, halo=40)
    cover = np.zeros(shape, int)
    for tile in tiles:
        y0, y1, x0, x1 = tile.core
        cover[y0:y1, x0:x1] += 1
        oy0, oy1, ox0, ox1 = tile.outer
        assert (oy0, ox0) == (max(y0 - 40, 0), max(x0 - 40, 0))
        assert (oy1, ox1) == (min(y1 + 40, shape[0]), min(x1 + 40, shape[1]))
    assert (cover == 1).all()
    with pytest.raises(ValueError, match="tile_size"):
        plan_tiles(shape, tile_size=0, halo=1)


@pytest.fixture(scope="module")
def field():
    return make_field("group2", shape=(1024, 1024), rng=21)


def test_tiled_equals_whole_image_analysis(field):
    whole = analyze_image(field.image)
    tiled = analyze_tiled(field.image, tile_size=384)
    assert tiled.seconds["n_tiles"] == 9
    # each nucleus once, labels unique and consistent with the cell table
    ids = np.unique(tiled.labels)
    assert sorted(tiled.cells["label"]) == ids[ids > 0].tolist()
    # the same nuclei as the whole-image segmentation (a tile sees each owned nucleus whole)
    agreement = match_labels(whole.labels, tiled.labels)
    assert agreement.f1 >= 0.97
    # every signal once: no two signals of a channel closer than a pixel
    for _, group in tiled.spots.groupby("channel"):
        yx = group[["y", "x"]].to_numpy()
        d = np.hypot(*(yx[:, None, :] - yx[None, :, :]).transpose(2, 0, 1))
        np.fill_diagonal(d, np.inf)
        assert d.min() > 1.0
    # counts agree with the signal table and with the whole-image counts
    inside = tiled.spots[tiled.spots["label"] > 0]
    her2 = inside[inside["channel"] == "her2"].groupby("label")["copies"].sum()
    cells = tiled.cells.set_index("label")
    assert (her2.reindex(cells.index).fillna(0) == cells["n_her2"]).all()
    for column in ("n_her2", "n_cep17"):
        total_whole = whole.cells.loc[whole.cells["is_scored"], column].sum()
        total_tiled = tiled.cells.loc[tiled.cells["is_scored"], column].sum()
        assert total_tiled == pytest.approx(total_whole, rel=0.05)
    assert tiled.cells["is_scored"].sum() == pytest.approx(whole.cells["is_scored"].sum(), abs=2)
    # the bleed-through measured per tile agrees with the whole field's; a probe-to-probe
    # fraction is a median over a few dozen bright signals, within 0.011 of the truth on
    # 2048 x 2048 fields, so two such estimates may differ by twice that
    for key, fraction in whole.crosstalk.items():
        tolerance = 0.005 if key.startswith("dapi>") else 0.022
        assert tiled.crosstalk[key] == pytest.approx(fraction, abs=tolerance)
    # and so do the single-signal reference and the signal size
    for channel, found in whole.detection.items():
        per_tiles = tiled.detection[channel]
        assert per_tiles["spot_sigma_source"] == found["spot_sigma_source"]
        for key in ("reference_intensity", "measured_spot_sigma_um"):
            assert per_tiles[key] == pytest.approx(found[key], rel=0.1)
        assert per_tiles["shift_px"] == found["shift_px"] == [0, 0]  # a list, as in one image
        saturated = tiled.spots.loc[tiled.spots["channel"] == channel, "saturated"].sum()
        assert per_tiles["saturated_signals"] == saturated


def test_tiles_add_up_their_counts():
    """Hot pixels and maxima on fibres are things in the image: a tiled field reports all of
    them (a median over tiles had said 3 for 12), each tile's weighted by its core's share of
    its area so that the overlaps are not counted twice."""
    from ishcount.tiles import Tile, _combine, _core_share

    records = [
        {"hot_pixels": 3, "ridge_maxima": 0, "noise_sd": 2.0},
        {"hot_pixels": 9, "ridge_maxima": 60, "noise_sd": 4.0},
        {"hot_pixels": 0, "ridge_maxima": 0, "noise_sd": 3.0},
    ]
    combined = _combine(records)
    assert (combined["hot_pixels"], combined["ridge_maxima"]) == (12, 60)
    assert combined["noise_sd"] == 3.0
    weighted = _combine(records, [1.0, 0.5, 0.8])
    assert (weighted["hot_pixels"], weighted["ridge_maxima"]) == (8, 30)
    assert _core_share(Tile(core=(0, 100, 0, 100), outer=(0, 120, 0, 125))) == pytest.approx(
        10000 / 15000
    )


def test_a_tiled_field_counts_its_hot_pixels_about_once(field):
    """Hot pixels spread over the field: the tiles' weighted sum is the whole field's count
    within a few (a plain sum counts those in the overlaps twice)."""
    rng = np.random.default_rng(3)
    her2 = np.asarray(field.image.her2).copy()
    ys, xs = rng.integers(5, her2.shape[0] - 5, 200), rng.integers(5, her2.shape[1] - 5, 200)
    her2[ys, xs] = np.minimum(her2[ys, xs].astype(int) + 3000, 65535)
    image = dataclasses.replace(field.image, her2=her2)
    whole = analyze_image(image).detection["her2"]["hot_pixels"]
    tiled = analyze_tiled(image, tile_size=512).detection["her2"]["hot_pixels"]
    assert whole >= 190
    assert abs(tiled - whole) <= 0.1 * whole


def test_tiles_combine_shifts_by_the_commonest_one():
    from ishcount.tiles import _combine

    records = [{"shift_px": None}, {"shift_px": [1, 0]}, {"shift_px": [1, 0]}, {"shift_px": [0, 2]}]
    assert _combine(records)["shift_px"] == [1, 0]
    assert _combine([{"shift_px": None}, {"shift_px": None}])["shift_px"] is None


def test_tiles_in_threads_give_the_same_result(field):
    one = analyze_tiled(field.image, tile_size=512)
    two = analyze_tiled(field.image, tile_size=512, workers=2)
    np.testing.assert_array_equal(one.labels, two.labels)
    assert one.cells.equals(two.cells)
