"""Column names and dtypes of the tables that travel between stages.

Every stage returns tidy :class:`pandas.DataFrame` objects whose columns and
dtypes are fixed here, so an empty input gives a zero-row table with the same
schema as a full one.

Coordinates are in pixels of the analysed array (sub-pixel floats, array
order ``z, y, x``; ``z`` is 0.0 for 2D images). Physical sizes carry their unit
in the column name (``area_um2``).

Examples
--------
>>> from ishcount.tables import SPOT_SCHEMA, empty_table
>>> spots = empty_table(SPOT_SCHEMA)
>>> len(spots), list(spots.columns) == list(SPOT_SCHEMA)
(0, True)
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

#: One row per detected signal (after split signals are merged).
SPOT_SCHEMA: dict[str, str] = {
    "spot_id": "int64",  # unique within one image and channel table
    "channel": "object",  # "her2" or "cep17"
    "z": "float64",  # pixels
    "y": "float64",  # pixels
    "x": "float64",  # pixels
    "amplitude": "float64",  # peak height above local background, input intensity units
    "intensity": "float64",  # integrated intensity above background, input units x pixels
    "background": "float64",  # local background level, input intensity units
    "sigma": "float64",  # apparent spot width (Gaussian sigma), pixels
    "snr": "float64",  # amplitude / noise standard deviation of the channel
    "is_cluster": "bool",  # True when the signal is an unresolved cluster of copies
    "copies": "int64",  # estimated gene copies this signal stands for (1 for a single signal)
    "label": "int64",  # nucleus label; 0 = outside any nucleus
    "in_cytoplasm": "bool",  # outside every nucleus, but within the cytoplasm margin of one
    "saturated": "bool",  # a pixel of the signal is at the camera's maximum: copies a lower bound
}

#: One row per nucleus of one image.
CELL_SCHEMA: dict[str, str] = {
    "image": "object",  # field (image) name
    "label": "int64",  # nucleus label in that image's label array
    "centroid_y": "float64",  # pixels
    "centroid_x": "float64",  # pixels
    "area_um2": "float64",  # projected nucleus area, square micrometres
    "n_her2": "int64",  # HER2 copies (cluster estimates included)
    "n_cep17": "int64",  # CEP17 copies
    "n_her2_clusters": "int64",  # HER2 signals judged to be clusters
    "touches_border": "bool",  # nucleus cut by the image (or ROI) edge
    "is_scored": "bool",  # counted toward the case result
    "exclusion_reason": "object",  # "" when scored, else why not (one short phrase)
}


def empty_table(schema: Mapping[str, str]) -> pd.DataFrame:
    """Return a zero-row table with the columns and dtypes of ``schema``.

    Parameters
    ----------
    schema : mapping of str to str
        Column name to pandas dtype name, for example :data:`SPOT_SCHEMA`.

    Returns
    -------
    pandas.DataFrame
        No rows; one column per schema entry, in schema order.

    Examples
    --------
    >>> empty_table({"a": "int64"}).dtypes["a"]
    dtype('int64')
    """
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in schema.items()})


def conform(table: pd.DataFrame, schema: Mapping[str, str]) -> pd.DataFrame:
    """Return ``table`` with the schema's columns first, in order and cast to its dtypes.

    Columns not in the schema are kept after the schema's columns.

    Parameters
    ----------
    table : pandas.DataFrame
        Must hold every column of ``schema``.
    schema : mapping of str to str
        Column name to pandas dtype name.

    Returns
    -------
    pandas.DataFrame
        A new table.

    Raises
    ------
    ValueError
        If a schema column is missing, naming it.

    Examples
    --------
    >>> conform(pd.DataFrame({"b": [1], "a": [2.0]}), {"a": "int64"}).columns.tolist()
    ['a', 'b']
    """
    missing = [name for name in schema if name not in table.columns]
    if missing:
        raise ValueError(f"table is missing column(s) {missing}; expected {list(schema)}")
    extra = [name for name in table.columns if name not in schema]
    return table[[*schema, *extra]].astype(dict(schema)).reset_index(drop=True)
