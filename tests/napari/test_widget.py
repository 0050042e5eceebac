"""The napari plugin in a viewer: reader, samples, analysis widget, review, export, screenshot."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from ishcount._napari._io import _write_image_copy
from ishcount._napari._review import EXCLUDED_BY_REVIEWER
from ishcount._napari._widget import IshcountWidget
from ishcount.score import score_case
from ishcount.synthetic import make_field

pytestmark = pytest.mark.napari
TIMEOUT_MS = 60_000


def _analysed_widget(viewer, qtbot, sample="group1"):
    viewer.open_sample("ishcount", sample)
    widget = IshcountWidget(viewer)
    viewer.window.add_dock_widget(widget)
    worker = widget.run_analysis()
    assert worker is not None
    qtbot.waitUntil(lambda: widget.session is not None, timeout=TIMEOUT_MS)
    return widget


def test_reader_gives_three_channel_layers_with_scale(make_napari_viewer, tmp_path):
    image = make_field("group5", shape=(128, 160), rng=1, spacing_um=(0.08, 0.1)).image
    path = tmp_path / "field.ome.tif"
    _write_image_copy(image, path)
    viewer = make_napari_viewer()
    viewer.open(path, plugin="ishcount")
    assert [layer.name for layer in viewer.layers] == ["DAPI", "HER2", "CEP17"]
    for layer, colormap in zip(viewer.layers, ("blue", "red", "green"), strict=True):
        np.testing.assert_allclose(layer.scale, (0.08, 0.1))
        assert layer.colormap.name == colormap
        assert layer.blending == "additive"
        low, high = layer.contrast_limits
        assert image.dapi.min() <= low < high <= image.dapi.max() or layer.name != "DAPI"
    np.testing.assert_array_equal(viewer.layers["HER2"].data, image.her2)


def test_sample_data(make_napari_viewer):
    viewer = make_napari_viewer()  # one viewer: see docs/napari.md on the PySide6 crash
    for key, ndim in [("group3", 2), ("heterogeneous", 2), ("zstack", 3)]:
        viewer.layers.clear()
        viewer.open_sample("ishcount", key)
        assert [layer.name for layer in viewer.layers] == ["DAPI", "HER2", "CEP17"]
        assert all(layer.ndim == ndim for layer in viewer.layers)
        assert viewer.layers["HER2"].data.std() > 0


def test_widget_analysis_gives_layers_and_features(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = _analysed_widget(viewer, qtbot)
    names = [layer.name for layer in viewer.layers]
    assert names[3:] == ["nuclei", "HER2 signals", "CEP17 signals", "HER2 clusters"]
    nuclei = viewer.layers["nuclei"]
    cells = widget.session.cells
    assert len(nuclei.features) == len(cells) > 0
    assert set(nuclei.features["state"]) <= {"scored", "amplified", "excluded"}
    np.testing.assert_array_equal(nuclei.features["n_her2"], cells["n_her2"])
    np.testing.assert_allclose(nuclei.scale, viewer.layers["DAPI"].scale)
    her2 = viewer.layers["HER2 signals"]
    assert len(her2.data) == len(widget.session.spots.query("channel == 'her2' and not is_cluster"))
    assert {"spot_id", "copies", "label"} <= set(her2.features.columns)
    assert widget.table.rowCount() == len(cells)
    assert str(widget.session.summary.n_nuclei) in widget.summary_label.text()


def test_excluding_a_nucleus_and_deleting_a_signal_update_the_summary(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = _analysed_widget(viewer, qtbot)
    session = widget.session
    nuclei = viewer.layers["nuclei"]
    cells = session.cells.query("is_scored")
    label = int(cells["label"].iloc[0])
    centre = cells[["centroid_y", "centroid_x"]].iloc[0].to_numpy(float)
    world = centre * np.asarray(nuclei.scale)
    assert widget.toggle_nucleus_at(world) == label
    # delete, through the points layer, one HER2 signal of another scored nucleus
    her2 = viewer.layers["HER2 signals"]
    other = set(session.cells.query("is_scored")["label"])
    row = int(np.flatnonzero(her2.features["label"].isin(other))[0])
    spot_id = int(her2.features["spot_id"].iloc[row])
    her2.selected_data = {row}
    her2.remove_selected()
    assert spot_id not in set(session.spots["spot_id"])
    # the summary is exactly score_case of the edited tables
    edited = session.cells
    row_of = edited.set_index("label").loc[label]
    assert not row_of["is_scored"]
    assert row_of["exclusion_reason"] == EXCLUDED_BY_REVIEWER
    expected = score_case(edited, spots=session.spots, rng=session.seed)
    assert session.summary.counts == expected.counts
    assert f"{expected.mean_her2:.2f}" in widget.summary_label.text()
    assert [e.action for e in session.edits] == ["exclude nucleus", "delete signal"]
    state = nuclei.features.set_index("label").loc[label, "state"]
    assert state == "excluded"
    # clicking a table row selects the nucleus
    widget._on_row_clicked(0, 0)
    assert nuclei.selected_label == int(widget.table.item(0, 0).text())


def test_cluster_copies_correction(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = _analysed_widget(viewer, qtbot)
    clusters = viewer.layers["HER2 clusters"]
    total = widget.session.summary.total_her2
    clusters.add([[200.0, 200.0]])  # reviewer marks a cluster the analysis missed
    assert clusters.features["spot_id"].iloc[-1] >= 0
    clusters.selected_data = {len(clusters.data) - 1}
    assert widget.set_selected_copies(9) == 1
    spots = widget.session.spots.set_index("spot_id")
    new_id = int(clusters.features["spot_id"].iloc[-1])
    assert spots.loc[new_id, "copies"] == 9
    assert clusters.features["copies"].iloc[-1] == 9
    inside = spots.loc[new_id, "label"] in set(widget.session.cells.query("is_scored")["label"])
    assert widget.session.summary.total_her2 == total + (9 if inside else 0)


def test_export_then_reopen_gives_the_same_review(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget = _analysed_widget(viewer, qtbot)
    widget.reviewer_edit.setText("Dr B")
    label = int(widget.session.cells.query("is_scored")["label"].iloc[0])
    widget.session.exclude_nucleus(widget.field, label)
    widget.refresh()
    case_dir = widget.export_case(tmp_path / "case7")
    names = [layer.name for layer in viewer.layers]
    scale = viewer.layers["HER2"].scale
    saved = widget.session
    viewer.layers.clear()
    viewer.open(case_dir, plugin="ishcount")  # the widget picks up the reopened review
    assert [layer.name for layer in viewer.layers] == names
    reopened = widget.session
    assert reopened is not saved
    assert reopened.cells.equals(saved.cells)
    assert reopened.spots.equals(saved.spots)
    assert reopened.classification == saved.classification
    assert reopened.edits == saved.edits
    assert reopened.edits[0].reviewer == "Dr B"
    np.testing.assert_allclose(viewer.layers["HER2"].scale, scale)


def test_unsaved_review_is_autosaved_and_restored(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget = _analysed_widget(viewer, qtbot)
    case_dir = widget.export_case(tmp_path / "case8")
    label = int(widget.session.cells.query("is_scored")["label"].iloc[0])
    widget.session.exclude_nucleus(widget.field, label)
    widget.refresh()  # dirty: autosaved beside the results
    edits = list(widget.session.edits)
    viewer.layers.clear()
    with pytest.warns(UserWarning, match="unsaved review"):
        viewer.open(case_dir, plugin="ishcount")
    assert widget.session.edits == edits
    assert widget.session.edits[-1].action == "exclude nucleus"


def test_screenshot_after_analysis_shows_signals(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    _analysed_widget(viewer, qtbot)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    from skimage.io import imsave

    # kept for a person to look at: pytest --basetemp=DIR keeps it in DIR
    imsave(tmp_path / "napari_screenshot.png", shot, check_contrast=False)
    assert shot[..., :3].std() > 5  # not blank
    for name in ("HER2 signals", "CEP17 signals", "HER2 clusters"):
        assert viewer.layers[name].visible
    for name in ("HER2 signals", "CEP17 signals"):
        viewer.layers[name].visible = False
    hidden = viewer.screenshot(canvas_only=True, flash=False)
    changed = np.any(shot[..., :3] != hidden[..., :3], axis=-1).mean()
    assert changed > 0.001  # the signal markers cover a visible part of the canvas


def test_roi_mask_maps_world_coordinates_to_image_pixels():
    from napari.layers import Image, Shapes

    from ishcount._napari._widget import roi_mask

    image = Image(np.zeros((100, 120)), scale=(0.1, 0.1))
    # drawn in a layer of unit scale: world rectangle 2-4 um (y) x 3-6 um (x)
    shapes = Shapes([np.array([[2.0, 3.0], [2.0, 6.0], [4.0, 6.0], [4.0, 3.0]])])
    mask = roi_mask(shapes, image, (100, 120))
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max()) in {(20, 40), (20, 39)}
    assert (cols.min(), cols.max()) in {(30, 60), (30, 59)}
    assert roi_mask(Shapes(), image, (100, 120)) is None


def test_a_shape_inside_another_is_a_hole_and_overlapping_shapes_add_up():
    from napari.layers import Image, Shapes

    from ishcount._napari._widget import roi_mask

    def box(y0, x0, y1, x1):
        return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float)

    image = Image(np.zeros((100, 100)))
    outer, hole, island, beside = (
        box(10, 10, 90, 90),
        box(30, 30, 70, 70),
        box(45, 45, 55, 55),
        box(5, 80, 40, 98),
    )
    mask = roi_mask(Shapes([outer, hole, island, beside]), image, (100, 100))
    assert mask[20, 20]
    assert not mask[35, 35], "the inner shape is cut out"
    assert mask[50, 50], "a shape inside the hole is scored again"
    assert mask[20, 95], "an overlapping shape adds to the region"
    assert mask[20, 85]
    assert not mask[95, 50]


def test_zstack_analysis_gives_3d_signal_layers(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = _analysed_widget(viewer, qtbot, sample="zstack")
    assert viewer.layers["nuclei"].ndim == 2
    her2 = viewer.layers["HER2 signals"]
    assert her2.ndim == 3
    np.testing.assert_allclose(her2.scale, viewer.layers["HER2"].scale)
    label = int(widget.session.cells.query("is_scored")["label"].iloc[0])
    cells = widget.session.cells.set_index("label")
    centre = cells.loc[label, ["centroid_y", "centroid_x"]].to_numpy(float)
    n_her2 = cells.loc[label, "n_her2"]
    her2.add([[4.0, *centre]])  # a missed signal in plane 4 of that nucleus
    added = widget.session.spots.iloc[-1]
    assert added["z"] == 4.0
    assert added["label"] == label
    assert widget.session.cells.set_index("label").loc[label, "n_her2"] == n_her2 + 1


def test_multi_field_case_folder_is_reviewed_field_by_field(make_napari_viewer, tmp_path):
    from ishcount._napari._io import write_reviewed_case
    from ishcount._napari._review import ReviewSession
    from ishcount.analyze import analyze_image

    images = [make_field("group5", shape=(256, 256), rng=i, name=f"f{i}").image for i in (1, 2)]
    session = ReviewSession.from_results([analyze_image(im) for im in images], images=images)
    case_dir = write_reviewed_case(tmp_path / "two", session)
    viewer = make_napari_viewer()
    widget = IshcountWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.open(case_dir, plugin="ishcount")
    assert widget.session is not None
    assert [widget.field_box.itemText(i) for i in range(2)] == ["f1", "f2"]
    assert "nuclei [f2]" in viewer.layers
    assert widget.session.summary.n_fields == 2
    widget.field_box.setCurrentText("f2")
    assert widget.field == "f2"
    assert viewer.layers["nuclei [f2]"].visible
    assert not viewer.layers["nuclei [f1]"].visible
    before = widget.session.summary.n_nuclei
    cells = widget.session.field("f2").cells.query("is_scored")
    world = cells[["centroid_y", "centroid_x"]].iloc[0].to_numpy(float) * (0.1, 0.1)
    assert widget.toggle_nucleus_at(world) == int(cells["label"].iloc[0])
    assert widget.session.summary.n_nuclei == before - 1
    assert widget.session.edits[-1].image == "f2"
    assert widget.table.rowCount() == len(widget.session.field("f2").cells)


def test_nuclei_from_a_labels_layer_are_used(make_napari_viewer, qtbot):
    # Nuclei segmented by another plugin (Cellpose, StarDist) are counted instead of
    # ishcount's own segmentation: here the generator's true nuclei.
    from ishcount._napari._layers import image_layer_data

    field = make_field("group2", shape=(256, 256), rng=6)
    viewer = make_napari_viewer()
    for data, kwargs, kind in image_layer_data(field.image):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.add_labels(field.nuclei, name="cellpose", scale=viewer.layers["DAPI"].scale)
    widget = IshcountWidget(viewer)
    assert widget.nuclei_box.currentText() == "segment DAPI (ishcount)"
    widget.nuclei_box.setCurrentText("cellpose")
    assert widget.run_analysis() is not None
    qtbot.waitUntil(lambda: widget.session is not None, timeout=TIMEOUT_MS)
    used = widget.session.field(widget.field).labels
    for label in np.unique(used[used > 0]):  # each nucleus is one of the given ones, whole
        under = np.unique(field.nuclei[used == label])
        assert len(under) == 1
        np.testing.assert_array_equal(used == label, field.nuclei == under[0])

    viewer.add_labels(np.zeros((100, 100), np.int32), name="other size")
    widget.nuclei_box.setCurrentText("other size")
    assert widget.run_analysis() is None
    assert "the nuclei layer 'other size' is 100x100 pixels" in widget.status_label.text()


def test_masks_beside_an_opened_image_become_its_nuclei_and_region(
    make_napari_viewer, qtbot, tmp_path
):
    import imagecodecs
    import tifffile

    field = make_field("group2", shape=(256, 256), rng=7)
    _write_image_copy(field.image, tmp_path / "f1.ome.tif")
    tifffile.imwrite(tmp_path / "f1.nuclei.tif", field.nuclei.astype(np.uint16))
    roi = np.zeros((256, 256), np.uint8)
    roi[:, :128] = 255
    (tmp_path / "f1.roi.png").write_bytes(imagecodecs.png_encode(roi))
    viewer = make_napari_viewer()
    viewer.open(tmp_path / "f1.ome.tif", plugin="ishcount")
    assert [layer.name for layer in viewer.layers][3:] == ["given nuclei", "given ROI"]
    widget = IshcountWidget(viewer)
    assert widget.nuclei_box.currentText() == "given nuclei"  # chosen for the user
    assert widget.roi_box.currentText() == "given ROI"
    assert widget.run_analysis() is not None
    qtbot.waitUntil(lambda: widget.session is not None, timeout=TIMEOUT_MS)
    used = widget.session.field(widget.field).labels
    assert not used[:, 128 + 90 :].any()  # nuclei wholly outside the region are gone
    for label in np.unique(used[used > 0]):  # the rest are the given nuclei, whole
        under = np.unique(field.nuclei[used == label])
        assert len(under) == 1
        np.testing.assert_array_equal(used == label, field.nuclei == under[0])
    cells = widget.session.cells
    assert (cells["exclusion_reason"] == "touches ROI edge").any()


def test_a_shifted_probe_layer_is_moved_back_after_the_analysis(make_napari_viewer, qtbot):
    from ishcount._napari._layers import image_layer_data

    image = make_field("group2", shape=(384, 384), rng=3).image
    viewer = make_napari_viewer()
    for data, kwargs, kind in image_layer_data(image):
        if kwargs["name"] == "HER2":
            data = np.roll(np.asarray(data), (2, 3), axis=(0, 1))
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = IshcountWidget(viewer)
    assert widget.run_analysis() is not None
    qtbot.waitUntil(lambda: widget.session is not None, timeout=TIMEOUT_MS)
    assert widget.session.field(widget.field).probe_shift_px["her2"] == (2, 3)
    np.testing.assert_allclose(viewer.layers["HER2"].translate, (-0.2, -0.3))
    np.testing.assert_allclose(viewer.layers["CEP17"].translate, (0, 0))
