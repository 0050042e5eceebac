import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy.spatial import cKDTree

from ishcount.rules import dual_probe_group
from ishcount.synthetic import (
    PRESETS,
    TRUTH_CELL_SCHEMA,
    TRUTH_SPOT_SCHEMA,
    CaseTruth,
    SyntheticCase,
    case_truth,
    get_preset,
    main,
    make_case,
    make_field,
    render_spots,
    write_case,
)

SMALL = (192, 192)


@pytest.fixture(scope="module")
def cases():
    """One small two-field case per preset (shared by the truth tests)."""
    return {name: make_case(name, n_fields=2, shape=(512, 512), rng=7) for name in PRESETS}


@pytest.fixture(scope="module")
def clean_field():
    """A noise-free field for geometric checks."""
    return make_field("group1", shape=(512, 512), rng=11, noise=False)


@pytest.fixture(scope="module")
def zfield():
    return make_field("group1", shape=(192, 192), n_z=7, rng=5, noise=False)


# ------------------------------------------------------------------ rendering


@pytest.mark.parametrize("sigma", [0.3, 0.9, 1.4, 2.5])
def test_integrated_psf_sums_to_amplitude_times_gaussian_area(sigma):
    img = render_spots((41, 41), [[20.3, 19.8]], 50.0, sigma)
    expected = 50.0 * 2 * math.pi * sigma**2
    assert img.sum() == pytest.approx(expected, rel=0.01)


def test_integrated_psf_3d_and_anisotropic_sums():
    sigma = np.array([[2.0, 1.2, 1.5]])
    img = render_spots((21, 31, 31), [[10.2, 15.4, 14.6]], 7.0, sigma)
    expected = 7.0 * (2 * math.pi) ** 1.5 * sigma.prod()
    assert img.sum() == pytest.approx(expected, rel=0.01)


def test_pixel_integration_differs_from_point_sampling_for_narrow_spots():
    # A 0.3 px spot centred on a pixel: point sampling would put the full amplitude in it;
    # integration spreads the light and keeps the sum.
    img = render_spots((9, 9), [[4.0, 4.0]], 1.0, 0.3)
    total = 2 * math.pi * 0.3**2
    assert img[4, 4] < 1.0
    assert img[4, 4] == pytest.approx(total * math.erf(0.5 / (0.3 * math.sqrt(2))) ** 2)


def test_spots_leaving_the_image_are_clipped_not_wrapped():
    img = render_spots((10, 10), [[0.0, 9.0]], 1.0, 1.0)
    assert img[0, 9] == img.max()
    assert img[:, :3].sum() == 0
    assert img[7:, :].sum() == 0
    inside_fraction = (0.5 * (1 + math.erf(0.5 / math.sqrt(2)))) ** 2
    assert img.sum() == pytest.approx(2 * math.pi * inside_fraction, rel=1e-4)


def test_render_spots_rejects_bad_sigma():
    with pytest.raises(ValueError, match="sigma"):
        render_spots((5, 5), [[2, 2]], 1.0, 0.0)


# ------------------------------------------------------------------ determinism, inputs


def test_same_seed_gives_identical_field_and_other_seed_differs():
    a = make_field("group2", shape=SMALL, rng=3)
    b = make_field("group2", shape=SMALL, rng=3)
    c = make_field("group2", shape=SMALL, rng=4)
    for channel in ("dapi", "her2", "cep17"):
        np.testing.assert_array_equal(a.image.channel(channel), b.image.channel(channel))
    np.testing.assert_array_equal(a.nuclei, b.nuclei)
    pd.testing.assert_frame_equal(a.spots, b.spots)
    pd.testing.assert_frame_equal(a.cells, b.cells)
    assert not np.array_equal(a.image.her2, c.image.her2)


def test_case_seed_is_recorded_and_reproducible():
    one = make_case("group5", shape=(160, 160), rng=2)
    two = make_case("group5", shape=(160, 160), rng=2)
    assert one.seed == 2
    assert one.truth.to_dict() == two.truth.to_dict()
    np.testing.assert_array_equal(one.fields[1].image.dapi, two.fields[1].image.dapi)
    fresh = make_case("group5", n_fields=1, shape=(64, 64))
    again = make_case("group5", n_fields=1, shape=(64, 64), rng=fresh.seed)
    np.testing.assert_array_equal(fresh.fields[0].image.her2, again.fields[0].image.her2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (8, 8)}, "shape"),
        ({"n_z": 0}, "n_z"),
        ({"spacing_um": (0.1, 0.1, 0.1)}, "spacing_um"),
        ({"preset": "group9"}, "preset"),
    ],
)
def test_make_field_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_field(**{"shape": SMALL, **kwargs})


def test_bad_types_are_rejected():
    with pytest.raises(TypeError, match="preset"):
        get_preset(3)
    with pytest.raises(TypeError, match="rng"):
        make_case("group5", shape=(64, 64), rng="seed")
    with pytest.raises(ValueError, match="n_fields"):
        make_case("group5", n_fields=0)


# ------------------------------------------------------------------ image properties


def test_image_is_12_bit_uint16_with_spacing(clean_field):
    field = make_field("group5", shape=SMALL, spacing_um=0.16, rng=0)
    image = field.image
    assert image.spacing_um == (0.16, 0.16)
    for channel in ("dapi", "her2", "cep17"):
        data = image.channel(channel)
        assert data.dtype == np.uint16
        assert data.shape == SMALL
        assert data.max() <= 4095
        assert data.min() >= 0
    assert field.nuclei.dtype == np.int32


def test_nuclei_are_brighter_than_background_and_vary(clean_field):
    dapi = clean_field.image.dapi.astype(float)
    labels = clean_field.nuclei
    means = np.array([dapi[labels == k].mean() for k in np.unique(labels[labels > 0])])
    assert np.median(means) > 3 * np.median(dapi[labels == 0])
    assert means.max() / means.min() > 2.5  # dim nuclei and brightness spread
    assert clean_field.cells["area_um2"].max() > 2 * clean_field.cells["area_um2"].median() / 2


def test_noise_is_poisson_like():
    clean = make_field("group5", shape=SMALL, rng=9, noise=False).image.her2.astype(float)
    noisy = make_field("group5", shape=SMALL, rng=9).image.her2.astype(float)
    residual = noisy - clean
    expected_var = 2.0 * (clean - 100.0) + 9.0  # gain 2 ADU/e-, read noise 3 ADU
    ratio = residual.var() / expected_var.mean()
    assert 0.8 < ratio < 1.25


# ------------------------------------------------------------------ truth tables


def _recount(spots, n_labels):
    """Independent count by the kit's rules: unique signal ids per nucleus."""
    inside = spots[spots["label"] > 0]
    counts = {}
    for channel in ("her2", "cep17"):
        sel = inside[inside["channel"] == channel]
        counts[channel] = sel.groupby("label")["signal_id"].nunique()
    counts["clusters"] = inside[inside["cluster_id"] >= 0].groupby("label")["cluster_id"].nunique()
    return {
        k: v.reindex(range(1, n_labels + 1), fill_value=0).to_numpy() for k, v in counts.items()
    }


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_truth_is_self_consistent_and_realises_its_design(cases, name):
    case = cases[name]
    for field in case.fields:
        assert list(field.spots.columns) == list(TRUTH_SPOT_SCHEMA)
        assert list(field.cells.columns) == list(TRUTH_CELL_SCHEMA)
        cells = field.cells
        assert cells["label"].tolist() == sorted(set(np.unique(field.nuclei)) - {0})
        recount = _recount(field.spots, len(cells))
        np.testing.assert_array_equal(cells["n_her2"], recount["her2"])
        np.testing.assert_array_equal(cells["n_cep17"], recount["cep17"])
        np.testing.assert_array_equal(cells["n_her2_clusters"], recount["clusters"])
        scorable = (
            ~cells.touches_border
            & ~cells.overlaps
            & ~cells.is_obscured
            & (cells.n_her2 > 0)
            & (cells.n_cep17 > 0)
        )
        np.testing.assert_array_equal(cells["is_scorable"], scorable)
    truth = case.truth
    all_cells = pd.concat([f.cells for f in case.fields])
    scored = all_cells[all_cells["is_scorable"]]
    assert truth.n_nuclei == len(scored) >= 10
    assert truth.ratio == scored["n_her2"].sum() / scored["n_cep17"].sum()
    assert truth.mean_her2 == pytest.approx(scored["n_her2"].mean())
    assert truth.group == dual_probe_group(truth.ratio, truth.mean_her2)
    preset = PRESETS[name]
    if preset.intended_group is not None:
        assert truth.group == preset.intended_group
    if preset.intended_ratio is not None:
        assert preset.intended_ratio[0] <= truth.ratio <= preset.intended_ratio[1]


def test_preset_specific_biology(cases):
    group1 = pd.concat([f.spots for f in cases["group1"].fields])
    assert (group1["cluster_id"] >= 0).sum() > 50  # amplified in clusters
    group2 = cases["group2"].truth
    assert group2.mean_cep17 < 1.6  # monosomy drives the ratio
    group3 = cases["group3"].truth
    assert group3.mean_cep17 >= 3.5  # polysomy
    hetero = pd.concat([f.cells for f in cases["heterogeneous"].fields])
    fraction = (hetero["population"] == "amplified").mean()
    assert 0.2 <= fraction <= 0.4
    assert cases["heterogeneous"].truth.fraction_amplified > 0.1
    weak = pd.concat([f.spots for f in cases["low_snr"].fields])["is_weak"].mean()
    normal = pd.concat([f.spots for f in cases["group1"].fields])["is_weak"].mean()
    assert weak > 2 * normal
    assert weak > 0.15


def test_case_truth_of_concatenated_fields_and_empty_input():
    cells = pd.DataFrame(
        {
            "image": ["a", "a", "b", "b"],
            "is_scorable": [True, False, True, True],
            "n_her2": [3, 40, 2, 1],
            "n_cep17": [1, 2, 2, 1],
        }
    )
    truth = case_truth(cells)
    assert isinstance(truth, CaseTruth)
    assert (truth.n_nuclei, truth.total_her2, truth.total_cep17, truth.n_fields) == (3, 6, 4, 2)
    assert truth.ratio == 1.5
    assert truth.mean_her2 == 2.0
    assert truth.group == 5
    assert truth.fraction_amplified == 0.0
    empty = case_truth(cells.assign(is_scorable=False))
    assert empty.n_nuclei == 0
    assert empty.group is None
    assert math.isnan(empty.ratio)
    with pytest.raises(ValueError, match="n_cep17"):
        case_truth(cells.drop(columns="n_cep17"))


# ------------------------------------------------------------------ spot geometry


def test_isolated_spots_sit_on_a_local_maximum(clean_field):
    spots = clean_field.spots
    tree = cKDTree(spots[["y", "x"]].to_numpy())
    debris = cKDTree(clean_field.debris[["y", "x"]].to_numpy().reshape(-1, 2))
    checked = exact = 0
    for channel in ("her2", "cep17"):
        image = clean_field.image.channel(channel).astype(float)
        single = spots[(spots.channel == channel) & ~spots.is_split & (spots.cluster_id < 0)]
        for spot in single.itertuples():
            if len(tree.query_ball_point([spot.y, spot.x], 6 * spot.sigma)) > 1:
                continue
            if debris.query_ball_point([spot.y, spot.x], 30):  # 3 um: broadband debris
                continue
            iy, ix = round(spot.y), round(spot.x)
            if not (2 <= iy < image.shape[0] - 2 and 2 <= ix < image.shape[1] - 2):
                continue
            # the brightest pixel of the 5x5 window is the spot's pixel or its neighbour
            window = image[iy - 2 : iy + 3, ix - 2 : ix + 3]
            peak = np.unravel_index(np.argmax(window), window.shape)
            assert max(abs(peak[0] - 2), abs(peak[1] - 2)) <= 1, spot
            assert window[1:4, 1:4].max() > window.mean()
            exact += window[2, 2] == window.max()
            checked += 1
    assert checked >= 15
    assert exact >= 0.9 * checked


def test_spots_lie_inside_their_nucleus_footprint(clean_field):
    spots, cells, labels = clean_field.spots, clean_field.cells, clean_field.nuclei
    overlapping = set(cells.loc[cells["overlaps"], "label"])
    inside = spots[(spots["label"] > 0) & ~spots["label"].isin(overlapping)]
    assert len(inside) > 100
    rows, cols = np.rint(inside["y"]).astype(int), np.rint(inside["x"]).astype(int)
    np.testing.assert_array_equal(labels[rows, cols], inside["label"])
    outside = spots[spots["label"] == 0]
    assert len(outside) > 0
    assert (labels[np.rint(outside["y"]).astype(int), np.rint(outside["x"]).astype(int)] == 0).all()


def test_split_signals_and_clusters_have_their_geometry(clean_field):
    spots = clean_field.spots
    split = spots[spots["is_split"]]
    assert len(split) > 0
    assert (split.groupby("signal_id").size() == 2).all()
    for _, pair in split.groupby("signal_id"):
        distance = np.hypot(*(pair[["y", "x"]].to_numpy()[0] - pair[["y", "x"]].to_numpy()[1]))
        assert distance < 4 * pair["sigma"].mean()  # closer than one spot diameter
    clusters = spots[spots["cluster_id"] >= 0]
    assert (clusters["channel"] == "her2").all()
    assert clusters["signal_id"].is_unique  # every copy is a counted signal
    spread_um = clusters.groupby("cluster_id")[["y", "x"]].agg(lambda v: v.max() - v.min()) * 0.1
    assert (spread_um.to_numpy() <= 2.0 + 1e-9).all()
    assert clusters.groupby("cluster_id").size().min() >= 4


def test_overlapping_nuclei_are_flagged_and_never_scorable():
    field = make_field("group5", shape=(512, 512), rng=21)
    cells = field.cells
    assert cells["overlaps"].sum() >= 2
    assert not (cells["overlaps"] & cells["is_scorable"]).any()
    border = np.unique(np.concatenate([field.nuclei[0], field.nuclei[-1]]))
    assert cells.set_index("label").loc[[b for b in border if b], "touches_border"].all()


def test_debris_is_bright_in_every_channel():
    dusty = dataclasses.replace(PRESETS["group5"], debris_per_1000_um2=5.0)
    field = make_field(dusty, shape=(256, 256), rng=3, noise=False)
    debris = field.debris
    assert len(debris) > 0
    blob = debris.loc[debris["her2_amplitude"].idxmax()]
    iy, ix = round(blob.y), round(blob.x)
    assert 0 <= iy < 256
    assert 0 <= ix < 256
    for channel in ("dapi", "her2", "cep17"):
        image = field.image.channel(channel).astype(float)
        assert image[iy, ix] > np.median(image) + 0.5 * blob[f"{channel}_amplitude"]


@pytest.mark.parametrize("n_z", [None, 5])
def test_nuclei_under_bright_debris_are_not_scorable(n_z):
    # The debris's light over each nucleus, summed from the debris table (Gaussian blobs,
    # point-sampled at pixel centres and, on z-stacks, over the blobs' planes), against the
    # truth's flag: debris at half a signal's peak hides or imitates a signal.
    dusty = dataclasses.replace(PRESETS["group2"], debris_per_1000_um2=8.0)
    field = make_field(dusty, shape=(384, 384), n_z=n_z, rng=5, noise=False)
    yy, xx = np.indices(field.nuclei.shape)
    light = np.zeros(field.nuclei.shape)
    for blob in field.debris.itertuples():
        d2 = (yy - blob.y) ** 2 + (xx - blob.x) ** 2
        light += blob.her2_amplitude * np.exp(-d2 / (2 * blob.sigma**2))
    cells = field.cells.set_index("label")
    brightest = pd.Series(light.ravel()).groupby(field.nuclei.ravel()).max().drop(0)
    relative = brightest / dusty.spot_amplitude
    assert (relative >= 0.6).sum() >= 3
    assert cells.loc[relative[relative >= 0.6].index, "is_obscured"].all()
    assert not cells.loc[relative[relative <= 0.4].index, "is_obscured"].any()
    assert not (cells["is_obscured"] & cells["is_scorable"]).any()


def test_weak_flag_matches_snr(clean_field):
    spots = clean_field.spots
    np.testing.assert_array_equal(spots["is_weak"], spots["snr"] < 3.0)
    assert spots["is_weak"].any()
    assert (~spots["is_weak"]).any()
    assert spots["sigma"].between(0.12 / 0.1 * 0.9, 0.16 / 0.1 * 1.1).all()


# ------------------------------------------------------------------ z-stacks


def test_z_stack_shape_and_spot_depths(zfield):
    image = zfield.image
    assert image.shape == (7, 192, 192)
    assert image.spacing_um == (0.4, 0.1, 0.1)
    assert zfield.nuclei.shape == (192, 192)
    spots = zfield.spots[zfield.spots["label"] > 0]
    assert spots["z"].between(0, 6).all()
    assert spots["z"].std() > 0.3
    assert (spots["sigma_z"] * 0.4 > 2.4 * spots["sigma"] * 0.1).all()
    cells = zfield.cells.set_index("label")
    single = spots[spots["cluster_id"] < 0]
    centre = cells.loc[single["label"], "z_center"].to_numpy()
    half = cells.loc[single["label"], "thickness_um"].to_numpy() / 2 / 0.4
    assert (np.abs(single["z"].to_numpy() - centre) <= half + 0.2).all()


def test_z_stack_spots_are_sharp_in_their_own_plane_only(zfield):
    image = zfield.image.her2.astype(float)
    spots = zfield.spots
    tree = cKDTree(spots[["y", "x"]].to_numpy())
    debris = cKDTree(zfield.debris[["y", "x"]].to_numpy())
    chosen = spots[(spots.channel == "her2") & (spots.snr > 5) & ~spots.is_split]
    checked = 0
    for spot in chosen[chosen.cluster_id < 0].itertuples():
        iy, ix = round(spot.y), round(spot.x)
        crowded = len(tree.query_ball_point([spot.y, spot.x], 10)) > 1
        if (
            crowded
            or debris.query_ball_point([spot.y, spot.x], 15)
            or not (8 <= iy < image.shape[1] - 8 and 8 <= ix < image.shape[2] - 8)
        ):
            continue
        background = np.median(image[:, iy - 8 : iy + 9, ix - 8 : ix + 9], axis=(1, 2))
        excess = image[:, iy, ix] - background
        assert abs(int(np.argmax(excess)) - spot.z) <= 1.0, spot
        far = np.abs(np.arange(image.shape[0]) - spot.z) >= 3
        if far.any():
            assert excess[far].max() < 0.5 * excess.max()  # dim and blurred away from focus
        checked += 1
    assert checked >= 3


# ------------------------------------------------------------------ files and CLI


def test_write_case_round_trips(tmp_path):
    case = make_case("group1", n_fields=2, shape=(96, 128), rng=4)
    paths = write_case(case, tmp_path / "case")
    names = {p.name for p in paths}
    stem = case.fields[0].image.name
    assert f"{stem}.ome.tif" in names
    assert "truth.json" in names
    assert len(paths) == 11
    assert f"{stem}.truth_debris.csv" in names
    assert not list((tmp_path / "case").glob(".*tmp"))
    with tifffile.TiffFile(tmp_path / "case" / f"{stem}.ome.tif") as tif:
        data = tif.asarray()
        ome = tif.ome_metadata
        assert tif.series[0].axes == "CYX"
    np.testing.assert_array_equal(data[1], case.fields[0].image.her2)
    assert data.dtype == np.uint16
    for name in ("DAPI", "HER2", "CEP17"):
        assert f'Name="{name}"' in ome
    assert 'PhysicalSizeX="0.1"' in ome
    assert 'PhysicalSizeY="0.1"' in ome
    labels = tifffile.imread(tmp_path / "case" / f"{stem}.truth_nuclei.tif")
    np.testing.assert_array_equal(labels, case.fields[0].nuclei)
    spots = pd.read_csv(tmp_path / "case" / f"{stem}.truth_spots.csv")
    assert len(spots) == len(case.fields[0].spots)
    document = json.loads((tmp_path / "case" / "truth.json").read_text())
    assert document["seed"] == 4
    assert document["preset"] == "group1"
    assert document["truth"]["group"] == case.truth.group
    assert document["generator_version"]
    # the same seed writes the same bytes (the OME UUID comes from the name and pixels)
    again = write_case(make_case("group1", n_fields=2, shape=(96, 128), rng=4), tmp_path / "b")
    for first, second in zip(sorted(paths), sorted(again), strict=True):
        assert first.read_bytes() == second.read_bytes(), first.name


def test_write_case_z_stack_axes(tmp_path):
    field = make_field("group5", shape=(64, 64), n_z=3, rng=1, name="z")
    case = SyntheticCase("z", "group5", (field,), case_truth(field.cells), seed=1)
    write_case(case, tmp_path)
    with tifffile.TiffFile(tmp_path / "z.ome.tif") as tif:
        assert tif.series[0].axes == "CZYX"
        assert tif.series[0].shape == (3, 3, 64, 64)
        assert 'PhysicalSizeZ="0.4"' in tif.ome_metadata
    with pytest.raises(TypeError, match="SyntheticCase"):
        write_case(field, tmp_path)


def test_cli_writes_a_case(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["--preset", "group2", "--out", str(out), "--size", "128", "--seed", "3"])
    assert code == 0
    text = capsys.readouterr().out
    assert "scorable" in text
    assert "ratio" in text
    assert "group" in text
    assert (out / "truth.json").exists()
    assert len(list(out.glob("*.ome.tif"))) == 2


def test_cli_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        main(["--preset", "group2", "--out", str(tmp_path), "--size", "4"])
