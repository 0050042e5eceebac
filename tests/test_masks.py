"""Masks next to the images: nuclei segmented elsewhere and a region of interest per field."""

import json
import shutil
from pathlib import Path

import imagecodecs
import numpy as np
import pandas as pd
import pytest
import tifffile

from ishcount.config import parse_pipeline
from ishcount.io import find_images, read_mask
from ishcount.pipeline import discover_cases, run_batch
from ishcount.synthetic import make_case, write_case

SHAPE = (384, 384)
SPACING = (0.16, 0.16)


@pytest.fixture(scope="module")
def case_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("masks") / "group5"
    write_case(make_case("group5", n_fields=2, shape=SHAPE, spacing_um=SPACING, rng=21), folder)
    return folder


def copy_case(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


def field_names(folder: Path) -> list[str]:
    return [source.name for source in find_images(folder)]


def same_partition(labels: np.ndarray, truth: np.ndarray) -> bool:
    """Every labelled region of ``labels`` is exactly one region of ``truth``."""
    for value in np.unique(labels[labels > 0]):
        region = labels == value
        under = np.unique(truth[region])
        if len(under) != 1 or under[0] == 0 or not np.array_equal(region, truth == under[0]):
            return False
    return True


def test_masks_are_attached_to_their_field_and_are_no_fields(tmp_path):
    for name in ("a.ome.tif", "a.nuclei.tif", "b_DAPI.tif", "b_HER2.tif", "b_cp_masks.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "b.roi.png").write_bytes(b"x")
    (tmp_path / "a.roi.geojson").write_text("{}")  # QuPath's polygons
    (tmp_path / "notes.geojson").write_text("{}")  # neither a mask nor an image
    sources = {source.name: source for source in find_images(tmp_path)}
    assert sorted(sources) == ["a", "b"]
    assert sources["a"].mask("nuclei").name == "a.nuclei.tif"
    assert sources["a"].mask("roi").name == "a.roi.geojson"
    assert sources["b"].mask("nuclei").name == "b_cp_masks.png"
    assert sources["b"].mask("roi").name == "b.roi.png"
    (tmp_path / "c.roi.tif").write_bytes(b"x")
    with pytest.warns(UserWarning, match=r"c\.roi\.tif: no field of this name"):
        assert sorted(s.name for s in find_images(tmp_path)) == ["a", "b"]
    (tmp_path / "a_cp_masks.tif").write_bytes(b"x")
    with pytest.raises(ValueError, match="already has a nuclei mask"):
        find_images(tmp_path)


def test_read_mask_checks_what_it_reads(tmp_path):
    labels = np.array([[0, 3, 3], [0, 0, 7]], np.uint16)
    tifffile.imwrite(tmp_path / "f.nuclei.tif", labels[None])  # a singleton axis is dropped
    assert read_mask(tmp_path / "f.nuclei.tif", kind="nuclei", shape=(2, 3)).tolist() == [
        [0, 1, 1],  # numbered from 1, as every label image the pipeline takes
        [0, 0, 2],
    ]
    # a 0/255 mask: its connected objects are the nuclei (a boolean mask)
    (tmp_path / "m.nuclei.png").write_bytes(imagecodecs.png_encode((labels > 0) * np.uint8(255)))
    assert read_mask(tmp_path / "m.nuclei.png", kind="nuclei", shape=(2, 3)).dtype == bool
    with pytest.raises(ValueError, match=r"f\.nuclei\.tif: the nuclei mask is 2x3 pixels"):
        read_mask(tmp_path / "f.nuclei.tif", kind="nuclei", shape=(3, 3))
    tifffile.imwrite(tmp_path / "rgb.roi.tif", np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ValueError, match=r"rgb\.roi\.tif: a roi mask must be one 2D plane"):
        read_mask(tmp_path / "rgb.roi.tif", kind="roi", shape=(2, 3))
    tifffile.imwrite(tmp_path / "neg.nuclei.tif", np.array([[0, -1], [2, 2]], np.int16))
    with pytest.raises(ValueError, match=r"neg\.nuclei\.tif: labels must be >= 0"):
        read_mask(tmp_path / "neg.nuclei.tif", kind="nuclei", shape=(2, 2))
    tifffile.imwrite(tmp_path / "frac.nuclei.tif", np.array([[0, 1.5], [2, 2]], np.float32))
    with pytest.raises(ValueError, match=r"frac\.nuclei\.tif: .*whole numbers"):
        read_mask(tmp_path / "frac.nuclei.tif", kind="nuclei", shape=(2, 2))
    (tmp_path / "bad.roi.tif").write_bytes(b"II*\x00 not a tiff")
    with pytest.raises(ValueError, match=r"bad\.roi\.tif"):
        read_mask(tmp_path / "bad.roi.tif", kind="roi", shape=(2, 2))


def square(x0, y0, x1, y1):
    """A closed GeoJSON ring of a rectangle (pixel-corner coordinates, x first)."""
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def cellpose_seg(labels: np.ndarray) -> dict:
    """What Cellpose's GUI saves in <image>_seg.npy (np.save of a dict)."""
    return {
        "masks": labels,
        "outlines": np.zeros_like(labels),
        "flows": [np.zeros((*labels.shape, 3), np.uint8), np.zeros((2, *labels.shape))],
        "chan_choose": [0, 0],
        "ismanual": np.zeros(int(labels.max()), bool),
        "filename": "/data/f1.tif",
        "est_diam": np.float64(30.0),
        "normalize_params": {"lowhigh": None, "percentile": [1.0, 99.0], "invert": False},
        "model_path": 0,
    }


def test_cellpose_seg_files_are_read_without_running_code(tmp_path):
    labels = np.array([[0, 5, 5], [0, 0, 9]], np.uint16)
    np.save(tmp_path / "f1_seg.npy", cellpose_seg(labels), allow_pickle=True)
    assert read_mask(tmp_path / "f1_seg.npy", kind="nuclei", shape=(2, 3)).tolist() == [
        [0, 1, 1],
        [0, 0, 2],
    ]
    np.save(tmp_path / "f2.nuclei.npy", labels)  # a plain array of labels
    assert read_mask(tmp_path / "f2.nuclei.npy", kind="nuclei", shape=(2, 3)).max() == 2

    class Payload:  # what a crafted file could make pickle call
        def __reduce__(self):
            return (Path.touch, (tmp_path / "ran",))

    np.save(tmp_path / "evil_seg.npy", {"masks": labels, "x": Payload()}, allow_pickle=True)
    with pytest.raises(ValueError, match=r"evil_seg\.npy: cannot read .*pathlib"):
        read_mask(tmp_path / "evil_seg.npy", kind="nuclei", shape=(2, 3))
    assert not (tmp_path / "ran").exists()
    np.save(tmp_path / "g_seg.npy", {"outlines": labels}, allow_pickle=True)
    with pytest.raises(ValueError, match=r"g_seg\.npy: holds no 'masks' array"):
        read_mask(tmp_path / "g_seg.npy", kind="nuclei", shape=(2, 3))
    (tmp_path / "h_seg.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match=r"h_seg\.npy: cannot read as a NumPy mask file"):
        read_mask(tmp_path / "h_seg.npy", kind="nuclei", shape=(2, 3))


def test_geojson_polygons_are_rasterised(tmp_path):
    region = {
        "type": "FeatureCollection",
        "features": [
            {  # an annotation with a hole, and a line that encloses nothing
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [square(2, 1, 8, 6), square(4, 3, 6, 5)],
                },
            },
            {
                "type": "Feature",
                "geometry": {"type": "LineString", "coordinates": [[0, 0], [9, 9]]},
            },
        ],
    }
    (tmp_path / "f.roi.geojson").write_text(json.dumps(region))
    roi = read_mask(tmp_path / "f.roi.geojson", kind="roi", shape=(8, 10))
    expected = np.zeros((8, 10), bool)
    expected[1:6, 2:8] = True  # pixels whose centres lie inside the outline
    expected[3:5, 4:6] = False  # and not inside the hole
    np.testing.assert_array_equal(roi, expected)

    # QuPath's cells: the nucleus outline, not the cell's, one label each
    cells = [
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [square(0, 0, 10, 8)]},
            "nucleusGeometry": {"type": "Polygon", "coordinates": [square(1, 1, 4, 4)]},
        },
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square(6, 2, 9, 7)]}},
    ]
    (tmp_path / "f.nuclei.geojson").write_text(json.dumps(cells))
    labels = read_mask(tmp_path / "f.nuclei.geojson", kind="nuclei", shape=(8, 10))
    assert labels[1:4, 1:4].tolist() == [[1] * 3] * 3
    assert labels[2:7, 6:9].tolist() == [[2] * 3] * 5
    assert (labels > 0).sum() == 9 + 15
    (tmp_path / "g.roi.geojson").write_text(json.dumps({"type": "Point", "coordinates": [1, 1]}))
    with pytest.raises(ValueError, match=r"g\.roi\.geojson: no Polygon"):
        read_mask(tmp_path / "g.roi.geojson", kind="roi", shape=(8, 10))
    (tmp_path / "h.roi.geojson").write_text("{not json")
    with pytest.raises(ValueError, match=r"h\.roi\.geojson: not a readable GeoJSON"):
        read_mask(tmp_path / "h.roi.geojson", kind="roi", shape=(8, 10))
    with pytest.warns(UserWarning, match="mask ignored"):
        assert find_images(tmp_path) == []  # masks alone make no field


def test_run_uses_nuclei_segmented_elsewhere(case_folder, tmp_path):
    folder = copy_case(case_folder, tmp_path / "in" / "group5")
    first, second = field_names(folder)
    shutil.copy(folder / f"{first}.truth_nuclei.tif", folder / f"{first}.nuclei.tif")
    outcome = run_batch([folder], tmp_path / "out", workers=1)[0]
    case_dir = tmp_path / "out" / "group5"
    truth = tifffile.imread(folder / f"{first}.truth_nuclei.tif")
    used = tifffile.imread(case_dir / "labels" / f"{first}.tif")
    assert used.max() > 10
    assert same_partition(used, truth)  # the given nuclei, whole, not a segmentation of its own
    segmented = tifffile.imread(case_dir / "labels" / f"{second}.tif")
    assert not same_partition(segmented, tifffile.imread(folder / f"{second}.truth_nuclei.tif"))
    images = {entry["name"]: entry for entry in outcome.record["images"]}
    mask = str((folder / f"{first}.nuclei.tif").resolve())
    assert images[first]["masks"] == {"nuclei": mask}
    assert mask not in images[first]["source"]
    files = {f["path"] for field in outcome.record["fields"] for f in field["files"]}
    assert mask in files  # its SHA-256 is part of the provenance


def test_region_of_interest_limits_scoring_and_reaches_the_review(case_folder, tmp_path):
    folder = copy_case(case_folder, tmp_path / "in" / "group5")
    first = field_names(folder)[0]
    roi = np.zeros(SHAPE, np.uint8)
    roi[:, : SHAPE[1] // 2] = 255
    (folder / f"{first}.roi.png").write_bytes(imagecodecs.png_encode(roi))
    out = tmp_path / "out"
    run_batch([folder], out, workers=1)
    case_dir = out / "group5"
    cells = pd.read_csv(case_dir / "fields" / first / "cells.csv")
    labels = tifffile.imread(case_dir / "labels" / f"{first}.tif")
    widest = int(14.0 / SPACING[1])  # the largest nucleus the generator draws, 14 um
    assert not labels[:, SHAPE[1] // 2 + widest :].any()  # nuclei wholly outside are gone
    cut = cells[cells["exclusion_reason"] == "touches ROI edge"]
    assert len(cut) > 0
    assert (cells.loc[cells["is_scored"], "centroid_x"] < SHAPE[1] // 2).all()
    stored = tifffile.imread(case_dir / "labels" / f"{first}.roi.tif").astype(bool)
    np.testing.assert_array_equal(stored, roi > 0)
    page = (case_dir / "report.html").read_text()
    assert "the region of interest light blue" in page
    assert f"Region of interest: {first}.roi.png" in page

    # the region is an input: removing it recomputes the field and drops the stored region
    (folder / f"{first}.roi.png").unlink()
    seen = []
    run_batch([folder], out, workers=1, on_field=seen.append)
    assert {r.name: r.status for r in seen}[first] == "done"
    assert not (case_dir / "labels" / f"{first}.roi.tif").exists()
    assert pd.read_csv(case_dir / "fields" / first / "cells.csv")["is_scored"].sum() > len(
        cells[cells["is_scored"]]
    )


def test_an_image_given_alone_takes_the_masks_beside_it(case_folder, tmp_path):
    folder = copy_case(case_folder, tmp_path / "in" / "group5")
    first = field_names(folder)[0]
    shutil.copy(folder / f"{first}.truth_nuclei.tif", folder / f"{first}.nuclei.tif")
    [case] = discover_cases([folder / f"{first}.ome.tif"])
    assert case.sources[0].mask("nuclei") == folder / f"{first}.nuclei.tif"
    run_batch([folder / f"{first}.ome.tif"], tmp_path / "out", workers=1)
    used = tifffile.imread(tmp_path / "out" / first / "labels" / f"{first}.tif")
    assert same_partition(used, tifffile.imread(folder / f"{first}.truth_nuclei.tif"))


def test_run_uses_the_masks_cellpose_saved_beside_the_field(case_folder, tmp_path):
    folder = copy_case(case_folder, tmp_path / "in" / "group5")
    first = field_names(folder)[0]
    truth = tifffile.imread(folder / f"{first}.truth_nuclei.tif")
    np.save(folder / f"{first}_seg.npy", cellpose_seg(truth), allow_pickle=True)
    assert field_names(folder) == field_names(case_folder), "a _seg.npy file is no field"
    outcome = run_batch([folder], tmp_path / "out", workers=1)[0]
    used = tifffile.imread(tmp_path / "out" / "group5" / "labels" / f"{first}.tif")
    assert used.max() > 10
    assert same_partition(used, truth)
    images = {entry["name"]: entry for entry in outcome.record["images"]}
    assert images[first]["masks"] == {"nuclei": str((folder / f"{first}_seg.npy").resolve())}


def test_a_bad_mask_fails_its_field_alone(case_folder, tmp_path):
    folder = copy_case(case_folder, tmp_path / "in" / "group5")
    first, second = field_names(folder)
    tifffile.imwrite(folder / f"{first}.nuclei.tif", np.ones((10, 10), np.uint16))
    outcome = run_batch([folder], tmp_path / "out", workers=1)[0]
    failed = outcome.record["failed_fields"]
    assert [f["name"] for f in failed] == [first]
    assert f"{first}.nuclei.tif: the nuclei mask is 10x10 pixels" in failed[0]["error"]
    assert [f["name"] for f in outcome.record["fields"] if f["status"] == "done"] == [second]


def test_tiled_fields_take_the_nuclei_mask_too(case_folder, tmp_path):
    folder = copy_case(case_folder, tmp_path / "in" / "group5")
    first = field_names(folder)[0]
    shutil.copy(folder / f"{first}.truth_nuclei.tif", folder / f"{first}.nuclei.tif")
    config = parse_pipeline({"name": "tiled", "image": {"tile_size": 192}})
    run_batch([folder], tmp_path / "out", config=config, workers=1)
    case_dir = tmp_path / "out" / "group5"
    used = tifffile.imread(case_dir / "labels" / f"{first}.tif")
    truth = tifffile.imread(folder / f"{first}.truth_nuclei.tif")
    assert used.max() > 10
    assert same_partition(used, truth)
    record = json.loads((case_dir / "fields" / first / "field.json").read_text())
    assert record["status"] == "done"
