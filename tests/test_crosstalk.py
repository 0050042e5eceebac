"""Bleed-through of DAPI into the probes and between the probes: measured, removed, no longer
counted."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from ishcount.analyze import AnalysisParams, analyze_image
from ishcount.crosstalk import (
    MAX_CROSSTALK,
    correction_weights,
    measure_crosstalk,
    measure_probe_crosstalk,
    measure_shift,
    remove_crosstalk,
    shift_image,
    subtract_crosstalk,
    weighted_sum,
)
from ishcount.image import FishImage
from ishcount.spots import detect_spots
from ishcount.synthetic import make_field


def textured_dapi(rng, shape=(512, 512), n_chromocentres=400):
    """Nuclei-like DAPI: a smooth level, chromatin texture and bright spot-sized chromocentres."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    level = 800 + 400 * np.sin(yy / 60.0) * np.cos(xx / 45.0)
    texture = ndi.gaussian_filter(rng.standard_normal(shape), 2.5) * 600
    centres = np.zeros(shape)
    ys, xs = rng.integers(5, shape[0] - 5, (2, n_chromocentres))
    centres[ys, xs] = rng.uniform(4000, 8000, n_chromocentres)
    return level + texture + ndi.gaussian_filter(centres, 2.0) * 2 * np.pi * 4


def probe_with(dapi, fraction, rng, spots=0):
    """A probe channel: flat background, ``fraction`` of the DAPI, optional signals, noise."""
    probe = 150 + fraction * dapi
    if spots:
        points = np.zeros(dapi.shape)
        ys, xs = rng.integers(10, dapi.shape[0] - 10, (2, spots))
        points[ys, xs] = 400 * 2 * np.pi * 1.4**2
        probe = probe + ndi.gaussian_filter(points, 1.4)
    return rng.poisson(np.clip(probe, 0, None)).astype(np.float32)


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.03, 0.08])
def test_measures_the_bleed_through_fraction(fraction):
    rng = np.random.default_rng(int(fraction * 1000))
    dapi = textured_dapi(rng)
    probe = probe_with(dapi, fraction, rng, spots=150)
    # Poisson noise and 150 bright signals leave the estimate within 0.004 of the truth.
    assert measure_crosstalk(probe, dapi) == pytest.approx(fraction, abs=0.004)


def test_anticorrelated_detail_is_not_bleed_through():
    rng = np.random.default_rng(3)
    dapi = textured_dapi(rng)
    probe = np.clip(2000 - 0.05 * dapi, 0, None) + rng.normal(0, 3, dapi.shape)
    assert measure_crosstalk(probe, dapi) == 0.0


def test_blank_dapi_gives_zero():
    rng = np.random.default_rng(4)
    probe = rng.normal(100, 5, (300, 300))
    assert measure_crosstalk(probe, np.full((300, 300), 700.0)) == 0.0
    assert 0.0 <= measure_crosstalk(probe, rng.normal(0, 300, (300, 300))) < 0.005
    assert MAX_CROSSTALK == 0.5


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="channel and source"):
        measure_crosstalk(np.zeros((10, 10)), np.zeros((10, 11)))
    with pytest.raises(ValueError, match="positive"):
        measure_crosstalk(np.zeros((10, 10)), np.zeros((10, 10)), tile_px=0)
    with pytest.raises(ValueError, match="fraction"):
        subtract_crosstalk(np.zeros((2, 2)), np.zeros((2, 2)), -0.1)
    with pytest.raises(ValueError, match="source must have"):
        subtract_crosstalk(np.zeros((2, 2)), np.zeros((3, 2)), 0.1)


def test_subtraction_leaves_the_input_alone():
    channel = np.array([[10, 20]], np.uint16)
    out = subtract_crosstalk(channel, np.array([[100, 100]]), 0.1)
    assert out.dtype == np.float32
    assert out.tolist() == [[0.0, 10.0]]
    assert channel.tolist() == [[10, 20]]
    stack = subtract_crosstalk(np.ones((2, 3, 3)), np.ones((2, 3, 3)), 0.5)
    assert stack.shape == (2, 3, 3)


def test_chromocentres_are_no_longer_taken_for_signals():
    """3 % DAPI in the probe makes signal-like ghosts of chromocentres; removal drops them."""
    rng = np.random.default_rng(5)
    dapi = textured_dapi(rng, n_chromocentres=300)
    probe = probe_with(dapi, 0.03, rng, spots=0)
    ghosts = len(detect_spots(probe, channel="her2"))
    fraction = measure_crosstalk(probe, dapi)
    left = len(detect_spots(subtract_crosstalk(probe, dapi, fraction), channel="her2"))
    assert ghosts > 50
    assert left <= 0.05 * ghosts


def test_analysis_reports_and_can_skip_the_correction():
    rng = np.random.default_rng(6)
    dapi = textured_dapi(rng, shape=(256, 256))
    image = FishImage(
        dapi=dapi.astype(np.float32),
        her2=probe_with(dapi, 0.03, rng, spots=20),
        cep17=probe_with(dapi, 0.0, rng, spots=20),
        spacing_um=(0.1, 0.1),
    )
    on = analyze_image(image)
    off = analyze_image(image, params=AnalysisParams(remove_crosstalk=False))
    assert set(on.crosstalk) == {"dapi>her2", "dapi>cep17", "her2>cep17", "cep17>her2"}
    assert on.crosstalk["dapi>her2"] == pytest.approx(0.03, abs=0.006)
    assert on.crosstalk["dapi>cep17"] < 0.006
    assert off.crosstalk == {}
    assert (off.spots.channel == "her2").sum() > (on.spots.channel == "her2").sum()


def test_field_correction_takes_dapi_out_of_every_probe_and_plane():
    rng = np.random.default_rng(8)
    dapi = textured_dapi(rng, shape=(256, 256))
    stack = np.stack([dapi * 0.6, dapi, dapi * 0.8])
    probes = {
        name: rng.poisson(100 + fraction * stack).astype(np.float32)
        for name, fraction in (("her2", 0.04), ("cep17", 0.01))
    }
    images, fractions = remove_crosstalk(probes, stack)
    assert fractions["dapi>her2"] == pytest.approx(0.04, abs=0.004)
    assert fractions["dapi>cep17"] == pytest.approx(0.01, abs=0.004)
    for name, image in images.items():
        assert image.shape == stack.shape
        for plane, original in zip(image, probes[name], strict=True):  # each plane corrected
            left = np.corrcoef(plane.ravel(), stack[0].ravel())[0, 1]
            before = np.corrcoef(original.ravel(), stack[0].ravel())[0, 1]
            assert abs(left) < 0.25 * abs(before)
    with pytest.raises(ValueError, match="probe 'her2' and dapi"):
        remove_crosstalk({"her2": np.zeros((4, 4))}, np.zeros((4, 5)))


def signals(rng, n, shape=(512, 512), peak=1000.0):
    """Expected image of ``n`` PSF-sized signals (sigma 1.4 px) of one peak height."""
    points = np.zeros(shape)
    ys, xs = rng.integers(8, shape[0] - 8, (2, n))
    points[ys, xs] = peak * 2 * np.pi * 1.4**2
    return ndi.gaussian_filter(points, 1.4)


def two_probes(rng, into_cep17, into_her2, n_her2=200, n_cep17=120, her2_peak=1000.0):
    """HER2 and CEP17 signals leaking into each other, on a flat 100 ADU, Poisson noise."""
    her2, cep17 = signals(rng, n_her2, peak=her2_peak), signals(rng, n_cep17)
    observed_her2 = rng.poisson(100 + her2 + into_her2 * cep17).astype(np.float32)
    observed_cep17 = rng.poisson(100 + cep17 + into_cep17 * her2).astype(np.float32)
    return observed_her2, observed_cep17


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.03, 0.08])
def test_measures_the_probe_to_probe_fraction(fraction):
    rng = np.random.default_rng(int(fraction * 1000) + 20)
    her2, cep17 = two_probes(rng, fraction, 0.02)
    # 200 signals of peak SNR ~30: the median slope is within 0.005 of the truth.
    assert measure_probe_crosstalk(cep17, her2) == pytest.approx(fraction, abs=0.005)
    assert measure_probe_crosstalk(her2, cep17) == pytest.approx(0.02, abs=0.005)


def test_broadband_debris_is_not_probe_bleed_through():
    """Particles as bright in both probes (ratio ~1) are left out of the median."""
    rng = np.random.default_rng(21)
    her2, cep17 = two_probes(rng, 0.02, 0.0, n_her2=100)
    debris = np.zeros(her2.shape)
    ys, xs = rng.integers(8, her2.shape[0] - 8, (2, 60))
    debris[ys, xs] = 3000 * 2 * np.pi * 2.0**2
    debris = ndi.gaussian_filter(debris, 2.0)
    assert measure_probe_crosstalk(cep17 + debris, her2 + debris) == pytest.approx(0.02, abs=0.006)


def test_too_few_bright_signals_give_no_probe_correction():
    rng = np.random.default_rng(22)
    her2, cep17 = two_probes(rng, 0.05, 0.05, n_her2=5, n_cep17=5)
    assert measure_probe_crosstalk(cep17, her2) == 0.0
    with pytest.raises(ValueError, match="channel and source"):
        measure_probe_crosstalk(cep17, her2[:-1])


def test_unmixing_removes_the_ghosts_of_bright_her2_signals():
    """A 6 % leak of 20x brighter HER2 makes faint CEP17 spots; unmixed, they are gone."""
    rng = np.random.default_rng(23)
    her2, cep17 = two_probes(rng, 0.06, 0.0, n_her2=150, n_cep17=60, her2_peak=20000.0)
    dapi = np.full(her2.shape, 500.0, np.float32)
    before = len(detect_spots(cep17, channel="cep17"))
    images, fractions = remove_crosstalk({"her2": her2, "cep17": cep17}, dapi)
    assert fractions["her2>cep17"] == pytest.approx(0.06, abs=0.006)
    assert fractions["cep17>her2"] < 0.005
    after = len(detect_spots(images["cep17"], channel="cep17"))
    assert before > 150  # the CEP17 signals and most of the 150 ghosts
    assert after == pytest.approx(60, abs=6)  # the CEP17 signals (a few may coincide)
    assert images["her2"].max() > 0.99 * her2.max()  # HER2 itself is hardly touched


def test_sparse_field_looks_beyond_the_dapi_tiles(monkeypatch):
    """Bright signals only outside the four DAPI-busiest tiles: the next tiles are used."""
    rng = np.random.default_rng(24)
    shape = (1024, 1024)
    dapi = np.full(shape, 300.0)
    dapi[:256, :] += textured_dapi(rng, shape=(256, 1024), n_chromocentres=100)  # 4 busy tiles
    her2_signals = signals(rng, 150, shape=shape)
    her2_signals[:300] = 0.0  # none in the DAPI-busiest tiles
    her2 = rng.poisson(100 + her2_signals).astype(np.float32)
    cep17 = rng.poisson(100 + 0.05 * her2_signals).astype(np.float32)
    _, fractions = remove_crosstalk({"her2": her2, "cep17": cep17}, dapi)
    assert fractions["her2>cep17"] == pytest.approx(0.05, abs=0.006)
    monkeypatch.setattr("ishcount.crosstalk._PROBE_TILES", 1)  # the four DAPI tiles only
    _, fractions = remove_crosstalk({"her2": her2, "cep17": cep17}, dapi)
    assert fractions["her2>cep17"] == 0.0


def test_correction_weights_are_the_map_remove_crosstalk_applies():
    rng = np.random.default_rng(25)
    dapi = textured_dapi(rng, shape=(256, 256)).astype(np.float32)
    her2, cep17 = two_probes(rng, 0.04, 0.02, n_her2=40, n_cep17=30)
    her2, cep17 = her2[:256, :256] + 0.02 * dapi, cep17[:256, :256] + 0.01 * dapi
    images, fractions = remove_crosstalk({"her2": her2, "cep17": cep17}, dapi)
    weights = correction_weights(fractions, ("her2", "cep17"))
    acquired = {"her2": her2, "cep17": cep17, "dapi": dapi}
    for name in ("her2", "cep17"):
        combined = sum(w * acquired[channel] for channel, w in weights[name].items())
        np.testing.assert_allclose(combined, images[name], rtol=1e-4, atol=0.05)


def test_correction_weights_invert_a_known_mixing():
    """Probes mixed with known DAPI and mutual fractions come back exactly."""
    rng = np.random.default_rng(26)
    her2, cep17, dapi = (rng.uniform(0, 1000, (8, 8)) for _ in range(3))
    fractions = {"dapi>her2": 0.03, "dapi>cep17": 0.01, "her2>cep17": 0.05, "cep17>her2": 0.02}
    observed = {
        "her2": her2 + 0.02 * cep17 + 0.03 * dapi,
        "cep17": cep17 + 0.05 * her2 + 0.01 * dapi,
        "dapi": dapi,
    }
    weights = correction_weights(fractions, ("her2", "cep17"))
    for name, truth in (("her2", her2), ("cep17", cep17)):  # float32: 1e-5 of the values
        np.testing.assert_allclose(weighted_sum(observed, weights[name]), truth, atol=0.01)


def test_a_probe_channel_shifted_against_dapi_is_found_and_moved_back():
    """Filter sets changed between exposures shift a channel by a few pixels; the bleed-
    through and haze it shares with DAPI show by how much. Without the correction, HER2
    shifted by (4, 3) px on a 2048 group2 field lost its DAPI fraction (0.021 to 0.003)
    and the case ratio moved from 2.539 to 2.502 (2.387 at (7, 5) px)."""
    field = make_field("group2", shape=(1024, 1024), rng=3)
    dapi, her2, cep17 = (np.asarray(field.image.channel(c)) for c in ("dapi", "her2", "cep17"))
    assert measure_shift(np.roll(her2, (4, 3), axis=(0, 1)), dapi) == (4, 3)
    assert measure_shift(np.roll(cep17, (-2, 1), axis=(0, 1)), dapi) == (-2, 1)
    assert measure_shift(her2, dapi) == (0, 0)
    noise = np.random.default_rng(0).normal(100, 5, dapi.shape)
    assert measure_shift(noise, dapi) is None  # nothing of DAPI in it: no shift claimed
    assert shift_image(np.roll(her2, (4, 3), axis=(0, 1)), (4, 3))[:-4, :-3].tolist() == (
        her2[:-4, :-3].tolist()
    )
    aligned = analyze_image(field.image)
    moved = FishImage(dapi, np.roll(her2, (4, 3), axis=(0, 1)), cep17, spacing_um=(0.1, 0.1))
    result = analyze_image(moved)
    assert result.detection["her2"]["shift_px"] == [4, 3]
    assert result.detection["cep17"]["shift_px"] == [0, 0]
    assert result.crosstalk["dapi>her2"] == pytest.approx(aligned.crosstalk["dapi>her2"], rel=0.1)
    counts = [r.cells.set_index("label")[["n_her2", "n_cep17"]] for r in (aligned, result)]
    same = counts[0].index.intersection(counts[1].index)
    assert (counts[0].loc[same] == counts[1].loc[same]).all(axis=1).mean() > 0.95
    skipped = analyze_image(moved, params=AnalysisParams(register_channels=False))
    assert skipped.detection["her2"]["shift_px"] is None


def test_registration_names_a_channel_of_another_shape():
    with pytest.raises(ValueError, match="channel and reference must be 2D images of one shape"):
        measure_shift(np.zeros((64, 64)), np.zeros((64, 32)))
