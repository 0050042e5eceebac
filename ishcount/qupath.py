"""Results as GeoJSON that QuPath opens over the image: nuclei with their counts, signals.

QuPath (*File > Import objects*, or dragging the file onto the image) reads a GeoJSON
``FeatureCollection`` in pixel coordinates ``[x, y]`` from the image's top-left corner,
where pixel ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``. Each nucleus is a
detection whose classification says whether it was scored (or why not) and whose
measurements hold its counts; the signals of each probe are a points annotation.
:func:`ishcount.io.read_mask` reads the nuclei back (the same file format a QuPath user
exports), so outlines corrected in QuPath can be given to a new run as
``<field>.nuclei.geojson``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.measure import find_contours

from ishcount.io import atomic_write

__all__ = ["nucleus_outlines", "qupath_features", "write_qupath"]

#: Colours (RGB) of the classifications: scored nuclei white, excluded amber, as in the report.
SCORED_COLOUR = (255, 255, 255)
EXCLUDED_COLOUR = (255, 176, 0)
SIGNAL_COLOURS = {"her2": (255, 64, 64), "cep17": (64, 255, 64)}
SIGNAL_NAMES = {"her2": "HER2", "cep17": "CEP17"}


def nucleus_outlines(labels: np.ndarray) -> dict[int, np.ndarray]:
    """The outline of each label as a closed ring of ``[x, y]`` pixel coordinates.

    The ring runs between the centres of the label's edge pixels and their outside
    neighbours (the 0.5 contour of the label's mask), with only its corners kept: it
    encloses exactly the label's pixel centres.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
        Nucleus labels, 0 background.

    Returns
    -------
    dict of int to ndarray, shape (n, 2)
        Label to its outer boundary (holes are left out), first point repeated last.

    Examples
    --------
    >>> labels = np.zeros((6, 6), int); labels[1:4, 2:5] = 7  # rows 1-3, columns 2-4
    >>> ring = nucleus_outlines(labels)[7]
    >>> ring.min(axis=0).tolist(), ring.max(axis=0).tolist(), len(ring)
    ([2.0, 1.0], [5.0, 4.0], 9)
    """
    labels = np.asarray(labels)
    outlines = {}
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        mask = np.pad(labels[box] == index, 1).astype(np.float32)
        ring = max(find_contours(mask, 0.5), key=len)
        offset = np.array([box[0].start, box[1].start], dtype=float) - 1.0 + 0.5
        outlines[index] = _corners((ring + offset)[:, ::-1])
    return outlines


def _corners(ring: np.ndarray) -> np.ndarray:
    """A closed ring with the points inside straight runs dropped (an exact simplification)."""
    step = np.diff(ring, axis=0)
    turns = np.any(step != np.roll(step, 1, axis=0), axis=1)
    corners = ring[:-1][turns] if turns.any() else ring[:1]
    return np.vstack([corners, corners[:1]])


def qupath_features(
    labels: np.ndarray, cells: pd.DataFrame, spots: pd.DataFrame | None = None
) -> dict[str, Any]:
    """One field's nuclei (with counts) and signals as a GeoJSON FeatureCollection.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
        Nucleus labels of the field.
    cells : pandas.DataFrame
        Its cell table (:data:`ishcount.tables.CELL_SCHEMA`): a feature per row.
    spots : pandas.DataFrame, optional
        Its spot table: a points annotation per probe (clusters apart, with their copies).

    Returns
    -------
    dict
        ``{"type": "FeatureCollection", "features": [...]}``, ready for ``json.dump``.

    Examples
    --------
    >>> from ishcount.assign import count_spots
    >>> from ishcount.tables import SPOT_SCHEMA, empty_table
    >>> labels = np.zeros((80, 80), int); labels[20:60, 20:60] = 1
    >>> cells = count_spots(empty_table(SPOT_SCHEMA), labels, spacing_um=(0.1, 0.1))
    >>> properties = qupath_features(labels, cells)["features"][0]["properties"]
    >>> properties["classification"]["name"], properties["measurements"]["HER2"]
    ('Excluded: too small', 0)
    """
    outlines = nucleus_outlines(labels)
    features = []
    for row in cells.itertuples(index=False):
        ring = outlines.get(int(row.label))
        if ring is None:
            continue
        scored = bool(row.is_scored)
        name = "Scored" if scored else f"Excluded: {row.exclusion_reason or 'by reviewer'}"
        features.append(
            {
                "type": "Feature",  # no "id": QuPath takes it for a UUID, and makes its own
                "geometry": {"type": "Polygon", "coordinates": [ring.tolist()]},
                "properties": {
                    "objectType": "detection",
                    "name": f"nucleus {int(row.label)}",
                    "classification": {
                        "name": name,
                        "color": list(SCORED_COLOUR if scored else EXCLUDED_COLOUR),
                    },
                    "measurements": {
                        "Label": int(row.label),
                        "HER2": int(row.n_her2),
                        "CEP17": int(row.n_cep17),
                        "HER2 clusters": int(row.n_her2_clusters),
                        "Area um^2": round(float(row.area_um2), 2),
                    },
                },
            }
        )
    if spots is not None:
        features += _signal_features(spots)
    return {"type": "FeatureCollection", "features": features}


def write_qupath(
    labels: np.ndarray,
    cells: pd.DataFrame,
    spots: pd.DataFrame | None,
    path: str | os.PathLike[str],
) -> Path:
    """Write :func:`qupath_features` to ``path`` atomically, as one line of JSON.

    Returns
    -------
    pathlib.Path
        The destination path.
    """
    text = json.dumps(qupath_features(labels, cells, spots), separators=(",", ":"))
    return atomic_write(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def _signal_features(spots: pd.DataFrame) -> list[dict[str, Any]]:
    """Per probe, its single signals and its clusters as two points annotations."""
    out = []
    for channel, name in SIGNAL_NAMES.items():
        mine = spots[spots["channel"] == channel]
        for clustered, kind in ((False, "signals"), (True, "clusters")):
            part = mine[mine["is_cluster"].to_numpy(bool) == clustered]
            if part.empty:
                continue
            points = np.round(part[["x", "y"]].to_numpy(float) + 0.5, 2)  # to pixel centres
            measurements = {"Points": len(part)}
            if clustered:
                measurements["Copies"] = int(part["copies"].sum())
            out.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "MultiPoint", "coordinates": points.tolist()},
                    "properties": {
                        "objectType": "annotation",
                        "name": f"{name} {kind}",
                        "classification": {"name": name, "color": list(SIGNAL_COLOURS[channel])},
                        "measurements": measurements,
                    },
                }
            )
    return out
