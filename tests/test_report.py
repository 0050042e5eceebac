"""Case reports: PNG encoding, JSON records and the printable page."""

import json

import imagecodecs
import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from ishcount.io import jsonable
from ishcount.report import case_record, encode_png, field_figures, render_html
from ishcount.rules import Counts, classify
from ishcount.score import score_case
from ishcount.synthetic import make_field


def test_png_round_trips_exactly():
    rgb = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    np.testing.assert_array_equal(imagecodecs.png_decode(encode_png(rgb)), rgb)


def test_field_figures_outline_scored_and_excluded_nuclei():
    field = make_field("group1", shape=(256, 256), rng=2)
    labels = field.nuclei
    cells = pd.DataFrame({"label": np.unique(labels)[1:]})
    cells["is_scored"] = cells["label"] % 2 == 0
    cells["n_her2"], cells["n_cep17"], cells["n_her2_clusters"] = 5, 2, 1
    figures = field_figures(field.image, labels, cells)
    overview = imagecodecs.png_decode(__import__("base64").b64decode(figures["overview"]))
    assert overview.shape == (*labels.shape, 3)
    assert (overview == (255, 255, 255)).all(axis=-1).any()  # scored outlines
    assert (overview == (255, 176, 0)).all(axis=-1).any()  # excluded outlines
    assert len(figures["gallery"]) == int(cells["is_scored"].sum())
    assert json.loads(json.dumps(figures)) == figures


def test_the_region_of_interest_is_outlined_in_the_overview():
    field = make_field("group5", shape=(256, 256), rng=3)
    cells = pd.DataFrame({"label": np.unique(field.nuclei)[1:]})
    cells["is_scored"] = True
    cells["n_her2"], cells["n_cep17"], cells["n_her2_clusters"] = 2, 2, 0
    roi = np.zeros((256, 256), bool)
    roi[40:200, 30:180] = True

    def blue(figures):
        overview = imagecodecs.png_decode(__import__("base64").b64decode(figures["overview"]))
        return (overview == (0, 200, 255)).all(axis=-1)

    outlined = blue(field_figures(field.image, field.nuclei, cells, roi))
    np.testing.assert_array_equal(outlined, find_boundaries(roi, mode="inner"))
    assert not blue(field_figures(field.image, field.nuclei, cells)).any()


def test_gallery_crops_hold_every_pixel_of_their_nucleus():
    # The gallery's boxes come from every 3rd pixel of a 2048 field's labels, widened by
    # the step: each must still hold its whole nucleus (and a nucleus smaller than the
    # step, missed by the samples, gets its own box).
    labels = make_field("group1", shape=(2048, 2048), rng=4).nuclei.copy()
    labels[1001:1003, 1001:1003] = labels.max() + 1
    cells = pd.DataFrame({"label": np.unique(labels)[1:]})
    cells["is_scored"] = True
    cells["n_her2"] = np.arange(len(cells)) % 7  # the gallery samples along n_her2
    cells.loc[cells.label == labels.max(), "n_her2"] = 99
    cells["n_cep17"], cells["n_her2_clusters"] = 2, 0
    image = make_field("group1", shape=(2048, 2048), rng=4).image
    figures = field_figures(image, labels, cells)
    exact = ndi.find_objects(labels)
    for item in figures["gallery"]:
        box = exact[item["label"] - 1]
        crop = imagecodecs.png_decode(__import__("base64").b64decode(item["png"]))
        assert crop.shape[0] >= box[0].stop - box[0].start
        assert crop.shape[1] >= box[1].stop - box[1].start
        margin = tuple(slice(max(b.start - 8, 0), b.stop + 8) for b in box)
        outline = find_boundaries(labels[margin] == item["label"], mode="inner").sum()
        assert (crop == (255, 255, 255)).all(axis=-1).sum() == outline
    assert labels.max() in [item["label"] for item in figures["gallery"]]


def test_record_is_json_and_page_carries_result_flags_and_notice():
    cells = pd.DataFrame(
        {
            "image": ["a", "b"] * 15,
            "label": range(30),
            "n_her2": [12, 9] * 15,
            "n_cep17": [2] * 30,
            "is_scored": True,
        }
    )
    summary = score_case(cells, rng=0)
    result = classify(summary, ihc="2+")
    fields = [
        {
            "name": "a",
            "status": "done",
            "error": "",
            "files": [],
            "n_nuclei": 15,
            "n_scored": 15,
            "seconds": 0.1,
        },
        {
            "name": "c",
            "status": "failed",
            "error": "c.tif: not a TIFF file",
            "files": [],
            "n_nuclei": 0,
            "n_scored": 0,
            "seconds": 0.0,
        },
    ]
    record = case_record(
        case="X",
        summary=summary,
        classification=result,
        fields=fields,
        images=[],
        count_params={},
        provenance={"pipeline": None},
    )
    assert json.loads(json.dumps(record, allow_nan=False))["classification"]["group"] == 1
    assert record["failed_fields"] == [{"name": "c", "error": "c.tif: not a TIFF file"}]
    page = render_html(record, {})
    for text in (
        "positive",
        "5.25",
        "qualified pathologist",
        "c.tif: not a TIFF file",
        "Not yet reviewed",
        "asco-cap-2018-breast-dual",
    ):
        assert text in page, text


def test_jsonable_handles_nested_records():
    counts = Counts(20, 90, 40, n_fields=2)
    assert jsonable({"c": counts, "t": (np.float64(np.nan),)}) == {
        "c": counts.to_dict(),
        "t": [None],
    }
