"""Case reports: ``case.json`` and a self-contained, printable ``report.html``.

The HTML page is rendered from the same record that is written to
``case.json``, so what a pathologist reads and what a program reads agree.
Field overviews and the nucleus gallery are small PNG images embedded in the
page (no external files, scripts or fonts), made by :func:`field_figures` in
the worker that analysed the field.
"""

from __future__ import annotations

import base64
import html
import json
import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from ishcount import RESEARCH_USE_NOTICE, __version__
from ishcount.image import FishImage, max_projection
from ishcount.io import atomic_write, jsonable, write_json

OVERVIEW_MAX_PX = 900
GALLERY_SIZE = 24
SCORED_RGB = (255, 255, 255)
EXCLUDED_RGB = (255, 176, 0)
ROI_RGB = (0, 200, 255)


# ----------------------------------------------------------------------------- figures


def encode_png(rgb: np.ndarray) -> bytes:
    """Encode an 8-bit RGB image as PNG bytes (stdlib zlib only).

    The data are deflated with run-length matching only: camera noise leaves little for a
    full search to find (one 2048x2048 field's figures: 2.04 MB at zlib level 6, 2.09 MB
    run-length), and it takes a third of the time (19 ms against 59 ms).

    Parameters
    ----------
    rgb : ndarray of uint8, shape (Y, X, 3)

    Returns
    -------
    bytes

    Examples
    --------
    >>> encode_png(np.zeros((2, 3, 3), np.uint8))[:8]
    b'\\x89PNG\\r\\n\\x1a\\n'
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width, _ = rgb.shape
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, -1)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", _deflate_rle(raw.tobytes()))
        + chunk(b"IEND", b"")
    )


def _deflate_rle(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    return packer.compress(data) + packer.flush()


def display_limits(image: FishImage) -> dict[str, tuple[float, float]]:
    """Display range of each channel: its 1st and 99.8th percentiles (on a 1-in-16 sample)."""
    limits = {}
    for name in image.channel_names:
        sample = np.asarray(image.channel(name))[..., ::4, ::4]
        low, high = np.percentile(sample, (1.0, 99.8))
        limits[name] = (float(low), max(float(high), float(low) + 1e-6))
    return limits


def composite_rgb(
    image: FishImage,
    step: int = 1,
    *,
    limits: Mapping[str, tuple[float, float]] | None = None,
    window: tuple[slice, slice] = (slice(None), slice(None)),
) -> np.ndarray:
    """Display composite: HER2 red, CEP17 green, DAPI blue.

    Parameters
    ----------
    image : FishImage
        z-stacks are max-projected.
    step : int
        Keep every ``step``-th pixel along y and x (block maximum, so signals survive).
    limits : mapping, optional
        Display range per channel; default :func:`display_limits`.
    window : tuple of slice
        Region ``(y, x)`` to render; default the whole field.

    Returns
    -------
    ndarray of uint8, shape (Y // step, X // step, 3)
    """
    limits = limits or display_limits(image)
    planes = []
    for name in ("her2", "cep17", "dapi"):
        array = image.channel(name)
        if array is None:
            planes.append(None)
            continue
        plane = max_projection(array[(..., *window)])
        low, high = limits[name]
        small = _block_max(plane, step).astype(np.float32)
        planes.append((small - np.float32(low)) * np.float32(255.0 / (high - low)))
    shape = next(p.shape for p in planes if p is not None)
    rgb = np.zeros((*shape, 3), np.uint8)
    for index, plane in enumerate(planes):
        if plane is not None:
            rgb[..., index] = np.clip(plane, 0, 255).astype(np.uint8)
    return rgb


def _block_max(plane: np.ndarray, step: int) -> np.ndarray:
    """Maximum of each ``step`` x ``step`` block (strided passes, any dtype)."""
    if step == 1:
        return plane
    height, width = (plane.shape[0] // step) * step, (plane.shape[1] // step) * step
    rows = plane[0:height:step, :width].copy()
    for offset in range(1, step):
        np.maximum(rows, plane[offset:height:step, :width], out=rows)
    out = rows[:, 0::step].copy()
    for offset in range(1, step):
        np.maximum(out, rows[:, offset::step], out=out)
    return out


def field_figures(
    image: FishImage, labels: np.ndarray, cells: pd.DataFrame, roi: np.ndarray | None = None
) -> dict[str, Any]:
    """Overview and nucleus gallery of one analysed field, as embeddable PNGs.

    Parameters
    ----------
    image : FishImage
        The field.
    labels : ndarray of int, shape (Y, X)
        Its nuclei.
    cells : pandas.DataFrame
        Its cell table (``label``, ``is_scored``, counts).
    roi : ndarray of bool, shape (Y, X), optional
        The region that was scored; outlined in the overview.

    Returns
    -------
    dict
        ``overview`` (base64 PNG with scored nuclei outlined white, excluded ones amber and
        the region of interest, if any, light blue), ``step`` (downsampling factor) and
        ``gallery`` (scored nuclei: label, counts, PNG).
    """
    step = max(1, math.ceil(max(labels.shape) / OVERVIEW_MAX_PX))
    limits = display_limits(image)
    rgb = composite_rgb(image, step, limits=limits)
    small = labels[::step, ::step][: rgb.shape[0], : rgb.shape[1]]
    scored = set(cells.loc[cells["is_scored"], "label"].tolist())
    edges = find_boundaries(small, mode="inner")
    is_scored = np.isin(small, list(scored))
    rgb[edges & is_scored] = SCORED_RGB
    rgb[edges & ~is_scored] = EXCLUDED_RGB
    if roi is not None:
        region = np.asarray(roi, bool)[::step, ::step][: rgb.shape[0], : rgb.shape[1]]
        rgb[find_boundaries(region, mode="inner")] = ROI_RGB
    return {
        "overview": base64.b64encode(encode_png(rgb)).decode("ascii"),
        "step": step,
        "roi": roi is not None,
        "gallery": _gallery(image, labels, cells, limits, _boxes(labels, step)),
    }


def _boxes(labels: np.ndarray, step: int) -> list[tuple[slice, slice] | None]:
    """Bounding boxes of the nuclei, from every ``step``-th pixel, widened by ``step`` so
    that they hold the pixels between the samples (a 2048 field: 6 ms, against 50 ms for
    every pixel)."""
    boxes = ndi.find_objects(labels[::step, ::step])
    if step == 1:
        return boxes
    ny, nx = labels.shape
    return [
        None
        if box is None
        else (
            slice(max(box[0].start * step - step, 0), min(box[0].stop * step + step, ny)),
            slice(max(box[1].start * step - step, 0), min(box[1].stop * step + step, nx)),
        )
        for box in boxes
    ]


def _gallery(
    image: FishImage,
    labels: np.ndarray,
    cells: pd.DataFrame,
    limits: Mapping[str, Any],
    boxes: Sequence[tuple[slice, slice] | None],
) -> list[dict[str, Any]]:
    chosen = cells[cells["is_scored"]].sort_values(["n_her2", "label"], ascending=[False, True])
    if len(chosen) > GALLERY_SIZE:
        picks = np.linspace(0, len(chosen) - 1, GALLERY_SIZE).round().astype(int)
        chosen = chosen.iloc[np.unique(picks)]
    items = []
    for row in chosen.itertuples():
        box = boxes[row.label - 1] if row.label <= len(boxes) else None
        if box is None:  # a nucleus smaller than the sampling step
            box = ndi.find_objects((labels == row.label).view(np.uint8))[0]
        y0, y1 = max(box[0].start - 8, 0), min(box[0].stop + 8, labels.shape[0])
        x0, x1 = max(box[1].start - 8, 0), min(box[1].stop + 8, labels.shape[1])
        crop = composite_rgb(image, limits=limits, window=(slice(y0, y1), slice(x0, x1)))
        crop[find_boundaries(labels[y0:y1, x0:x1] == row.label, mode="inner")] = SCORED_RGB
        items.append(
            {
                "label": int(row.label),
                "n_her2": int(row.n_her2),
                "n_cep17": int(row.n_cep17),
                "n_her2_clusters": int(row.n_her2_clusters),
                "png": base64.b64encode(encode_png(crop)).decode("ascii"),
            }
        )
    return items


# ----------------------------------------------------------------------------- records


def provenance(pipeline: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """Versions of ishcount and its dependencies, plus the pipeline and anything in ``extra``."""
    from importlib.metadata import PackageNotFoundError, version

    deps: dict[str, str | None] = {}
    for package in ("numpy", "scipy", "scikit-image", "tifffile", "pandas", "dask"):
        try:
            deps[package] = version(package)
        except PackageNotFoundError:
            deps[package] = None
    return {"ishcount": __version__, "dependencies": deps, "pipeline": pipeline, **extra}


def case_record(
    *,
    case: str,
    summary: Any,
    classification: Any,
    fields: Sequence[Mapping[str, Any]],
    images: Sequence[Mapping[str, Any]],
    count_params: Mapping[str, Any],
    provenance: Mapping[str, Any],
    review: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``case.json`` record of one case, as written by ``ishcount run`` and the napari review.

    Parameters
    ----------
    case : str
        Case name.
    summary : CaseSummary
        From :func:`ishcount.score.score_case`.
    classification : Classification
        From :func:`ishcount.rules.classify`.
    fields : sequence of mapping
        Per field: ``name, status ("done", "resumed", "reviewed" or "failed"), error, files
        ([{path, sha256}]), n_nuclei, n_scored, seconds``.
    images : sequence of mapping
        Per analysed field: ``name, source (paths), spacing_um`` and, when known,
        ``channel_mapping``; what a reviewer needs to reopen the images.
    count_params : mapping
        The :class:`ishcount.assign.CountParams` used, as a dict.
    provenance : mapping
        From :func:`provenance`.
    review : mapping, optional
        ``reviewed, reviewer, saved_at, edits`` (the audit trail of manual changes).
    """
    result = jsonable(classification)
    return {
        "case": case,
        "research_use_only": RESEARCH_USE_NOTICE,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "ishcount_version": __version__,
        "rule_set": result.get("rule_set"),
        "ihc": result.get("ihc"),
        "classification": result,
        "summary": jsonable(summary),
        "quality_flags": result.get("quality_flags", []),
        "count_params": jsonable(count_params),
        "images": [jsonable(i) for i in images],
        "fields": [jsonable(f) for f in fields],
        "failed_fields": [
            {"name": f["name"], "error": f["error"]} for f in fields if f["status"] == "failed"
        ],
        "review": jsonable(review) if review else {"reviewed": False, "edits": []},
        "provenance": jsonable(provenance),
    }


def write_case_report(
    case_dir: Path,
    record: Mapping[str, Any],
    *,
    figures: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Write ``case.json`` and ``report.html`` into ``case_dir`` atomically.

    Parameters
    ----------
    case_dir : Path
        The case's output folder.
    record : mapping
        From :func:`case_record`.
    figures : mapping, optional
        Field name to :func:`field_figures` output; by default read from
        ``fields/<name>/figures.json`` where the analysis left them.
    """
    write_json(record, case_dir / "case.json")
    if figures is None:
        figures = {}
        for entry in record["fields"]:
            path = case_dir / "fields" / entry["name"] / "figures.json"
            if entry["status"] != "failed" and path.is_file():
                figures[entry["name"]] = json.loads(path.read_text(encoding="utf-8"))
    page = render_html(record, figures)
    atomic_write(case_dir / "report.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))


# ----------------------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d2329;margin:2em auto;
max-width:1100px;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}
h2{border-bottom:1px solid #ccd;padding-bottom:.2em;margin-top:1.6em}
.notice{background:#fff4d6;border:1px solid #e0b84f;padding:.6em 1em;border-radius:4px}
.result{display:flex;flex-wrap:wrap;gap:1em;margin:1em 0}
.result div{border:1px solid #ccd;border-radius:6px;padding:.5em 1em;min-width:9em}
.result b{display:block;font-size:1.4em}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccd;padding:.25em .6em;text-align:left}
.tripped{color:#a40000;font-weight:bold}.failed{color:#a40000}
.gallery{display:flex;flex-wrap:wrap;gap:.6em}
.gallery figure{margin:0;text-align:center;font-size:12px}
.gallery img{height:110px;image-rendering:pixelated}
img.overview{max-width:100%;border:1px solid #ccd}
@media print{.field{page-break-inside:avoid}}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _ci(interval: Any) -> str:
    if not interval:
        return ""
    return f" (95% CI {interval[0]:.2f}-{interval[1]:.2f})"


def _items(title: str, values: Sequence[str]) -> str:
    if not values:
        return ""
    return f"<h3>{_e(title)}</h3><ul>" + "".join(f"<li>{_e(v)}</li>" for v in values) + "</ul>"


def render_html(record: Mapping[str, Any], figures: Mapping[str, Mapping[str, Any]]) -> str:
    """Render a case record (and its field figures) as one self-contained HTML page."""
    result = record.get("classification") or {}
    summary = record.get("summary") or {}
    counts = summary.get("counts") or {}
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>ishcount report: {_e(record['case'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>HER2 FISH report: {_e(record['case'])}</h1>",
        f"<p class='notice'><b>Research use only.</b> {_e(record['research_use_only'])}</p>",
        "<div class='result'>",
        f"<div>Result<b>{_e(result.get('call', 'no result'))}</b></div>",
        f"<div>Group<b>{_e(result.get('group') or result.get('band') or 'n/a')}</b></div>",
        f"<div>HER2/CEP17 ratio<b>{_fmt(result.get('ratio'))}</b>"
        f"{_e(_ci(summary.get('ratio_ci')))}</div>",
        f"<div>Mean HER2 / cell<b>{_fmt(result.get('mean_her2'))}</b>"
        f"{_e(_ci(summary.get('mean_her2_ci')))}</div>",
        f"<div>Mean CEP17 / cell<b>{_fmt(result.get('mean_cep17'))}</b></div>",
        f"<div>Nuclei scored<b>{_e(counts.get('n_nuclei', 0))}</b>"
        f"in {_e(counts.get('n_fields'))} fields</div></div>",
        f"<p>Rule set: {_e(result.get('rule_set'))} (version {_e(result.get('rule_set_version'))})"
        + (f"; IHC {_e(result['ihc'])}" if result.get("ihc") else "")
        + "</p>",
    ]
    if result.get("comment"):
        parts.append(f"<h2>Comment</h2><p>{_e(result['comment'])}</p>")
    parts.append(_items("Work-up still required", result.get("workup") or []))
    parts.append(_items("Recommendations", result.get("recommendations") or []))
    parts.append(_items("Annotations", result.get("annotations") or []))
    parts.append(_items("Why", result.get("reasons") or []))
    parts.append(_quality_table(record.get("quality_flags") or []))
    parts.append(_fields_table(record.get("fields") or [], summary))
    masks = {entry.get("name"): entry.get("masks") or {} for entry in record.get("images") or []}
    for name, figure in figures.items():
        parts.append(_field_section(name, figure, masks.get(name) or {}))
    parts.append(_review_section(record.get("review") or {}))
    prov = record.get("provenance") or {}
    parts.append(
        "<h2>Provenance</h2>"
        f"<p>ishcount {_e(record.get('ishcount_version'))}, pipeline "
        f"{_e((prov.get('pipeline') or {}).get('name'))}, created {_e(record.get('created'))}. "
        "Parameters, dependency versions and the SHA-256 of every input file are in case.json.</p>"
        f"<p class='notice'>{_e(RESEARCH_USE_NOTICE)}</p></body></html>"
    )
    return "\n".join(p for p in parts if p)


def _review_section(review: Mapping[str, Any]) -> str:
    if not review.get("reviewed"):
        return "<h2>Review</h2><p>Not yet reviewed by a person.</p>"
    edits = review.get("edits") or []
    head = (
        f"<h2>Review</h2><p>Reviewed by {_e(review.get('reviewer') or 'an unnamed reviewer')}, "
        f"saved {_e(review.get('saved_at'))}; {len(edits)} manual change(s).</p>"
    )
    if not edits:
        return head
    rows = "".join(
        f"<tr><td>{_e(a.get('time'))}</td><td>{_e(a.get('reviewer'))}</td>"
        f"<td>{_e(a.get('image'))}</td><td>{_e(a.get('action'))} {_e(a.get('target'))}</td>"
        f"<td>{_e(a.get('before'))}</td><td>{_e(a.get('after'))}</td></tr>"
        for a in edits
    )
    return (
        f"{head}<table><tr><th>time</th><th>reviewer</th><th>field</th><th>change</th>"
        f"<th>before</th><th>after</th></tr>{rows}</table>"
    )


def _quality_table(flags: Sequence[Mapping[str, Any]]) -> str:
    if not flags:
        return ""
    rows = "".join(
        f"<tr class='{'tripped' if f.get('tripped') else ''}'><td>{_e(f.get('name'))}</td>"
        f"<td>{_fmt(f.get('value'), 3)}</td><td>{_fmt(f.get('limit'), 3)}</td>"
        f"<td>{'TRIPPED' if f.get('tripped') else 'ok'}</td><td>{_e(f.get('message'))}</td></tr>"
        for f in flags
    )
    return (
        "<h2>Quality flags</h2><table><tr><th>check</th><th>value</th><th>limit</th>"
        f"<th>status</th><th>meaning</th></tr>{rows}</table>"
    )


def _fields_table(fields: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr class='{'failed' if f['status'] == 'failed' else ''}'><td>{_e(f['name'])}</td>"
        f"<td>{_e(f['status'])}</td><td>{_e(f['n_nuclei'])}</td><td>{_e(f['n_scored'])}</td>"
        f"<td>{_e(f.get('error'))}</td></tr>"
        for f in fields
    )
    reasons = summary.get("exclusion_reasons") or []
    excluded = ", ".join(f"{_e(reason)}: {_e(n)}" for reason, n in reasons) or "none"
    return (
        "<h2>Fields</h2><table><tr><th>field</th><th>status</th><th>nuclei</th><th>scored</th>"
        f"<th>error</th></tr>{rows}</table><p>Nuclei not scored, by reason: {excluded}.</p>"
    )


_MASK_WORDS = {"nuclei": "nuclei segmented elsewhere", "roi": "region of interest"}


def _field_section(name: str, figure: Mapping[str, Any], masks: Mapping[str, str]) -> str:
    gallery = "".join(
        f"<figure><img alt='nucleus {g['label']}' src='data:image/png;base64,{g['png']}'>"
        f"<figcaption>#{g['label']}: HER2 {g['n_her2']}, CEP17 {g['n_cep17']}"
        + (f" ({g['n_her2_clusters']} cl.)" if g["n_her2_clusters"] else "")
        + "</figcaption></figure>"
        for g in figure.get("gallery", [])
    )
    return (
        f"<div class='field'><h2>Field {_e(name)}</h2>"
        f"<img class='overview' alt='field {_e(name)}' "
        f"src='data:image/png;base64,{figure['overview']}'>"
        "<p>HER2 red, CEP17 green, DAPI blue; scored nuclei outlined white, excluded amber"
        + ("; the region of interest light blue" if figure.get("roi") else "")
        + ".</p>"
        + "".join(
            f"<p>{_MASK_WORDS.get(kind, _e(kind)).capitalize()}: {_e(Path(path).name)}</p>"
            for kind, path in sorted(masks.items())
        )
        + f"<div class='gallery'>{gallery}</div></div>"
    )
