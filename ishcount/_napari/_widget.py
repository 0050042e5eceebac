"""The dock widget: run the analysis on image layers, then review and export the case.

A thin Qt view of :class:`ishcount._napari._review.ReviewSession`. Everything it shows is
computed by public ishcount functions (``analyze_image``, ``assign_spots``, ``count_spots``,
``score_case``, ``classify``) through the session; the widget only moves data between
napari layers and the session.

Review gestures: double-click a nucleus in the nuclei layer to exclude or include it; add,
delete or move points in the HER2, CEP17 and cluster layers; select cluster points and press
*Set copies*; click a row of the nuclei table to go to that nucleus.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Points, Shapes
from napari.qt.threading import thread_worker
from napari.utils.events import Event
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ishcount.analyze import analyze_image
from ishcount.config import DEFAULT_PIPELINE, available_pipelines, load_pipeline
from ishcount.image import FishImage
from ishcount.rules import IHC_SCORES

from ._io import AUTOSAVE_DIR, autosave_review, write_reviewed_case
from ._layers import (
    POINT_FEATURES,
    RESULT_LAYERS,
    SIGNAL_SIZE_UM,
    layer_name,
    nuclei_features,
    nucleus_colormap,
    result_layer_data,
    undone_shift,
)
from ._review import SIGNAL_KINDS, ReviewSession, summary_rows

NONE = "(none)"


def _tag(layer: Any, key: str) -> Any:
    """What ishcount noted on a layer it made (``"field"``, ``"role"``; None for others)."""
    return layer.metadata.get("ishcount", {}).get(key)


#: The nuclei choice that segments DAPI; the others are 2D Labels layers (Cellpose, StarDist).
SEGMENT = "segment DAPI (ishcount)"
TABLE_COLUMNS = ("label", "state", "n_her2", "n_cep17", "area_um2", "exclusion_reason")
_CHANNEL_HINTS = {"dapi": ("dapi", "hoechst", "nuc"), "her2": ("her2", "erbb2"), "cep17": ("cep",)}


def guess_layer(names: list[str], channel: str) -> str:
    """Return the layer name that best matches a channel, else the first name or ``(none)``.

    Examples
    --------
    >>> guess_layer(["img DAPI", "HER2", "CEP17"], "cep17")
    'CEP17'
    """
    for name in names:
        if any(hint in name.lower() for hint in _CHANNEL_HINTS[channel]):
            return name
    return NONE


def roi_mask(shapes: Shapes, image: Image, shape_yx: tuple[int, int]) -> np.ndarray | None:
    """Rasterise a Shapes layer into a boolean ROI in the pixel grid of an image layer.

    Shapes that overlap add up; a shape drawn wholly inside another cuts a hole in it (an
    area inside the region not to score, such as in-situ carcinoma within the invasive
    tumour), and a shape inside that hole is scored again: a pixel is in the region when
    the smallest shape around it lies inside an even number of others.
    """
    if len(shapes.data) == 0:
        return None
    scale_s, shift_s = np.asarray(shapes.scale)[-2:], np.asarray(shapes.translate)[-2:]
    scale_i, shift_i = np.asarray(image.scale)[-2:], np.asarray(image.translate)[-2:]
    data = [
        (np.asarray(v, float)[:, -2:] * scale_s + shift_s - shift_i) / scale_i for v in shapes.data
    ]
    pixels = Shapes(data, shape_type=list(shapes.shape_type))
    masks = np.asarray(pixels.to_masks(mask_shape=shape_yx), dtype=bool)
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    depth = [  # how many other, larger shapes hold each shape whole
        sum(
            1
            for j, other in enumerate(masks)
            if j != i and areas[j] > areas[i] and not (mask & ~other).any()
        )
        for i, mask in enumerate(masks)
    ]
    region = np.zeros(shape_yx, dtype=bool)
    for level in sorted(set(depth)):  # outermost first, then each nested level over it
        layer = np.any([m for m, d in zip(masks, depth, strict=True) if d == level], axis=0)
        region = region | layer if level % 2 == 0 else region & ~layer
    return region


@thread_worker
def _analyse(
    image: FishImage,
    params: Any,
    roi: np.ndarray | None,
    options: dict[str, Any],
    nuclei: np.ndarray | None = None,
):
    yield "segmenting nuclei and detecting signals"
    result = analyze_image(image, params=params, labels=nuclei, roi=roi)
    yield "scoring the case"
    session = ReviewSession.from_results(
        [result], images=[image], rois=[roi], params=params, **options
    )
    _ = session.classification  # computed here, off the GUI thread
    return session


class IshcountWidget(QWidget):
    """Dock widget: analysis settings, live summary, nuclei table, review tools and export.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer (injected by napari).
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: ReviewSession | None = None
        self.field: str | None = None
        self.case_dir: Path | None = None
        self.autosave_dir: Path | None = None
        self.layers: dict[str, Any] = {}
        self._worker: Any = None
        self._build()
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.viewer.layers.events.removed.connect(self._refresh_choices)
        self._refresh_choices()
        self._pending: tuple[ReviewSession, Any] | None = None
        for layer in list(self.viewer.layers):
            self._adopt_session(layer)
        self._bind_pending()

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.channel_boxes = {ch: QComboBox() for ch in ("dapi", "her2", "cep17")}
        for channel, box in self.channel_boxes.items():
            form.addRow(f"{channel.upper()} layer", box)
        self.nuclei_box = QComboBox()
        self.nuclei_box.setToolTip("Segment DAPI, or take the nuclei of a Labels layer")
        form.addRow("Nuclei", self.nuclei_box)
        self.pipeline_box = QComboBox()
        self.pipeline_box.addItems(available_pipelines())
        self.pipeline_box.setCurrentText(DEFAULT_PIPELINE)
        self.pipeline_box.currentTextChanged.connect(self._load_pipeline_defaults)
        form.addRow("Pipeline", self.pipeline_box)
        self.snr_spin = _spin(1.0, 50.0, 5.0, 0.5, "signal threshold (SNR)")
        self.area_spin = _spin(1.0, 1000.0, 25.0, 5.0, "smallest scored nucleus (µm²)")
        form.addRow("Signal threshold (SNR)", self.snr_spin)
        form.addRow("Min nucleus area (µm²)", self.area_spin)
        self.ihc_box = QComboBox()
        self.ihc_box.addItems(["not given", *IHC_SCORES])
        self.ihc_box.currentTextChanged.connect(self._on_ihc_changed)
        form.addRow("IHC score", self.ihc_box)
        self.roi_box = QComboBox()
        form.addRow("ROI", self.roi_box)
        self.reviewer_edit = QLineEdit()
        self.reviewer_edit.setPlaceholderText("name for the audit trail")
        self.reviewer_edit.textChanged.connect(self._on_reviewer_changed)
        form.addRow("Reviewer", self.reviewer_edit)
        self.field_box = QComboBox()
        self.field_box.currentTextChanged.connect(self.show_field)
        form.addRow("Field under review", self.field_box)
        layout.addLayout(form)
        layout.addLayout(self._build_run_row())
        self.summary_label = QLabel("Run the analysis or open an ishcount result folder.")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.summary_label)
        layout.addLayout(self._build_copies_row())
        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(TABLE_COLUMNS))
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.cellClicked.connect(self._on_row_clicked)
        layout.addWidget(self.table)
        self.export_button = QPushButton("Export reviewed case…")
        self.export_button.clicked.connect(self._on_export_clicked)
        self.export_button.setEnabled(False)
        layout.addWidget(self.export_button)
        self._load_pipeline_defaults(DEFAULT_PIPELINE)

    def _build_run_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.run_button = QPushButton("Run analysis")
        self.run_button.clicked.connect(self.run_analysis)
        self.roi_button = QPushButton("Draw ROI")
        self.roi_button.setToolTip("Add a Shapes layer in the image's scale to outline the ROI")
        self.roi_button.clicked.connect(self.add_roi_layer)
        self.progress = QProgressBar()
        self.progress.setRange(0, 3)
        self.status_label = QLabel("")
        for widget in (self.run_button, self.roi_button, self.progress):
            row.addWidget(widget)
        outer = QVBoxLayout()
        outer.addLayout(row)
        outer.addWidget(self.status_label)
        wrapper = QHBoxLayout()
        wrapper.addLayout(outer)
        return wrapper

    def _build_copies_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.copies_spin = QSpinBox()
        self.copies_spin.setRange(1, 99)
        self.copies_spin.setValue(6)
        self.copies_button = QPushButton("Set copies of selected clusters")
        self.copies_button.clicked.connect(
            lambda: self.set_selected_copies(self.copies_spin.value())
        )
        row.addWidget(QLabel("Cluster copies"))
        row.addWidget(self.copies_spin)
        row.addWidget(self.copies_button)
        return row

    # ------------------------------------------------------------------ layer choices

    def _image_names(self) -> list[str]:
        return [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]

    def _refresh_choices(self, event: Event | None = None) -> None:
        names = self._image_names()
        for channel, box in self.channel_boxes.items():
            current = box.currentText()
            box.blockSignals(True)
            box.clear()
            box.addItems([NONE, *names])
            box.setCurrentText(current if current in names else guess_layer(names, channel))
            box.blockSignals(False)
        regions = [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, Shapes) or _tag(layer, "role") == "given roi"
        ]
        self._refill(self.roi_box, [NONE, *regions], "given roi")
        labels = [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, Labels) and layer.ndim == 2
        ]
        self._refill(self.nuclei_box, [SEGMENT, *labels], "given nuclei")

    def _refill(self, box: QComboBox, names: list[str], given: str) -> None:
        """Offer ``names``; keep the choice, else take a mask read with the image (``given``
        role), else the first entry."""
        current = box.currentText()
        masks = [name for name in names[1:] if _tag(self.viewer.layers[name], "role") == given]
        box.blockSignals(True)
        box.clear()
        box.addItems(names)
        box.setCurrentText(current if current in names[1:] else (masks or names)[0])
        box.blockSignals(False)

    def _on_layer_inserted(self, event: Event) -> None:
        self._refresh_choices()
        self._adopt_session(event.value)
        self._bind_pending()

    def _adopt_session(self, layer: Any) -> None:
        """Note the review session a case folder reader attached to its nuclei layer."""
        session = layer.metadata.get("ishcount_session")
        if session is not None and session is not self.session:
            self._pending = (session, layer)

    def _bind_pending(self) -> None:
        """Take over a reopened review once the layers of all its fields are in the viewer."""
        if self._pending is None:
            return
        session, layer = self._pending
        names = [
            kw["name"] for name in session.fields for _, kw, _ in result_layer_data(session, name)
        ]
        if not all(name in self.viewer.layers for name in names):
            return
        self._pending = None
        self.case_dir = Path(layer.metadata["ishcount_case_dir"])
        self.autosave_dir = self.case_dir / AUTOSAVE_DIR
        if self.reviewer_edit.text():
            session.reviewer = self.reviewer_edit.text()
        self._start_review(session)

    def _load_pipeline_defaults(self, name: str) -> None:
        analysis = load_pipeline(name).analysis
        self.snr_spin.setValue(float(analysis.her2.get("threshold_snr", 5.0)))
        self.area_spin.setValue(float(analysis.count.min_area_um2))

    def add_roi_layer(self) -> Shapes:
        """Add a Shapes layer named ROI in the scale of the chosen DAPI layer and select it."""
        image = self._layer(self.channel_boxes["dapi"].currentText())
        scale = tuple(image.scale[-2:]) if image is not None else (1.0, 1.0)
        layer = self.viewer.add_shapes(
            name="ROI",
            scale=scale,
            edge_color="yellow",
            face_color="transparent",
            edge_width=2 * scale[-1],
        )
        layer.mode = "add_polygon"
        self.roi_box.setCurrentText(layer.name)
        return layer

    # ------------------------------------------------------------------ analysis

    def _layer(self, name: str) -> Any:
        return self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401

    def _image_from_layers(self) -> FishImage:
        layers = {ch: self._layer(box.currentText()) for ch, box in self.channel_boxes.items()}
        for channel in ("dapi", "her2"):
            if layers[channel] is None:
                raise ValueError(f"choose the {channel.upper()} image layer")
        ref = layers["her2"]
        name = ref.metadata.get("ishcount", {}).get("field") or ref.name
        arrays = {ch: None if lyr is None else np.asarray(lyr.data) for ch, lyr in layers.items()}
        return FishImage(**arrays, spacing_um=tuple(float(s) for s in ref.scale), name=name)

    def analysis_params(self) -> tuple[Any, str]:
        """Return the pipeline's parameters with the widget's overrides, and its rule set."""
        config = load_pipeline(self.pipeline_box.currentText())
        params = config.analysis
        snr = float(self.snr_spin.value())
        params = replace(
            params,
            her2={**params.her2, "threshold_snr": snr},
            cep17={**params.cep17, "threshold_snr": snr},
        )
        return params.with_count(min_area_um2=float(self.area_spin.value())), config.rule_set

    def _nuclei(self, image: FishImage) -> np.ndarray | None:
        """The chosen Labels layer's nuclei (None: segment DAPI); they must fit the image."""
        layer = self._layer(self.nuclei_box.currentText())
        if layer is None:
            return None
        labels = np.asarray(layer.data)
        if labels.shape != tuple(image.shape[-2:]):
            raise ValueError(
                f"the nuclei layer {layer.name!r} is {labels.shape[0]}x{labels.shape[1]} "
                f"pixels, the image {image.shape[-2]}x{image.shape[-1]}: choose labels made "
                "on this image"
            )
        return labels

    def _roi(self, image: FishImage) -> np.ndarray | None:
        layer = self._layer(self.roi_box.currentText())
        if layer is None:
            return None
        if isinstance(layer, Labels):  # a region mask read with the image
            region = np.asarray(layer.data) != 0
            if region.shape != tuple(image.shape[-2:]):
                raise ValueError(f"the ROI layer {layer.name!r} does not have the image's size")
            return region
        return roi_mask(
            layer, self._layer(self.channel_boxes["her2"].currentText()), image.shape[-2:]
        )

    def run_analysis(self) -> Any:
        """Start the analysis of the chosen layers in a worker thread; return the worker."""
        try:
            image = self._image_from_layers()
            params, rule_set = self.analysis_params()
            roi = self._roi(image)
            nuclei = self._nuclei(image)
        except ValueError as err:
            self.status_label.setText(str(err))
            return None
        ihc = self.ihc_box.currentText()
        options = {
            "rule_set": rule_set,
            "ihc": None if ihc == "not given" else ihc,
            "reviewer": self.reviewer_edit.text(),
        }
        self.run_button.setEnabled(False)
        self.progress.setValue(0)
        worker = _analyse(image, params, roi, options, nuclei)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_analysed)
        worker.errored.connect(self._on_failed)
        worker.finished.connect(lambda: self.run_button.setEnabled(True))
        self._worker = worker
        worker.start()
        return worker

    def _on_progress(self, message: str) -> None:
        self.progress.setValue(self.progress.value() + 1)
        self.status_label.setText(message + "…")

    def _on_failed(self, error: Exception) -> None:
        self.status_label.setText(f"analysis failed: {error}")
        show_error(f"ishcount: analysis failed: {error}")

    def _on_analysed(self, session: ReviewSession) -> None:
        self.progress.setValue(3)
        self.status_label.setText("done")
        field = next(iter(session.fields))
        for data, kwargs, kind in result_layer_data(session, field):
            if kwargs["name"] in self.viewer.layers:
                self.viewer.layers.remove(kwargs["name"])
            getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        for channel, shift in session.field(field).probe_shift_px.items():
            layer = self._layer(self.channel_boxes[channel].currentText())
            lateral = undone_shift(shift, layer.scale) if layer is not None else None
            if lateral is not None:
                layer.translate = (*np.asarray(layer.translate)[:-2], *lateral)
        self.case_dir = None
        self.autosave_dir = Path(tempfile.gettempdir()) / "ishcount" / field / AUTOSAVE_DIR
        self._start_review(session)

    # ------------------------------------------------------------------ review

    def _start_review(self, session: ReviewSession) -> None:
        self.session = session
        for name in session.fields:
            self._bind_field(name)
        self.field_box.blockSignals(True)
        self.field_box.clear()
        self.field_box.addItems(list(session.fields))
        self.field_box.blockSignals(False)
        self.show_field(next(iter(session.fields)))

    def _field_layers(self, field: str) -> dict[str, Any]:
        n_fields = len(self.session.fields)
        return {
            role: self._layer(layer_name(base, field, n_fields))
            for role, base in RESULT_LAYERS.items()
        }

    def _bind_field(self, field: str) -> None:
        layers = self._field_layers(field)
        nuclei = layers["nuclei"]
        nuclei.contour = 2  # outlines keep the signals inside visible
        if self._on_double_click not in nuclei.mouse_double_click_callbacks:
            nuclei.mouse_double_click_callbacks.append(self._on_double_click)
        for kind in SIGNAL_KINDS:
            layers[kind].events.data.connect(self._on_points_changed)

    def show_field(self, field: str) -> None:
        """Make ``field`` the one in the table and the view; hide the layers of other fields."""
        if self.session is None or field not in self.session.fields:
            return
        self.field = field
        self.layers = self._field_layers(field)
        for layer in self.viewer.layers:
            owner = _tag(layer, "field")
            if owner is not None and len(self.session.fields) > 1:
                layer.visible = owner == field
        self.field_box.setCurrentText(field)
        self.refresh()

    def _on_double_click(self, layer: Labels, event: Any) -> None:
        if self.session is not None and layer.metadata["ishcount"]["field"] == self.field:
            self.toggle_nucleus_at(event.position)

    def toggle_nucleus_at(self, world_position: Any) -> int:
        """Exclude or include the nucleus under a world position; return its label (0: none)."""
        nuclei = self.layers["nuclei"]
        label = self.session.label_at(self.field, nuclei.world_to_data(world_position))
        if label:
            self.session.toggle_nucleus(self.field, label)
            self.refresh()
        return label

    def _on_points_changed(self, event: Event) -> None:
        if str(event.action) not in ("added", "removed", "changed"):
            return
        layer = event.source
        field, kind = layer.metadata["ishcount"]["field"], layer.metadata["ishcount"]["role"]
        features = layer.features
        ids = self.session.sync_signals(
            field,
            kind,
            np.asarray(layer.data),
            features["spot_id"].to_numpy(),
            features["copies"].to_numpy(),
        )
        self._update_point_features(layer, ids)
        self.refresh()

    def _update_point_features(self, layer: Points, ids: np.ndarray) -> None:
        fld = self.session.field(layer.metadata["ishcount"]["field"])
        spots = fld.spots.set_index("spot_id")
        features = spots.loc[ids, [c for c in POINT_FEATURES if c != "spot_id"]].reset_index()
        layer.features = features
        layer.refresh_colors()
        if layer.metadata["ishcount"]["role"] == "clusters" and len(ids):
            base = SIGNAL_SIZE_UM / float(np.mean(fld.spacing_um[-2:]))
            layer.size = base * np.sqrt(features["copies"].to_numpy(float))
            layer.refresh_text()

    def set_selected_copies(self, copies: int) -> int:
        """Set the copies of the selected cluster points; return how many changed."""
        layer = self.layers.get("clusters")
        if layer is None or not layer.selected_data:
            self.status_label.setText("select cluster points first")
            return 0
        ids = layer.features["spot_id"].to_numpy()
        changed = sum(
            self.session.set_copies(self.field, int(ids[i]), copies) for i in layer.selected_data
        )
        self._update_point_features(layer, ids)
        self.refresh()
        return changed

    def select_nucleus(self, label: int) -> None:
        """Select a nucleus in the nuclei layer and centre the view on it."""
        nuclei = self.layers["nuclei"]
        cells = self.session.field(self.field).cells.set_index("label")
        nuclei.selected_label = int(label)
        centre = np.array(cells.loc[int(label), ["centroid_y", "centroid_x"]], dtype=float)
        world = centre * np.asarray(nuclei.scale) + np.asarray(nuclei.translate)
        scene = getattr(self.viewer, "scene", None)  # napari >= 0.9; viewer.camera before
        camera = scene.camera if scene is not None else self.viewer.camera
        camera.center = tuple(world)

    def _on_row_clicked(self, row: int, column: int) -> None:
        self.select_nucleus(int(self.table.item(row, 0).data(Qt.ItemDataRole.DisplayRole)))

    def _on_ihc_changed(self, text: str) -> None:
        if self.session is not None:
            self.session.set_ihc(None if text == "not given" else text)
            self.refresh()

    def _on_reviewer_changed(self, text: str) -> None:
        if self.session is not None:
            self.session.reviewer = text

    # ------------------------------------------------------------------ views

    def refresh(self) -> None:
        """Redraw nuclei colours and features, the summary, the table; autosave a dirty review."""
        session, field = self.session, self.field
        for name in session.fields:
            nuclei = self._field_layers(name)["nuclei"]
            features = nuclei_features(session, name)
            nuclei.features = features.assign(index=features["label"])
            nuclei.colormap = nucleus_colormap(session.nucleus_states(name))
        rows = summary_rows(session.summary, session.classification)
        html = "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in rows)
        self.summary_label.setText(f"<table>{html}</table>")
        self._fill_table(nuclei_features(session, field))
        self.export_button.setEnabled(True)
        if session.dirty and self.autosave_dir is not None:
            autosave_review(self.autosave_dir.parent, session)

    def _fill_table(self, features: Any) -> None:
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(features))
        for row, record in enumerate(features[list(TABLE_COLUMNS)].itertuples(index=False)):
            for col, value in enumerate(record):
                item = QTableWidgetItem()
                value = value.item() if isinstance(value, np.generic) else value
                item.setData(
                    Qt.ItemDataRole.DisplayRole,
                    round(value, 1) if isinstance(value, float) else value,
                )
                self.table.setItem(row, col, item)
        self.table.setSortingEnabled(True)

    # ------------------------------------------------------------------ export

    def export_case(self, case_dir: str | Path) -> Path:
        """Save the reviewed case to ``case_dir`` (format of ``ishcount run``)."""
        path = write_reviewed_case(case_dir, self.session)
        self.case_dir = Path(path)
        self.autosave_dir = self.case_dir / AUTOSAVE_DIR
        self.status_label.setText(f"saved to {path}")
        show_info(f"ishcount: reviewed case saved to {path}")
        return path

    def _on_export_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export reviewed case: choose DIR")
        if folder:
            self.export_case(Path(folder) / (self.field or "case"))


def _spin(low: float, high: float, value: float, step: float, tip: str) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setSingleStep(step)
    spin.setToolTip(tip)
    return spin
