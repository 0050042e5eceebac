"""Reader, sample data and export of the napari plugin.

* :func:`napari_get_reader` opens an image file ishcount can read (three image layers) or an
  ishcount result folder ``DIR/<case>/`` (images, nuclei, signals and tables, ready for review).
* ``sample_*`` generate the synthetic presets on the fly for File > Open Sample.
* :func:`write_reviewed_case` saves a review in the output format of ``ishcount run``
  (``cells.csv``, ``spots.csv``, ``case.json``, ``labels/<image>.tif``) with the audit trail;
  :func:`load_reviewed_case` reads it back.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile

from ishcount import report
from ishcount.analyze import AnalysisParams
from ishcount.assign import CountParams
from ishcount.image import FishImage
from ishcount.io import (
    ImageSource,
    field_masks,
    file_sources,
    is_image_file,
    read_image,
    read_mask,
    sha256_file,
    write_labels,
    write_table,
)
from ishcount.qupath import write_qupath
from ishcount.synthetic import make_field
from ishcount.tables import CELL_SCHEMA, SPOT_SCHEMA, conform

from ._layers import (
    LayerData,
    image_layer_data,
    mask_layer_data,
    result_layer_data,
    roi_layer_data,
)
from ._review import ReviewEdit, ReviewField, ReviewSession, field_facts

CASE_FILE = "case.json"
#: Sub-folder of a case folder where an unsaved review is written after every change.
AUTOSAVE_DIR = "review-autosave"
#: Seed of every sample field, so File > Open Sample always shows the same image.
SAMPLE_SEED = 17
SAMPLE_SHAPE = (512, 512)

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------- reader


def is_case_folder(path: PathLike) -> bool:
    """True for a folder holding an ishcount ``case.json``."""
    return Path(path).is_dir() and (Path(path) / CASE_FILE).is_file()


def napari_get_reader(path: PathLike | list[PathLike]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 reader hook: return a reader for an ishcount case folder or image file, else None."""
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(path)
    if is_case_folder(path):
        return read_case_layers
    if is_image_file(path):
        return read_image_layers
    return None


def _single(path: PathLike | list[PathLike]) -> Path:
    return Path(path[0] if isinstance(path, list | tuple) else path)


def read_image_layers(path: PathLike | list[PathLike]) -> list[LayerData]:
    """Read an image file into DAPI, HER2 and CEP17 layers with the pixel size as scale,
    and the masks named after its field (:func:`ishcount.io.field_masks`) into the labels
    layers the widget offers as nuclei and region of interest."""
    file = _single(path)
    sources = file_sources(file)
    if len(sources) > 1:
        warnings.warn(
            f"{file}: opened the first of its {len(sources)} scenes; 'ishcount run' and a "
            "result folder take each scene as a field",
            UserWarning,
            2,
        )
    image = read_image(sources[0])
    masks = {}
    try:  # a bad mask must not keep the image from opening
        for kind, mask in field_masks(file, sources[0].name):
            masks[kind] = read_mask(mask, kind=kind, shape=image.shape[-2:])
    except ValueError as err:
        warnings.warn(f"{err}; the image opens without it", UserWarning, 2)
    return image_layer_data(image) + mask_layer_data(masks, image.spacing_um, image.name)


def read_case_layers(path: PathLike | list[PathLike]) -> list[LayerData]:
    """Read a result folder (or its autosave, if newer) into image and result layers.

    The nuclei layer's metadata holds the :class:`ReviewSession` under ``"ishcount_session"``
    so that the review widget picks it up.
    """
    case_dir = newest_review(_single(path))
    session = load_reviewed_case(case_dir)
    layers: list[LayerData] = []
    for index, fld in enumerate(session.fields.values()):
        field_layers = (
            image_layer_data(fld.image, n_fields=len(session.fields), shifts=fld.probe_shift_px)
            if fld.image
            else []
        )
        field_layers += roi_layer_data(session, fld.name)  # the region a batch run was given
        field_layers += result_layer_data(session, fld.name)
        for _, kwargs, _ in field_layers:
            kwargs["visible"] = index == 0  # one field at a time; the widget switches
        layers += field_layers
    layers[-4][1]["metadata"].update(ishcount_session=session, ishcount_case_dir=str(path))
    return layers


def newest_review(case_dir: Path) -> Path:
    """Return ``case_dir`` or its autosave folder, whichever review was saved last."""
    autosave = case_dir / AUTOSAVE_DIR
    if not (autosave / CASE_FILE).is_file():
        return case_dir
    saved = _read_json(case_dir / CASE_FILE).get("review", {}).get("saved_at") or ""
    auto = _read_json(autosave / CASE_FILE).get("review", {}).get("saved_at") or ""
    if auto > saved:
        warnings.warn(
            f"{case_dir}: restoring the unsaved review autosaved at {auto}", UserWarning, 2
        )
        return autosave
    return case_dir


# --------------------------------------------------------------------------- sample data


def sample_field(preset: str, *, n_z: int | None = None) -> list[LayerData]:
    """Generate a synthetic field of a preset (no download) as image layers."""
    shape = SAMPLE_SHAPE if n_z is None else (256, 256)
    image = make_field(preset, shape=shape, n_z=n_z, rng=SAMPLE_SEED, name=preset).image
    return image_layer_data(image)


def sample_group1() -> list[LayerData]:
    """ASCO/CAP group 1: HER2 amplified with clusters."""
    return sample_field("group1")


def sample_group2() -> list[LayerData]:
    """ASCO/CAP group 2: ratio >= 2 with mean HER2 < 4."""
    return sample_field("group2")


def sample_group3() -> list[LayerData]:
    """ASCO/CAP group 3: ratio < 2 with mean HER2 >= 6."""
    return sample_field("group3")


def sample_group4() -> list[LayerData]:
    """ASCO/CAP group 4: ratio < 2 with 4 <= mean HER2 < 6."""
    return sample_field("group4")


def sample_group5() -> list[LayerData]:
    """ASCO/CAP group 5: normal."""
    return sample_field("group5")


def sample_heterogeneous() -> list[LayerData]:
    """Normal tumour with an amplified sub-clone."""
    return sample_field("heterogeneous")


def sample_zstack() -> list[LayerData]:
    """Amplified case as a 9-plane z-stack."""
    return sample_field("group1", n_z=9)


# --------------------------------------------------------------------------- export


def _image_entry(fld: ReviewField, case_dir: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": fld.name, "spacing_um": list(fld.spacing_um)}
    sources = fld.image.metadata.get("source") if fld.image is not None else None
    if sources:
        entry["source"] = [str(Path(s).resolve()) for s in np.atleast_1d(sources)]
    elif fld.image is not None:
        entry["source"] = [f"images/{fld.name}.ome.tif"]
        _write_image_copy(fld.image, case_dir / entry["source"][0])
    if fld.image is not None and "channel_mapping" in fld.image.metadata:
        entry["channel_mapping"] = dict(fld.image.metadata["channel_mapping"])
    if sources and fld.image.metadata.get("scene") is not None:
        entry["scene"] = fld.image.metadata["scene"]
    if fld.masks:  # nuclei segmented elsewhere, region of interest (ishcount run)
        entry["masks"] = dict(fld.masks)
    entry["lossy"] = fld.lossy
    entry["signal_sigma_um"] = list(fld.signal_sigma_um)
    entry["probe_shift_px"] = {
        channel: None if shift is None else list(shift)
        for channel, shift in fld.probe_shift_px.items()
    }
    entry["ridge_maxima"] = fld.ridge_maxima
    entry["dapi_clipped"] = fld.dapi_clipped
    return entry


def _write_image_copy(image: FishImage, path: Path) -> None:
    """Write an in-memory image (no source file) as OME-TIFF with channel names and pixel size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [n.upper() for n in image.channel_names]
    data = np.stack([np.asarray(image.channel(n)) for n in image.channel_names])
    axes = "CZYX" if image.ndim == 3 else "CYX"
    meta: dict[str, Any] = {"axes": axes, "Channel": {"Name": names}}
    meta.update(PhysicalSizeY=image.spacing_um[-2], PhysicalSizeX=image.spacing_um[-1])
    if image.ndim == 3:
        meta["PhysicalSizeZ"] = image.spacing_um[0]
    tifffile.imwrite(path, data, metadata=meta, compression="zlib")


def case_record(
    session: ReviewSession, case_dir: Path, case: str, *, autosave: bool = False
) -> dict[str, Any]:
    """Return the ``case.json`` record of a reviewed case (the format of ``ishcount run``)."""
    cells = session.cells
    fields = []
    images = []
    for fld in session.fields.values():
        entry = _image_entry(fld, case_dir)
        images.append(entry)
        sources = [Path(s) if Path(s).is_absolute() else case_dir / s for s in entry["source"]]
        scored = cells[(cells["image"] == fld.name) & cells["is_scored"]]
        fields.append(
            {
                "name": fld.name,
                "status": "reviewed",
                "error": "",
                "files": [
                    {"path": str(p), "sha256": sha256_file(p) if p.is_file() else None}
                    for p in sources
                ],
                "n_nuclei": int((cells["image"] == fld.name).sum()),
                "n_scored": len(scored),
                "seconds": 0.0,
            }
        )
    return report.case_record(
        case=case,
        summary=session.summary,
        classification=session.classification,
        fields=fields,
        images=images,
        count_params=AnalysisParams(count=session.count_params).to_dict()["count"],
        provenance=report.provenance(None, written_by="ishcount napari review"),
        review={
            "reviewed": not autosave,
            "reviewer": session.reviewer,
            "saved_at": _now_precise(),
            "edits": [edit.to_dict() for edit in session.edits],
        },
    )


def _now_precise() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def write_case_files(
    case_dir: Path,
    *,
    session: ReviewSession,
    record: dict[str, Any],
) -> Path:
    """Write one case folder: labels, ROIs, tables, ``case.json`` and ``report.html``."""
    (case_dir / "labels").mkdir(parents=True, exist_ok=True)
    figures = {}
    for fld in session.fields.values():
        write_labels(
            fld.labels, case_dir / "labels" / f"{fld.name}.tif", spacing_um=fld.spacing_um[-2:]
        )
        if fld.roi is not None:
            write_labels(fld.roi.astype(np.uint8), case_dir / "labels" / f"{fld.name}.roi.tif")
        qupath = case_dir / "labels" / f"{fld.name}.geojson"  # the reviewed counts
        write_qupath(fld.labels, fld.cells, fld.spots, qupath)
        if fld.image is not None:
            figures[fld.name] = report.field_figures(fld.image, fld.labels, fld.cells, fld.roi)
    write_table(session.cells, case_dir / "cells.csv")
    write_table(session.spots, case_dir / "spots.csv")
    report.write_case_report(case_dir, record, figures=figures)
    return case_dir


def write_reviewed_case(
    case_dir: PathLike, session: ReviewSession, *, case: str | None = None, autosave: bool = False
) -> Path:
    """Save a reviewed case in the output format of ``ishcount run``, with its audit trail.

    Parameters
    ----------
    case_dir : path
        ``DIR/<case>/``; created if missing.
    session : ReviewSession
        The review to save.
    case : str, optional
        Case name; default the folder name.
    autosave : bool
        True leaves the session marked unsaved (a safety copy, not a sign-off).

    Returns
    -------
    pathlib.Path
        ``case_dir``.
    """
    case_dir = Path(case_dir)
    case_dir.mkdir(parents=True, exist_ok=True)
    record = case_record(session, case_dir, case or case_dir.name, autosave=autosave)
    write_case_files(case_dir, session=session, record=record)
    if not autosave:
        session.mark_saved()
    return case_dir


def autosave_review(case_dir: PathLike, session: ReviewSession) -> Path:
    """Write the unsaved review to ``case_dir/review-autosave/`` (restored on reopening)."""
    return write_reviewed_case(Path(case_dir) / AUTOSAVE_DIR, session, autosave=True)


# --------------------------------------------------------------------------- load


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _read_table(path: Path, schema: dict[str, str]) -> pd.DataFrame:
    table = pd.read_csv(path)
    for name, dtype in schema.items():
        if dtype == "object" and name in table:
            table[name] = table[name].fillna("").astype(str)
    return conform(table, schema)


def _load_image(entry: dict[str, Any], case_dir: Path) -> FishImage | None:
    sources = [case_dir / s if not Path(s).is_absolute() else Path(s) for s in entry["source"]]
    try:
        if len(sources) == 1:  # as the run read it: its channels, pixel size and scene
            return read_image(
                ImageSource(entry["name"], path=sources[0], scene=entry.get("scene")),
                channels=entry.get("channel_mapping") or None,
                spacing_um=entry["spacing_um"],
                name=entry["name"],
            )
        pairs = tuple(
            (ch, Path(p)) for ch, p in zip(("dapi", "her2", "cep17"), sources, strict=False)
        )
        return read_image(ImageSource(entry["name"], channel_paths=pairs), name=entry["name"])
    except (ValueError, OSError) as err:
        warnings.warn(f"{case_dir}: image {entry['name']!r} not loaded: {err}", UserWarning, 2)
        return None


def _load_field(entry: dict[str, Any], case_dir: Path, cells, spots) -> ReviewField:
    name = entry["name"]
    labels = tifffile.imread(case_dir / "labels" / f"{name}.tif").astype(np.int32)
    roi_path = case_dir / "labels" / f"{name}.roi.tif"
    roi = tifffile.imread(roi_path).astype(bool) if roi_path.is_file() else None
    image = _load_image(entry, case_dir) if entry.get("source") else None
    field_cells = cells[cells["image"] == name].reset_index(drop=True)
    field_spots = spots[spots["image"] == name].drop(columns="image").reset_index(drop=True)
    spacing = tuple(float(s) for s in entry["spacing_um"])
    masks = dict(entry.get("masks") or {})
    return ReviewField(
        name,
        labels,
        field_spots,
        field_cells,
        spacing,
        image,
        roi,
        masks,
        **field_facts(entry.get("lossy"), entry),
    )


def load_reviewed_case(case_dir: PathLike) -> ReviewSession:
    """Read a case folder written by :func:`write_reviewed_case` back into a review session.

    Raises
    ------
    ValueError
        If ``case_dir`` is not a case folder.
    """
    case_dir = Path(case_dir)
    if not is_case_folder(case_dir):
        raise ValueError(f"case_dir must be a folder holding {CASE_FILE}, got {str(case_dir)!r}")
    record = _read_json(case_dir / CASE_FILE)
    cells = _read_table(case_dir / "cells.csv", CELL_SCHEMA)
    spots = _read_table(case_dir / "spots.csv", {**SPOT_SCHEMA, "image": "object"})
    fields = [_load_field(entry, case_dir, cells, spots) for entry in record["images"]]
    review = record.get("review", {})
    session = ReviewSession(
        fields,
        count_params=CountParams(**record.get("count_params", {})),
        rule_set=record["rule_set"],
        ihc=record.get("ihc"),
        reviewer=review.get("reviewer", ""),
        edits=[ReviewEdit.from_dict(e) for e in review.get("edits", [])],
    )
    return session
