"""napari layer data for ishcount images and review sessions, as plain ``(data, kwargs, type)``.

Nothing here imports napari: the tuples are napari's ``LayerDataTuple`` format, returned by
the reader and the sample data and added by the widget. Image layers carry the physical pixel
size as ``scale`` (micrometres); result layers live in the same pixel coordinates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from ishcount.image import FishImage
from ishcount.report import ROI_RGB

from ._review import ReviewSession

#: Display name and colormap of each channel.
CHANNEL_DISPLAY: dict[str, tuple[str, str]] = {
    "dapi": ("DAPI", "blue"),
    "her2": ("HER2", "red"),
    "cep17": ("CEP17", "green"),
}
#: Outline colour of nuclei in each review state.
STATE_COLORS: dict[str, str] = {"scored": "#00d0ff", "amplified": "#ff40ff", "excluded": "#909090"}
#: Displayed diameter of one signal, micrometres.
SIGNAL_SIZE_UM = 0.6
#: Name of the layers built from a session, by role.
RESULT_LAYERS: dict[str, str] = {
    "nuclei": "nuclei",
    "her2": "HER2 signals",
    "cep17": "CEP17 signals",
    "clusters": "HER2 clusters",
}
_POINT_COLORS = {"her2": "#ff7f2a", "cep17": "#7fff2a", "clusters": "yellow"}
#: Outline of signals with a pixel at the camera's maximum (their copies are lower bounds).
SATURATED_COLOR = "white"
#: Signal columns carried as point features.
POINT_FEATURES = ("spot_id", "channel", "copies", "label", "saturated")

LayerData = tuple[Any, dict[str, Any], str]


def layer_name(base: str, field: str, n_fields: int) -> str:
    """Return a layer name, suffixed with the field name when a case has several fields.

    Examples
    --------
    >>> layer_name("DAPI", "f1", 1), layer_name("DAPI", "f1", 2)
    ('DAPI', 'DAPI [f1]')
    """
    return base if n_fields <= 1 else f"{base} [{field}]"


def contrast_limits(array: Any, *, low: float = 0.5, high: float = 99.8) -> tuple[float, float]:
    """Return display limits from percentiles of (a regular subsample of) the data.

    Examples
    --------
    >>> contrast_limits(np.arange(1000.0).reshape(10, 100))
    (4.995, 997.002)
    """
    data = np.asarray(array)
    step = max(1, int(np.ceil((data.size / 2_000_000) ** (1 / max(data.ndim, 1)))))
    sample = np.asarray(data[(slice(None, None, step),) * data.ndim], dtype=float)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return (0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(sample, (low, high)))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def image_layer_data(
    image: FishImage,
    *,
    n_fields: int = 1,
    shifts: Mapping[str, Sequence[int] | None] | None = None,
) -> list[LayerData]:
    """Return DAPI, HER2 and CEP17 image layers of one field.

    Parameters
    ----------
    image : FishImage
        The field.
    n_fields : int
        Fields in the case; above 1 the layer names carry the field name.
    shifts : mapping of str to (dy, dx), optional
        Per probe channel, the shift (pixels) the analysis found against DAPI and undid
        (``detection.<channel>.shift_px``): the layer is translated back by it, so that the
        signals it shows lie under their detections.

    Returns
    -------
    list of (array, dict, "image")
        Additive blending, channel colormaps, contrast from the data, ``scale`` = ``spacing_um``.

    Examples
    --------
    >>> img = FishImage(np.zeros((4, 4)), np.ones((4, 4)), None, spacing_um=(0.1, 0.1))
    >>> [(kw["name"], kw["colormap"], kw["scale"]) for _, kw, _ in image_layer_data(img)]
    [('DAPI', 'blue', (0.1, 0.1)), ('HER2', 'red', (0.1, 0.1))]
    """
    layers = []
    for channel in image.channel_names:
        name, colormap = CHANNEL_DISPLAY[channel]
        data = image.channel(channel)
        kwargs = {
            "name": layer_name(name, image.name, n_fields),
            "colormap": colormap,
            "blending": "additive",
            "contrast_limits": contrast_limits(data),
            "scale": tuple(image.spacing_um),
            "units": "µm",
            "metadata": {"ishcount": {"field": image.name, "role": channel}},
        }
        lateral = undone_shift((shifts or {}).get(channel), image.spacing_um)
        if lateral is not None:
            kwargs["translate"] = (0.0,) * (len(image.spacing_um) - 2) + lateral
        layers.append((data, kwargs, "image"))
    return layers


def undone_shift(shift: Sequence[int] | None, scale: Sequence[float]) -> tuple[float, ...] | None:
    """The lateral translation that shows a probe channel where its signals were counted:
    minus the shift ``(dy, dx)`` (pixels) the analysis undid, in the units of ``scale``
    (whose last two values are the pixel size); None when there was no shift.

    Examples
    --------
    >>> undone_shift((4, 2), (0.3, 0.5, 0.5)), undone_shift((0, 0), (0.5, 0.5))
    ((-2.0, -1.0), None)
    """
    if shift is None or not any(shift):
        return None
    return tuple(-float(d) * float(s) for d, s in zip(shift, scale[-2:], strict=True))


def nucleus_colormap(states: pd.DataFrame) -> dict[Any, str]:
    """Return a label -> colour mapping from :meth:`ReviewSession.nucleus_states`."""
    colors: dict[Any, str] = {None: "transparent", 0: "transparent"}
    for label, state in zip(states["label"], states["state"], strict=True):
        colors[int(label)] = STATE_COLORS[state]
    return colors


def nuclei_features(session: ReviewSession, field: str) -> pd.DataFrame:
    """Return the cell table of a field with its display ``state``, for the labels layer."""
    cells = session.field(field).cells.reset_index(drop=True)
    return cells.assign(state=session.nucleus_states(field)["state"].to_numpy())


def signal_points(session: ReviewSession, field: str, kind: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Return point coordinates (pixels, ``ndim`` of the field) and features of one signal kind."""
    fld = session.field(field)
    spots = fld.spots
    cluster = spots["is_cluster"].to_numpy(bool)
    mask = cluster if kind == "clusters" else (spots["channel"].to_numpy() == kind) & ~cluster
    part = spots[mask].reset_index(drop=True)
    columns = ["z", "y", "x"] if fld.ndim == 3 else ["y", "x"]
    coords = part[columns].to_numpy(float).reshape(-1, len(columns))
    features = part[list(POINT_FEATURES)]
    return coords, features


def _points_kwargs(session: ReviewSession, field: str, kind: str, features: pd.DataFrame):
    fld = session.field(field)
    size = SIGNAL_SIZE_UM / float(np.mean(fld.spacing_um[-2:]))
    kwargs: dict[str, Any] = {
        "name": layer_name(RESULT_LAYERS[kind], field, len(session.fields)),
        "features": features,
        "feature_defaults": {
            "spot_id": -1,
            "channel": "her2" if kind == "clusters" else kind,
            "copies": 2 if kind == "clusters" else 1,
            "label": 0,
            "saturated": False,
        },
        "scale": tuple(fld.spacing_um),
        "units": "µm",
        "face_color": "transparent",
        "border_color": "saturated",
        "border_color_cycle": {False: _POINT_COLORS[kind], True: SATURATED_COLOR},
        "border_width": 0.15,
        "size": size,
        "ndim": fld.ndim,
        "metadata": {"ishcount": {"field": field, "role": kind}},
    }
    if kind == "clusters":
        copies = features["copies"].to_numpy(float)
        kwargs["size"] = size * np.sqrt(np.maximum(copies, 1.0)) if copies.size else size
        kwargs["text"] = {
            "string": "{copies}",
            "color": "yellow",
            "size": 10,
            "anchor": "upper_left",
        }
    return kwargs


#: Colour of a region of interest (the report overview's), as a labels colormap.
ROI_COLORMAP: dict[Any, str] = {
    None: "transparent",
    0: "transparent",
    1: "#{:02x}{:02x}{:02x}".format(*ROI_RGB),
}
#: Names of the layers a field's masks are read into (:func:`mask_layer_data`).
MASK_LAYERS: dict[str, str] = {"nuclei": "given nuclei", "roi": "given ROI"}


def mask_layer_data(
    masks: dict[str, np.ndarray], spacing_um: tuple[float, ...], field: str
) -> list[LayerData]:
    """Return labels layers of a field's masks (``"nuclei"``, ``"roi"``), which the widget
    offers as the nuclei to count and the region to score.

    Examples
    --------
    >>> roi = np.zeros((4, 4), bool); roi[:2] = True
    >>> [(kw["name"], int(d.sum())) for d, kw, _ in mask_layer_data({"roi": roi}, (0.1, 0.1), "f")]
    [('given ROI', 8)]
    """
    layers: list[LayerData] = []
    for kind, data in masks.items():
        kwargs: dict[str, Any] = {
            "name": MASK_LAYERS[kind],
            "scale": tuple(spacing_um[-2:]),
            "units": "µm",
            "metadata": {"ishcount": {"field": field, "role": f"given {kind}"}},
        }
        if kind == "roi":
            kwargs["colormap"] = ROI_COLORMAP
            kwargs["opacity"] = 0.25
        layers.append((np.asarray(data).astype(np.int32), kwargs, "labels"))
    return layers


def roi_layer_data(session: ReviewSession, field: str) -> list[LayerData]:
    """Return the outline of a field's region of interest as a labels layer (none without one).

    Examples
    --------
    >>> from ishcount.synthetic import make_field
    >>> from ishcount.analyze import analyze_image
    >>> image = make_field("group5", shape=(192, 192), rng=2).image
    >>> roi = np.zeros((192, 192), bool); roi[20:150, 30:170] = True
    >>> result = analyze_image(image, roi=roi)
    >>> session = ReviewSession.from_results([result], images=[image], rois=[roi])
    >>> [(kw["name"], int(data.sum())) for data, kw, _ in roi_layer_data(session, "field")]
    [('region of interest', 1064)]

    (536 pixels along the 130 x 140 box's edge and 528 inside them.)
    """
    fld = session.field(field)
    if fld.roi is None:
        return []
    inner = find_boundaries(fld.roi, mode="inner")
    outline = (inner | ndi.binary_dilation(inner) & fld.roi).astype(np.uint8)  # 2 px wide
    kwargs = {
        "name": layer_name("region of interest", field, len(session.fields)),
        "colormap": ROI_COLORMAP,
        "scale": tuple(fld.spacing_um[-2:]),
        "units": "µm",
        "metadata": {"ishcount": {"field": field, "role": "roi"}},
    }
    return [(outline, kwargs, "labels")]


def result_layer_data(session: ReviewSession, field: str) -> list[LayerData]:
    """Return the nuclei labels layer and the HER2, CEP17 and cluster points layers of a field.

    The labels layer carries the cell table (with ``state``) as features and outlines nuclei
    by state (:data:`STATE_COLORS`); points layers carry :data:`POINT_FEATURES` as features
    and outline saturated signals in :data:`SATURATED_COLOR`; cluster points are sized by
    and labelled with their copies.

    Examples
    --------
    >>> from ishcount.synthetic import make_field
    >>> from ishcount.analyze import analyze_image
    >>> image = make_field("group1", shape=(192, 192), rng=2).image
    >>> session = ReviewSession.from_results([analyze_image(image)], images=[image])
    >>> [kw["name"] for _, kw, _ in result_layer_data(session, "field")]
    ['nuclei', 'HER2 signals', 'CEP17 signals', 'HER2 clusters']
    """
    fld = session.field(field)
    states = session.nucleus_states(field)
    nuclei_kwargs = {
        "name": layer_name(RESULT_LAYERS["nuclei"], field, len(session.fields)),
        "features": nuclei_features(session, field),
        "colormap": nucleus_colormap(states),
        "opacity": 0.5,
        "scale": tuple(fld.spacing_um[-2:]),
        "units": "µm",
        "metadata": {"ishcount": {"field": field, "role": "nuclei"}},
    }
    layers: list[LayerData] = [(fld.labels, nuclei_kwargs, "labels")]
    for kind in ("her2", "cep17", "clusters"):
        coords, features = signal_points(session, field, kind)
        layers.append((coords, _points_kwargs(session, field, kind, features), "points"))
    return layers
