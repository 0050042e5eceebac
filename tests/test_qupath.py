"""GeoJSON for QuPath: nuclei outlines with their counts, signals as points."""

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from ishcount.analyze import analyze_image
from ishcount.evaluate import match_labels
from ishcount.io import read_mask
from ishcount.qupath import nucleus_outlines, qupath_features
from ishcount.synthetic import make_field


@pytest.fixture(scope="module")
def analysed():
    field = make_field("group1", shape=(512, 512), rng=9)
    return field, analyze_image(field.image)


def test_outlines_read_back_as_the_same_nuclei(analysed, tmp_path):
    _, result = analysed
    path = tmp_path / "f.nuclei.geojson"
    path.write_text(json.dumps(qupath_features(result.labels, result.cells, result.spots)))
    again = read_mask(path, kind="nuclei", shape=result.labels.shape)
    match = match_labels(result.labels, again, iou_threshold=0.9)
    assert match.tp == len(result.cells) == int(again.max())
    for label in result.cells["label"].to_numpy():  # pixel for pixel (holes aside)
        mine = ndi.binary_fill_holes(result.labels == label)
        np.testing.assert_array_equal(again == again[mine].max(), mine)


def test_nuclei_carry_their_counts_and_why_they_were_not_scored(analysed):
    _, result = analysed
    features = qupath_features(result.labels, result.cells, result.spots)["features"]
    nuclei = {
        f["properties"]["measurements"]["Label"]: f
        for f in features
        if f["geometry"]["type"] == "Polygon"
    }
    assert len(nuclei) == len(result.cells)
    for row in result.cells.itertuples():
        properties = nuclei[row.label]["properties"]
        assert properties["objectType"] == "detection"
        assert properties["measurements"]["HER2"] == row.n_her2
        assert properties["measurements"]["CEP17"] == row.n_cep17
        expected = "Scored" if row.is_scored else f"Excluded: {row.exclusion_reason}"
        assert properties["classification"]["name"] == expected
    assert any(not row.is_scored for row in result.cells.itertuples())


def test_signals_are_points_per_probe_with_cluster_copies(analysed):
    _, result = analysed
    features = qupath_features(result.labels, result.cells, result.spots)["features"]
    points = {f["properties"]["name"]: f for f in features if f["geometry"]["type"] == "MultiPoint"}
    assert all("id" not in f for f in features), "QuPath makes its own ids"
    spots = result.spots
    for channel in ("her2", "cep17"):
        singles = spots[(spots["channel"] == channel) & ~spots["is_cluster"]]
        name = {"her2": "HER2", "cep17": "CEP17"}[channel]
        coordinates = np.asarray(points[f"{name} signals"]["geometry"]["coordinates"])
        np.testing.assert_allclose(coordinates, singles[["x", "y"]].to_numpy() + 0.5, atol=0.01)
    clusters = spots[(spots["channel"] == "her2") & spots["is_cluster"]]
    assert len(clusters) > 0
    cluster_feature = points["HER2 clusters"]["properties"]["measurements"]
    assert cluster_feature["Copies"] == int(clusters["copies"].sum())


def test_outline_follows_the_pixel_edges():
    labels = np.zeros((6, 8), np.int32)
    labels[1:4, 2:7] = 3  # rows 1-3, columns 2-6: x from 2 to 7, y from 1 to 4
    ring = nucleus_outlines(labels)[3]
    assert ring[0].tolist() == ring[-1].tolist()
    assert ring.min(axis=0).tolist() == [2.0, 1.0]
    assert ring.max(axis=0).tolist() == [7.0, 4.0]
    assert nucleus_outlines(np.zeros((4, 4), np.int32)) == {}
