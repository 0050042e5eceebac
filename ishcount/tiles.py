"""Images larger than a field (stitched scans) in overlapping tiles.

Each tile is a core region plus a halo at least one maximal nucleus diameter
wide. A nucleus belongs to the tile whose core holds its centroid: the halo
guarantees that this tile sees it whole, so its segmentation, signals and
counts come from one complete view. Signals inside a nucleus come from the
tile that owns the nucleus; signals outside every nucleus come from the tile
whose core holds them. Every nucleus and every signal is therefore reported
exactly once, and memory is bounded by the tile size (plus the label image of
the whole field, the one output that grows with it).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ishcount._frozen import freeze
from ishcount.analyze import AnalysisParams, ImageResult, analyze_image
from ishcount.image import FishImage
from ishcount.tables import CELL_SCHEMA, SPOT_SCHEMA, conform, empty_table


@dataclass(frozen=True)
class Tile:
    """One tile: the region analysed (``outer``) and the region it answers for (``core``).

    Bounds are ``(y0, y1, x0, x1)`` in pixels of the whole image, end-exclusive.
    """

    core: tuple[int, int, int, int]
    outer: tuple[int, int, int, int]


def plan_tiles(shape: tuple[int, int], tile_size: int, halo: int) -> list[Tile]:
    """Cover an image with tiles whose cores partition it.

    Parameters
    ----------
    shape : tuple of int
        ``(Y, X)`` of the image.
    tile_size : int
        Side of a core region in pixels.
    halo : int
        Extra pixels analysed on every side of a core (clipped at the image edge).

    Returns
    -------
    list of Tile

    Examples
    --------
    >>> tiles = plan_tiles((100, 250), tile_size=100, halo=10)
    >>> [t.core for t in tiles]
    [(0, 100, 0, 100), (0, 100, 100, 200), (0, 100, 200, 250)]
    >>> tiles[1].outer
    (0, 100, 90, 210)
    """
    if tile_size < 1 or halo < 0:
        raise ValueError(f"tile_size must be >= 1 and halo >= 0, got {tile_size} and {halo}")
    tiles = []
    for y0 in range(0, shape[0], tile_size):
        for x0 in range(0, shape[1], tile_size):
            y1, x1 = min(y0 + tile_size, shape[0]), min(x0 + tile_size, shape[1])
            outer = (
                max(y0 - halo, 0),
                min(y1 + halo, shape[0]),
                max(x0 - halo, 0),
                min(x1 + halo, shape[1]),
            )
            tiles.append(Tile((y0, y1, x0, x1), outer))
    return tiles


def halo_for(params: AnalysisParams, spacing_um: tuple[float, ...]) -> int:
    """Halo in pixels: the diameter of the largest nucleus the parameters allow, plus 16 px."""
    max_area = params.segment.get("max_area_um2") or params.count.max_area_um2
    diameter_um = 2.0 * math.sqrt(float(max_area) / math.pi)
    return math.ceil(diameter_um / min(spacing_um[-2:])) + 16


def crop(image: FishImage, bounds: tuple[int, int, int, int]) -> FishImage:
    """Return the region ``bounds`` of every channel as a new in-memory image."""
    y0, y1, x0, x1 = bounds
    arrays = {
        name: None
        if image.channel(name) is None
        else np.asarray(image.channel(name)[..., y0:y1, x0:x1])
        for name in ("dapi", "her2", "cep17")
    }
    return FishImage(
        spacing_um=image.spacing_um, name=image.name, metadata=image.metadata, **arrays
    )


def analyze_tiled(
    image: FishImage,
    *,
    params: AnalysisParams | None = None,
    tile_size: int = 2048,
    workers: int = 1,
    labels_out: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    roi: np.ndarray | None = None,
) -> ImageResult:
    """Analyse a large image in overlapping tiles and join the results.

    Parameters
    ----------
    image : FishImage
        Any size; Dask-backed channels are read one tile at a time.
    params : AnalysisParams, optional
        Stage parameters.
    tile_size : int
        Core size of a tile in pixels.
    workers : int
        Tiles analysed at once (threads; the filters release the GIL).
    labels_out : ndarray of int32, shape (Y, X), optional
        Zero-filled array that receives the nucleus labels, for example a
        :func:`numpy.lib.format.open_memmap` on disk: then nothing the size of the image
        is held in memory, only a tile's working set and the tables. Default: a new
        in-memory array.
    labels : ndarray of int, shape (Y, X), optional
        Nuclei segmented elsewhere, as for :func:`ishcount.analyze_image` (each tile gets
        its part; a nucleus is taken from the tile that holds it whole).
    roi : ndarray of bool, shape (Y, X), optional
        Region to score, as for :func:`ishcount.analyze_image`.

    Returns
    -------
    ImageResult
        As :func:`ishcount.analyze_image` would give for the whole image, with labels
        numbered tile by tile.
    """
    params = params or AnalysisParams()
    tiles = plan_tiles(image.shape[-2:], tile_size, halo_for(params, image.spacing_um))
    start = time.perf_counter()
    joined = _labels_array(labels_out, image.shape[-2:])
    cells, spots, crosstalk, detection, shares = [], [], [], [], []
    nuclear_area = clipped_area = 0  # pixels, over the tiles (overlaps counted in each)
    next_label = 1
    masks = {"labels": labels, "roi": roi}
    for tile, result in _analyse_tiles(image, tiles, params, workers, masks):
        kept_cells, kept_spots = _keep_owned(tile, result, joined, next_label)
        next_label += len(kept_cells)
        cells.append(kept_cells)
        spots.append(kept_spots)
        crosstalk.append(result.crosstalk)
        detection.append(result.detection)
        shares.append(_core_share(tile))
        tile_area = int(np.count_nonzero(result.labels))
        nuclear_area += tile_area
        clipped_area += result.dapi_clipped * tile_area
    cells_table = _join(cells, CELL_SCHEMA)
    spot_table = _join(spots, SPOT_SCHEMA)
    spot_table = _drop_duplicates_outside(spot_table, joined)
    spot_table["spot_id"] = np.arange(len(spot_table), dtype=np.int64)
    return ImageResult(
        name=image.name,
        labels=joined,
        spots=conform(spot_table, SPOT_SCHEMA),
        cells=conform(cells_table.sort_values("label", ignore_index=True), CELL_SCHEMA),
        params=params,
        spacing_um=image.spacing_um,
        seconds=freeze({"tiles": time.perf_counter() - start, "n_tiles": len(tiles)}),
        # each tile measures its own; the median over tiles stands for the image
        crosstalk=_combine(crosstalk),
        detection=freeze(
            {
                channel: {
                    **_combine(
                        [tile[channel] for tile in detection if channel in tile],
                        [
                            share
                            for tile, share in zip(detection, shares, strict=True)
                            if channel in tile
                        ],
                    ),
                    "saturated_signals": int(
                        spot_table.loc[spot_table["channel"] == channel, "saturated"].sum()
                    ),
                }
                for channel in (detection[0] if detection else {})
            }
        ),
        dapi_clipped=clipped_area / nuclear_area if nuclear_area else 0.0,
    )


#: Per-tile counts of things found in the image, added up over the tiles, each tile's count
#: weighted by its core's share of its area (a thing in the overlap of two tiles is then
#: not counted twice, where they lie evenly); other numbers are medians.
_SUMMED = ("hot_pixels", "ridge_maxima")


def _core_share(tile: Tile) -> float:
    """The share of a tile's analysed area that is its core."""
    (y0, y1, x0, x1), (oy0, oy1, ox0, ox1) = tile.core, tile.outer
    return (y1 - y0) * (x1 - x0) / max((oy1 - oy0) * (ox1 - ox0), 1)


def _combine(
    records: list[Mapping[str, Any]], shares: list[float] | None = None
) -> Mapping[str, Any]:
    """One record from the tiles' records: the counts in :data:`_SUMMED` added up (each
    tile's weighted by its core share in ``shares``, 1 when None), medians of the other
    finite numbers, commonest words and commonest lists (a channel's ``shift_px``; None
    where no tile has one)."""
    values: dict[str, Any] = {}
    weights = [1.0] * len(records) if shares is None else shares
    for key, first in records[0].items() if records else ():
        column = [record.get(key, first) for record in records]
        if key in _SUMMED:
            values[key] = round(sum(n * w for n, w in zip(column, weights, strict=True)))
        elif isinstance(first, str):
            values[key] = Counter(column).most_common(1)[0][0]
        elif any(value is None or isinstance(value, list | tuple) for value in column):
            given = [tuple(value) for value in column if value is not None]
            values[key] = list(Counter(given).most_common(1)[0][0]) if given else None
        else:
            numbers = np.asarray(column, dtype=float)
            numbers = numbers[np.isfinite(numbers)]
            values[key] = float(np.median(numbers)) if numbers.size else math.nan
    return freeze(values)


def _analyse_tiles(
    image: FishImage,
    tiles: list[Tile],
    params: AnalysisParams,
    workers: int,
    masks: dict[str, np.ndarray | None],
) -> Iterator[tuple[Tile, ImageResult]]:
    shape = tuple(image.shape[-2:])
    for name, mask in masks.items():
        if mask is not None and np.shape(mask) != shape:
            raise ValueError(f"{name} must have shape {shape} (Y, X), got {np.shape(mask)}")

    def run(tile: Tile) -> ImageResult:
        y0, y1, x0, x1 = tile.outer
        parts = {
            name: None if mask is None else np.asarray(mask[y0:y1, x0:x1])
            for name, mask in masks.items()
        }
        return analyze_image(crop(image, tile.outer), params=params, **parts)

    if workers <= 1:
        for tile in tiles:
            yield tile, run(tile)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from zip(tiles, pool.map(run, tiles), strict=True)


def _labels_array(labels_out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if labels_out is None:
        return np.zeros(shape, np.int32)
    if labels_out.shape != tuple(shape) or labels_out.dtype != np.int32:
        raise ValueError(
            f"labels_out must be an int32 array of shape {tuple(shape)}, got "
            f"{labels_out.dtype} {labels_out.shape}"
        )
    return labels_out


def _keep_owned(
    tile: Tile, result: ImageResult, labels: np.ndarray, first: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Paste the nuclei this tile owns into ``labels`` from label ``first`` on; return
    their rows and signals."""
    oy, _, ox, _ = tile.outer
    cy0, cy1, cx0, cx1 = tile.core
    cells = result.cells
    owned = (
        (cells["centroid_y"] + oy >= cy0)
        & (cells["centroid_y"] + oy < cy1)
        & (cells["centroid_x"] + ox >= cx0)
        & (cells["centroid_x"] + ox < cx1)
    )
    cells = cells[owned].copy()
    new_ids = np.zeros(int(result.labels.max()) + 1, np.int32)
    new_ids[cells["label"].to_numpy()] = np.arange(first, first + len(cells), dtype=np.int32)
    local = new_ids[result.labels]
    y0, y1, x0, x1 = tile.outer
    window = labels[y0:y1, x0:x1]
    window[local > 0] = local[local > 0]
    cells["label"] = new_ids[cells["label"].to_numpy()]
    cells["centroid_y"] += oy
    cells["centroid_x"] += ox

    spots = result.spots.copy()
    spots["y"] += oy
    spots["x"] += ox
    in_core = (spots["y"] >= cy0) & (spots["y"] < cy1) & (spots["x"] >= cx0) & (spots["x"] < cx1)
    in_owned = spots["label"].to_numpy() > 0
    in_owned[in_owned] = new_ids[spots["label"].to_numpy()[in_owned]] > 0
    keep = in_owned | ((spots["label"] == 0) & in_core)
    spots = spots[keep].copy()
    spots["label"] = new_ids[spots["label"].to_numpy()]
    return cells, spots


def _join(parts: list[pd.DataFrame], schema: dict[str, str]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else empty_table(schema)


def _drop_duplicates_outside(spots: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """Drop 'outside' signals that lie in a nucleus another tile owns (it reports them)."""
    if len(spots) == 0:
        return spots
    y = np.clip(np.rint(spots["y"].to_numpy()).astype(np.int64), 0, labels.shape[0] - 1)
    x = np.clip(np.rint(spots["x"].to_numpy()).astype(np.int64), 0, labels.shape[1] - 1)
    covered = labels[y, x] > 0
    return spots[~((spots["label"] == 0).to_numpy() & covered)].reset_index(drop=True)
