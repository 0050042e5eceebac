"""The Qt-free review model and the export format of the napari plugin."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ishcount._napari._io import (
    load_reviewed_case,
    read_case_layers,
    read_image_layers,
    write_reviewed_case,
)
from ishcount._napari._review import EXCLUDED_BY_REVIEWER, ReviewSession, summary_rows
from ishcount.analyze import analyze_image
from ishcount.assign import DEBRIS, assign_spots, count_spots
from ishcount.rules import classify
from ishcount.score import score_case
from ishcount.synthetic import make_field


@pytest.fixture(scope="module")
def analysed():
    image = make_field("group1", shape=(384, 384), rng=5, name="f1").image
    return image, analyze_image(image)


@pytest.fixture
def session(analysed):
    image, result = analysed
    return ReviewSession.from_results([result], images=[image], reviewer="Dr A")


def _scored_label(session: ReviewSession) -> int:
    return int(session.cells.query("is_scored")["label"].iloc[0])


def _signal_in_scored_nucleus(session: ReviewSession, channel: str) -> int:
    spots = session.field("f1").spots
    scored = session.cells.query("is_scored")["label"]
    inside = spots[spots["label"].isin(scored) & (spots["channel"] == channel)]
    return int(inside.loc[~inside["is_cluster"], "spot_id"].iloc[0])


def test_exclude_and_delete_match_score_case_on_edited_tables(session, analysed):
    image, result = analysed
    label = _scored_label(session)
    spot_id = _signal_in_scored_nucleus(session, "cep17")
    session.exclude_nucleus("f1", label)
    session.delete_signal("f1", spot_id)
    # the same edits made by hand on the analysis tables
    spots = assign_spots(result.spots[result.spots["spot_id"] != spot_id], result.labels)
    cells = count_spots(
        spots,
        result.labels,
        spacing_um=image.spacing_um,
        image="f1",
        dapi=image.dapi,
        params=result.params.count,
    )
    row = cells["label"] == label
    cells.loc[row, "is_scored"] = False
    cells.loc[row, "exclusion_reason"] = EXCLUDED_BY_REVIEWER
    expected = score_case(cells, spots=spots, rng=session.seed)
    assert session.summary.counts == expected.counts
    assert session.summary.ratio_ci == expected.ratio_ci
    assert session.classification == classify(expected)
    assert [e.action for e in session.edits] == ["exclude nucleus", "delete signal"]
    assert session.edits[0].reviewer == "Dr A"
    assert session.dirty


def test_include_after_exclude_restores_counts(session):
    before = session.summary.counts
    label = _scored_label(session)
    assert session.toggle_nucleus("f1", label) is False
    assert session.summary.n_nuclei == before.n_nuclei - 1
    assert session.toggle_nucleus("f1", label) is True
    assert session.summary.counts == before
    assert session.exclude_nucleus("f1", label)
    assert not session.exclude_nucleus("f1", label)  # no change, no audit record
    assert len(session.edits) == 3


def test_exclusion_survives_a_recount(session):
    label = _scored_label(session)
    session.exclude_nucleus("f1", label)
    session.add_signal("f1", "her2", (1.0, 1.0))
    cells = session.field("f1").cells.set_index("label")
    assert not cells.loc[label, "is_scored"]
    assert cells.loc[label, "exclusion_reason"] == EXCLUDED_BY_REVIEWER


def test_debris_exclusion_survives_a_recount(session):
    # Debris is recognised from signals the analysis drops, so a recount cannot see it
    # again; the verdict comes with the field.
    label = _scored_label(session)
    cells = session.field("f1").cells
    row = cells["label"] == label
    cells.loc[row, ["is_scored", "exclusion_reason"]] = [False, DEBRIS]
    session.add_signal("f1", "her2", (1.0, 1.0))
    cells = session.field("f1").cells.set_index("label")
    assert cells.loc[label, "exclusion_reason"] == DEBRIS
    assert cells["exclusion_reason"].eq(DEBRIS).sum() == 1
    assert session.include_nucleus("f1", label)  # a reviewer may still score it
    assert session.field("f1").cells.set_index("label").loc[label, "is_scored"]


def test_added_cluster_counts_its_copies(session):
    label = _scored_label(session)
    cells = session.field("f1").cells.set_index("label")
    centre = cells.loc[label, ["centroid_y", "centroid_x"]].to_numpy(float)
    total = session.summary.total_her2
    spot_id = session.add_signal("f1", "clusters", centre, copies=7)
    assert session.summary.total_her2 == total + 7
    assert session.set_copies("f1", spot_id, 3)
    assert session.summary.total_her2 == total + 3
    assert session.edits[-1].before == 7
    assert session.edits[-1].after == 3


def test_sync_signals_adds_deletes_and_moves(session):
    spots = session.field("f1").spots
    mask = (spots["channel"] == "her2") & ~spots["is_cluster"]
    part = spots[mask]
    coords = part[["y", "x"]].to_numpy(float).copy()
    ids = part["spot_id"].to_numpy()
    coords[1] += 2.0  # moved
    keep = np.ones(len(ids), bool)
    keep[0] = False  # deleted
    new_coords = np.vstack([coords[keep], [[10.0, 12.0]]])
    new_ids = np.append(ids[keep], -1)
    out = session.sync_signals("f1", "her2", new_coords, new_ids)
    assert out[-1] > ids.max()
    assert (out[:-1] == ids[keep]).all()
    actions = sorted(e.action for e in session.edits)
    assert actions == ["add signal", "delete signal", "move signal"]
    her2 = session.field("f1").spots.query("channel == 'her2' and not is_cluster")
    assert len(her2) == len(part)
    assert ids[0] not in set(her2["spot_id"])


def test_bad_arguments_name_the_value(session):
    with pytest.raises(ValueError, match="label 99999"):
        session.exclude_nucleus("f1", 99999)
    with pytest.raises(ValueError, match="'nope'"):
        session.add_signal("f1", "nope", (1.0, 1.0))
    with pytest.raises(ValueError, match="copies"):
        session.add_signal("f1", "clusters", (1.0, 1.0), copies=0)
    with pytest.raises(ValueError, match="image must be one of"):
        session.field("other")


def test_summary_rows_show_the_classification(session):
    rows = dict(summary_rows(session.summary, session.classification))
    assert rows["Call"] == session.classification.call
    assert rows["Nuclei scored"].startswith(str(session.summary.n_nuclei))


def test_export_then_load_gives_the_same_reviewed_state(session, tmp_path):
    session.exclude_nucleus("f1", _scored_label(session))
    session.delete_signal("f1", _signal_in_scored_nucleus(session, "her2"))
    case_dir = write_reviewed_case(tmp_path / "case1", session)
    assert not session.dirty
    record = json.loads((case_dir / "case.json").read_text())
    assert [e["action"] for e in record["review"]["edits"]] == ["exclude nucleus", "delete signal"]
    first = record["review"]["edits"][0]
    assert first["before"] is True
    assert first["after"] is False
    assert first["reviewer"] == "Dr A"
    assert first["time"]
    assert (case_dir / "labels" / "f1.tif").is_file()
    reopened = load_reviewed_case(case_dir)
    pd.testing.assert_frame_equal(reopened.cells, session.cells)
    pd.testing.assert_frame_equal(reopened.spots, session.spots)
    assert reopened.classification == session.classification
    assert reopened.edits == session.edits
    assert reopened.overrides == session.overrides
    np.testing.assert_array_equal(reopened.field("f1").image.her2, session.field("f1").image.her2)


def test_import_ishcount_does_not_import_napari():
    gui = "{'napari', 'qtpy', 'magicgui', 'PySide6'}"
    code = f"import sys, ishcount, ishcount.analyze; print(sorted({gui} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_batch_run_opens_for_review_and_saves_in_the_same_format(tmp_path):
    from ishcount.pipeline import run_batch
    from ishcount.synthetic import make_case, write_case

    case = make_case("group2", n_fields=2, shape=(320, 320), spacing_um=(0.16, 0.16), rng=3)
    write_case(case, tmp_path / "in" / "caseA")
    [outcome] = run_batch([tmp_path / "in" / "caseA"], tmp_path / "out", workers=1)
    case_dir = tmp_path / "out" / "caseA"
    session = load_reviewed_case(case_dir)
    assert sorted(session.fields) == sorted(f.image.name for f in case.fields)
    assert session.summary.ratio == pytest.approx(outcome.record["classification"]["ratio"])
    assert all(fld.image is not None for fld in session.fields.values())
    name = sorted(session.fields)[0]
    label = int(session.field(name).cells.loc[lambda c: c["is_scored"], "label"].iloc[0])
    session.exclude_nucleus(name, label)
    write_reviewed_case(case_dir, session)
    record = json.loads((case_dir / "case.json").read_text())
    assert record["review"]["reviewed"] is True
    outlines = json.loads((case_dir / "labels" / f"{name}.geojson").read_text())
    classes = {
        f["properties"]["measurements"]["Label"]: f["properties"]["classification"]["name"]
        for f in outlines["features"]
        if f["geometry"]["type"] == "Polygon"
    }
    assert classes[label] == f"Excluded: {EXCLUDED_BY_REVIEWER}", "QuPath sees the review"
    assert [e["action"] for e in record["review"]["edits"]] == ["exclude nucleus"]
    assert (
        record["summary"]["counts"]["n_nuclei"]
        == outcome.record["summary"]["counts"]["n_nuclei"] - 1
    )
    page = (case_dir / "report.html").read_text()
    assert "exclude nucleus" in page
    assert "qualified pathologist" in page


def test_the_scenes_of_a_czi_file_open_for_review_each_as_its_field(tmp_path):
    pyczi = pytest.importorskip("pylibCZIrw.czi")
    from ishcount.pipeline import run_batch
    from ishcount.synthetic import make_field

    fields = [make_field("group2", shape=(256, 256), rng=seed) for seed in (6, 7)]
    path = tmp_path / "in" / "slide.czi"
    path.parent.mkdir()
    with pyczi.create_czi(str(path)) as document:
        for scene, fld in enumerate(fields):
            for c, name in enumerate(("dapi", "her2", "cep17")):
                plane = fld.image.channel(name)[..., None]
                document.write(data=plane, plane={"C": c, "Z": 0, "T": 0}, scene=scene)
        names = {0: "DAPI", 1: "HER2", 2: "CEP17"}
        document.write_metadata(channel_names=names, scale_x=1e-7, scale_y=1e-7)
    run_batch([path], tmp_path / "out", workers=1)
    session = load_reviewed_case(tmp_path / "out" / "slide")
    assert sorted(session.fields) == ["slide_s01", "slide_s02"]
    for fld, name in zip(fields, ("slide_s01", "slide_s02"), strict=True):
        np.testing.assert_array_equal(session.field(name).image.her2, fld.image.her2)
    with pytest.warns(UserWarning, match="opened the first of its 2 scenes"):
        layers = {kwargs["name"]: data for data, kwargs, _ in read_image_layers(path)}
    np.testing.assert_array_equal(layers["HER2"], fields[0].image.her2)


def test_a_field_read_with_channels_given_to_the_run_opens_for_review(tmp_path):
    import tifffile

    from ishcount.pipeline import RunOptions, run_batch
    from ishcount.synthetic import make_field

    fld = make_field("group2", shape=(256, 256), rng=8)
    stack = np.stack([fld.image.channel(c) for c in ("her2", "cep17", "dapi")])
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "f1.tif", stack, photometric="minisblack")  # no names
    options = RunOptions(channels={"dapi": 2, "her2": 0, "cep17": 1}, spacing_um=0.1)
    run_batch([tmp_path / "in"], tmp_path / "out", options=options, workers=1)
    session = load_reviewed_case(tmp_path / "out" / "in")
    np.testing.assert_array_equal(session.field("f1").image.dapi, fld.image.dapi)


def test_saturated_signals_are_outlined_apart():
    napari = pytest.importorskip("napari")
    from napari.utils.colormaps.standardize_color import transform_color

    from ishcount._napari._layers import SATURATED_COLOR, result_layer_data
    from ishcount.image import FishImage

    field = make_field("group1", shape=(512, 512), rng=4)
    her2 = np.minimum(np.asarray(field.image.her2, float) * 6, 4095).astype(np.uint16)
    image = FishImage(
        field.image.dapi, her2, field.image.cep17, spacing_um=(0.1, 0.1), name="exposed"
    )
    session = ReviewSession.from_results([analyze_image(image)], images=[image])
    layers = {kw["name"]: (data, kw) for data, kw, _ in result_layer_data(session, "exposed")}
    coords, kwargs = layers["HER2 clusters"]
    clusters = napari.layers.Points(coords, **kwargs)
    saturated = clusters.features["saturated"].to_numpy(bool)
    assert 0 < saturated.sum() < len(saturated)
    white = transform_color(SATURATED_COLOR)[0]
    outlined = np.all(np.isclose(clusters.border_color, white), axis=1)
    np.testing.assert_array_equal(outlined, saturated)


def test_a_region_given_to_a_batch_run_holds_through_the_review(tmp_path):
    import imagecodecs

    from ishcount.pipeline import run_batch
    from ishcount.synthetic import make_case, write_case

    case = make_case("group2", n_fields=1, shape=(320, 320), spacing_um=(0.16, 0.16), rng=4)
    folder = tmp_path / "in" / "caseR"
    write_case(case, folder)
    name = case.fields[0].image.name
    roi = np.zeros((320, 320), np.uint8)
    roi[:, :160] = 1
    (folder / f"{name}.roi.png").write_bytes(imagecodecs.png_encode(roi))
    run_batch([folder], tmp_path / "out", workers=1)
    session = load_reviewed_case(tmp_path / "out" / "caseR")
    np.testing.assert_array_equal(session.field(name).roi, roi > 0)
    cut = session.cells["exclusion_reason"] == "touches ROI edge"
    assert cut.any()
    session.recount(name)  # as after an edited signal: the region still applies
    assert (session.cells["exclusion_reason"] == "touches ROI edge").sum() == cut.sum()
    case_dir = tmp_path / "out" / "caseR"
    layers = {kwargs["name"]: (data, kind) for data, kwargs, kind in read_case_layers(case_dir)}
    outline, kind = layers["region of interest"]  # shown when the case is opened for review
    assert kind == "labels"
    assert outline[:, 158:160].all()  # a 2 px line along the region's edge, inside it
    assert outline[:, 160:].sum() == 0
    write_reviewed_case(case_dir, session)  # the export still names the mask
    record = json.loads((case_dir / "case.json").read_text())
    assert record["images"][0]["masks"] == {"roi": str((folder / f"{name}.roi.png").resolve())}
    assert f"Region of interest: {name}.roi.png" in (case_dir / "report.html").read_text()


def test_a_bad_mask_beside_an_image_does_not_keep_it_from_opening(tmp_path):
    from ishcount._napari._io import _write_image_copy, read_image_layers

    image = make_field("group5", shape=(128, 128), rng=2).image
    _write_image_copy(image, tmp_path / "f1.ome.tif")
    (tmp_path / "f1.roi.tif").write_bytes(b"II*\x00 not a tiff")
    with pytest.warns(UserWarning, match=r"f1\.roi\.tif: .*the image opens without it"):
        layers = read_image_layers(tmp_path / "f1.ome.tif")
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["DAPI", "HER2", "CEP17"]


def test_notes_about_the_inputs_hold_through_the_review(tmp_path):
    """Fields of 0.16 um pixels read as 0.065 um, one of them from a JPEG: the case notes
    both, and so does the reviewed case, whose recount cannot see the files or the signal
    sizes again."""
    import imagecodecs

    from ishcount.pipeline import RunOptions, run_batch
    from ishcount.synthetic import make_case, write_case

    case = make_case("group1", n_fields=2, shape=(320, 320), spacing_um=(0.16, 0.16), rng=5)
    folder = tmp_path / "in" / "caseJ"
    write_case(case, folder)
    image = case.fields[1].image
    (folder / f"{image.name}.ome.tif").unlink()
    rgb = np.stack([image.channel(c) >> 4 for c in ("her2", "cep17", "dapi")], -1)
    (folder / f"{image.name}.jpg").write_bytes(imagecodecs.jpeg8_encode(rgb.astype(np.uint8)))
    [outcome] = run_batch([folder], tmp_path / "out", options=RunOptions(spacing_um=0.065))

    def input_notes(notes):
        return [n for n in notes if "lossy" in n or n.startswith("Signals measure")]

    first = input_notes(outcome.record["summary"]["notes"])
    assert len(first) == 2
    session = load_reviewed_case(tmp_path / "out" / "caseJ")
    assert input_notes(session.summary.notes) == first
    write_reviewed_case(tmp_path / "out" / "caseJ", session)
    record = json.loads((tmp_path / "out" / "caseJ" / "case.json").read_text())
    assert input_notes(record["summary"]["notes"]) == first


def test_a_field_with_fibres_is_named_in_the_review_and_its_export(analysed, tmp_path):
    """The maxima on lines a field's detection set aside travel with it: the reviewed case
    names the field, and so does the case it exports."""
    image, result = analysed
    detection = {**result.detection, "her2": {**result.detection["her2"], "ridge_maxima": 300}}
    fibrous = dataclasses.replace(result, detection=detection)
    session = ReviewSession.from_results([fibrous], images=[image])
    (note,) = [n for n in session.summary.notes if "fibres" in n]
    assert note.startswith("1 field shows autofluorescent fibres (f1, 300 maxima")
    assert not any("fibres" in n for n in ReviewSession.from_results([result]).summary.notes)
    write_reviewed_case(tmp_path / "case", session)
    assert [n for n in load_reviewed_case(tmp_path / "case").summary.notes if "fibres" in n] == [
        note
    ]


def test_a_field_with_over_exposed_dapi_is_named_in_the_review_and_its_export(analysed, tmp_path):
    image, result = analysed
    over = dataclasses.replace(result, dapi_clipped=0.4)
    session = ReviewSession.from_results([over], images=[image])
    (note,) = [n for n in session.summary.notes if "over-exposed" in n]
    assert note.startswith("1 field has over-exposed DAPI (f1, 40% of the nuclear area")
    assert not any("over-exposed" in n for n in ReviewSession.from_results([result]).summary.notes)
    write_reviewed_case(tmp_path / "case", session)
    reopened = load_reviewed_case(tmp_path / "case").summary.notes
    assert [n for n in reopened if "over-exposed" in n] == [note]


def test_probe_layers_are_shown_where_their_signals_were_counted(tmp_path):
    """A HER2 channel the analysis moved back by its shift against DAPI is shown translated
    back too, so that its signals lie under their marks."""
    import tifffile

    from ishcount._napari._io import read_case_layers
    from ishcount._napari._layers import image_layer_data
    from ishcount.pipeline import run_batch

    image = make_field("group1", shape=(64, 64), rng=1).image
    layers = image_layer_data(image, shifts={"her2": (4, 3), "cep17": None})
    translate = {kw["name"]: kw.get("translate") for _, kw, _ in layers}
    assert translate["HER2"] == pytest.approx((-0.4, -0.3))
    assert translate["DAPI"] is None
    assert translate["CEP17"] is None

    field = make_field("group2", shape=(384, 384), spacing_um=0.16, rng=3).image
    stack = np.stack([np.asarray(field.channel(c)) for c in ("dapi", "her2", "cep17")])
    stack[1] = np.roll(stack[1], (3, -2), axis=(0, 1))
    folder = tmp_path / "in" / "caseS"
    folder.mkdir(parents=True)
    meta = {"axes": "CYX", "Channel": {"Name": ["DAPI", "HER2", "CEP17"]}}
    meta.update(PhysicalSizeX=0.16, PhysicalSizeY=0.16)
    tifffile.imwrite(folder / "f1.ome.tif", stack, ome=True, metadata=meta)
    [outcome] = run_batch([folder], tmp_path / "out", workers=1)
    assert outcome.record["images"][0]["probe_shift_px"]["her2"] == [3, -2]
    layers = read_case_layers(tmp_path / "out" / "caseS")
    her2 = next(kw for _, kw, _ in layers if kw["name"].startswith("HER2"))
    assert her2["translate"] == pytest.approx((-0.48, 0.32))
