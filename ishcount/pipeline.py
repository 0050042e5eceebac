"""Batch runs: folders of images through the stages as a Dask graph.

A folder of images is one case (each image a field); a folder of such folders
is a batch. One image is one task through every per-image stage
(:func:`process_field`); each case then pools its fields' nuclei through
:func:`ishcount.score.score_case` and :func:`ishcount.rules.classify`
(:func:`finish_case`).

By default the tasks run on this machine in worker processes (dask's local
process pool, one field per task: nothing to install or start; ``workers=1``
runs them in this process). ``scheduler="tcp://host:8786"`` sends the same
tasks to an existing ``dask.distributed`` cluster; its workers must see the
input and output folders (a shared file system) and have ishcount installed.

Results are resumable: each field writes ``fields/<name>/field.json`` last,
holding the SHA-256 of its input files and the digest of the parameters; a
rerun skips fields whose record matches and recomputes the rest.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile

from ishcount import __version__
from ishcount.analyze import ImageResult, analyze_image, input_facts
from ishcount.config import PipelineConfig, load_pipeline
from ishcount.image import FishImage
from ishcount.io import (
    ImageSource,
    atomic_write,
    field_masks,
    file_sources,
    find_images,
    is_image_file,
    read_image,
    read_mask,
    sha256_file,
    write_json,
    write_labels,
    write_table,
)
from ishcount.qupath import write_qupath
from ishcount.report import case_record, field_figures, provenance, write_case_report
from ishcount.rules import classify, parse_ihc
from ishcount.score import score_case
from ishcount.tables import CELL_SCHEMA, SPOT_SCHEMA, conform, empty_table
from ishcount.tiles import analyze_tiled

FIELD_RECORD = "field.json"


@dataclass(frozen=True)
class Case:
    """One case: a name and the fields (images) that belong to it."""

    name: str
    folder: Path
    sources: tuple[ImageSource, ...]


@dataclass(frozen=True)
class RunOptions:
    """What the command line adds to a pipeline file.

    Parameters
    ----------
    channels : mapping of str to int, optional
        Channel indices; override the image metadata and the pipeline file.
    spacing_um : float or tuple of float, optional
        Pixel size; overrides the image metadata and the pipeline file.
    ihc : str, optional
        Concurrent IHC score (0, 1+, 2+, 3+) for every case of the run.
    ihc_by_case : mapping of str to str, optional
        IHC score per case name (:func:`read_ihc_table`); a case it lists takes its score
        there, the others ``ihc``.
    seed : int
        Seed of the bootstrap intervals.
    """

    channels: dict[str, int] | None = None
    spacing_um: float | tuple[float, ...] | None = None
    ihc: str | None = None
    ihc_by_case: dict[str, str] | None = None
    seed: int = 0

    def ihc_of(self, case: str) -> str | None:
        """The IHC score the case is classified with (None: no IHC result given).

        Examples
        --------
        >>> options = RunOptions(ihc="2+", ihc_by_case={"S-24-0017": "3+"})
        >>> options.ihc_of("S-24-0017"), options.ihc_of("S-24-0018")
        ('3+', '2+')
        """
        return (self.ihc_by_case or {}).get(case, self.ihc)


def read_ihc_table(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read the concurrent IHC score of each case from a CSV file.

    Parameters
    ----------
    path : path
        A CSV file with a header naming a ``case`` and an ``ihc`` column (any case, other
        columns ignored, comma, semicolon or tab separated): one row per case folder name
        and its score, 0, 1+, 2+ or 3+. Rows with an empty score are skipped.

    Returns
    -------
    dict of str to str
        Case name to its canonical score (:func:`ishcount.rules.parse_ihc`).

    Raises
    ------
    ValueError
        Naming the file (and the line): unreadable, no ``case`` or ``ihc`` column, a score
        that is not one of the four, or one case given two different scores.

    Examples
    --------
    >>> import tempfile
    >>> table = Path(tempfile.mkdtemp()) / "ihc.csv"
    >>> _ = table.write_text("case,ihc,block\\nS-24-0017,2+,A1\\nS-24-0018,3,B2\\n")
    >>> read_ihc_table(table)
    {'S-24-0017': '2+', 'S-24-0018': '3+'}
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the IHC table: {exc}") from exc
    try:
        dialect = csv.Sniffer().sniff(text.partition("\n")[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = csv.reader(text.splitlines(), dialect)
    header = [name.strip().lower() for name in next(rows, [])]
    if "case" not in header or "ihc" not in header:
        raise ValueError(f"{path}: the IHC table needs a header with 'case' and 'ihc' columns")
    case_at, ihc_at = header.index("case"), header.index("ihc")
    scores: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        case = row[case_at].strip() if len(row) > case_at else ""
        given = row[ihc_at].strip() if len(row) > ihc_at else ""
        if not case or not given:
            continue
        try:
            score = parse_ihc(int(given) if given.isdigit() else given)
        except ValueError:
            raise ValueError(
                f"{path}, line {line}: IHC score {given!r} of case {case!r} is not 0, 1+, 2+ or 3+"
            ) from None
        if scores.setdefault(case, score) != score:
            raise ValueError(
                f"{path}, line {line}: case {case!r} has two IHC scores, {scores[case]} and {score}"
            )
    return scores


@dataclass(frozen=True)
class FieldRecord:
    """Outcome of one field task (small, so it travels back from workers cheaply)."""

    case: str
    name: str
    status: str  # "done", "resumed" or "failed"
    error: str = ""
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256
    n_nuclei: int = 0
    n_scored: int = 0
    seconds: float = 0.0
    spacing_um: tuple[float, ...] = ()
    channel_mapping: dict[str, int] | None = None
    masks: dict[str, str] = field(default_factory=dict)  # kind -> path (one of files)
    scene: int | None = None  # the scene of a multi-scene CZI file

    @property
    def ok(self) -> bool:
        """True when the field has results."""
        return self.status != "failed"


@dataclass(frozen=True)
class CaseOutcome:
    """Outcome of one case."""

    name: str
    directory: Path
    fields: tuple[FieldRecord, ...]
    record: dict[str, Any]

    @property
    def failed_fields(self) -> tuple[FieldRecord, ...]:
        """Fields that could not be analysed."""
        return tuple(f for f in self.fields if not f.ok)

    @property
    def one_line(self) -> str:
        """``case: group, call, ratio, mean HER2 (n nuclei, fields)`` for the terminal."""
        result = self.record.get("classification") or {}
        summary = self.record.get("summary") or {}
        counts = summary.get("counts") or {}
        ratio = result.get("ratio")
        mean = result.get("mean_her2")
        text = (
            f"{self.name}: {result.get('call', 'no result')}"
            + (f", group {result['group']}" if result.get("group") else "")
            + (f", ratio {ratio:.2f}" if ratio is not None else "")
            + (f", mean HER2 {mean:.2f}" if mean is not None else "")
            + f" ({counts.get('n_nuclei', 0)} nuclei in {len(self.fields)} fields"
        )
        failed = len(self.failed_fields)
        return text + (f", {failed} failed)" if failed else ")")


# ----------------------------------------------------------------------------- discovery


def discover_cases(
    inputs: Sequence[str | os.PathLike[str]], *, config: PipelineConfig | None = None
) -> list[Case]:
    """Find the cases under the input paths.

    Parameters
    ----------
    inputs : sequence of path
        Image files (each its own one-field case), case folders (holding images), or
        batch folders (holding case folders).
    config : PipelineConfig, optional
        Supplies the per-channel file-name patterns.

    Returns
    -------
    list of Case
        In input order, then by name.

    Raises
    ------
    ValueError
        For a path that does not exist, a folder with no images, or two cases with one name.
    """
    patterns = dict(config.channel_files) if config and config.channel_files else None
    cases: list[Case] = []
    for item in inputs:
        path = Path(item)
        if path.is_file() or is_image_file(path):  # an OME-Zarr image is a folder
            sources = tuple(
                replace(source, masks=field_masks(path, source.name))
                for source in file_sources(path)
            )
            cases.append(Case(ImageSource.from_path(path).name, path.parent, sources))
            continue
        if not path.is_dir():
            raise ValueError(f"{path}: no such file or folder")
        found = _cases_in(path, patterns)
        if not found:
            raise ValueError(f"{path}: no images found (nor case folders holding images)")
        cases.extend(found)
    names = [case.name for case in cases]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"two inputs give cases of the same name: {duplicates}")
    return cases


def _cases_in(folder: Path, patterns: dict[str, str] | None) -> list[Case]:
    cases = []
    sources = find_images(folder, channel_patterns=patterns)
    if sources:
        cases.append(Case(folder.name, folder, tuple(sources)))
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        sub_sources = find_images(sub, channel_patterns=patterns)
        if sub_sources:
            cases.append(Case(sub.name, sub, tuple(sub_sources)))
    return cases


def check_output_folder(out: Path, cases: Sequence[Case]) -> Path:
    """Refuse an output folder inside an input folder, and case names that escape it."""
    out = Path(out).resolve()
    for case in cases:
        folder = case.folder.resolve()
        if out == folder or folder in out.parents:
            raise ValueError(f"--out {out} lies inside the input folder {folder}; choose another")
        target = (out / case.name).resolve()
        if target.parent != out or case.name in ("", ".", ".."):
            raise ValueError(f"case name {case.name!r} would write outside {out}")
    return out


# ----------------------------------------------------------------------------- one field


def process_field(
    case: str, source: ImageSource, case_dir: Path, config: PipelineConfig, options: RunOptions
) -> FieldRecord:
    """Analyse one field and write its results; the unit of work of a batch.

    Skips the work when ``fields/<name>/field.json`` records the same input hashes and
    parameters. Never raises for a bad image: the failure is recorded and returned.
    """
    start = time.perf_counter()
    field_dir = case_dir / "fields" / source.name
    masks = {kind: str(path.resolve()) for kind, path in source.masks}
    try:
        inputs = (*source.paths, *(path for _, path in source.masks))
        files = {str(p.resolve()): sha256_file(p) for p in inputs}
    except OSError as err:
        return FieldRecord(
            case, source.name, "failed", f"{source.paths[0]}: {err}", scene=source.scene
        )
    key = _field_key(files, config, options)
    previous = _read_record(field_dir / FIELD_RECORD)
    if previous.get("key") == key and previous.get("status") == "done":
        _add_missing_qupath(field_dir, case_dir, source.name)
        return FieldRecord(
            case,
            source.name,
            "resumed",
            files=files,
            n_nuclei=previous["n_nuclei"],
            n_scored=previous["n_scored"],
            spacing_um=tuple(previous["spacing_um"]),
            channel_mapping=previous["channel_mapping"],
            masks=masks,
            scene=source.scene,
        )
    scratch = field_dir / "labels.tmp.npy"  # on-disk labels of a tiled image
    try:
        image, result, roi = _analyse(source, config, options, scratch)
        _write_field(image, result, field_dir, case_dir, roi)
    except Exception as err:
        named = any(str(path) in str(err) for path in inputs)
        message = str(err) if named else f"{source.paths[0]}: {err}"
        record = FieldRecord(
            case,
            source.name,
            "failed",
            message,
            files,
            seconds=time.perf_counter() - start,
            masks=masks,
            scene=source.scene,
        )
        field_dir.mkdir(parents=True, exist_ok=True)
        write_json({"key": key, "status": "failed", "error": message}, field_dir / FIELD_RECORD)
        return record
    finally:
        scratch.unlink(missing_ok=True)
    record = FieldRecord(
        case,
        source.name,
        "done",
        files=files,
        n_nuclei=len(result.cells),
        n_scored=int(result.cells["is_scored"].sum()),
        seconds=time.perf_counter() - start,
        spacing_um=tuple(image.spacing_um),
        channel_mapping=dict(image.metadata.get("channel_mapping") or {}),
        masks=masks,
        scene=source.scene,
    )
    write_json(
        {
            "key": key,
            "status": "done",
            "n_nuclei": record.n_nuclei,
            "n_scored": record.n_scored,
            "spacing_um": list(record.spacing_um),
            "channel_mapping": record.channel_mapping,
            "lossy": image.metadata.get("lossy", ""),
            "dapi_clipped": round(result.dapi_clipped, 4),
            "seconds": dict(result.seconds),
            "crosstalk": dict(result.crosstalk),
            "detection": {channel: dict(found) for channel, found in result.detection.items()},
        },
        field_dir / FIELD_RECORD,
    )
    return record


def _add_missing_qupath(field_dir: Path, case_dir: Path, name: str) -> None:
    """Write a finished field's QuPath GeoJSON from its stored results when a run of an
    ishcount that did not write it left it out."""
    target = case_dir / "labels" / f"{name}.geojson"
    labels_path = case_dir / "labels" / f"{name}.tif"
    if target.exists() or not labels_path.is_file():
        return
    cells = pd.read_csv(field_dir / "cells.csv", keep_default_na=False)
    spots = pd.read_csv(field_dir / "spots.csv", keep_default_na=False)
    write_qupath(tifffile.imread(labels_path), cells, spots, target)


def _field_key(files: dict[str, str], config: PipelineConfig, options: RunOptions) -> dict:
    return {
        "inputs": sorted(files.values()),
        "params": config.analysis.digest(),
        "channels": options.channels or (dict(config.channels) if config.channels else None),
        "spacing_um": options.spacing_um or config.pixel_size_um,
        "ishcount": __version__,
    }


def _read_record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _analyse(
    source: ImageSource, config: PipelineConfig, options: RunOptions, scratch: Path
) -> tuple[FishImage, ImageResult, np.ndarray | None]:
    """Read and analyse one field; an image over the tile size is analysed tile by tile,
    its labels kept in a memory-mapped ``scratch`` file so that memory stays bounded by
    the tile, not the image. The field's masks (nucleus labels made elsewhere, a region
    of interest) are read and passed on; the region is returned with the result."""
    image = read_image(
        source,
        channels=options.channels,
        spacing_um=options.spacing_um,
        default_channels=config.channels,
        default_spacing_um=config.pixel_size_um,
    )
    masks = {
        kind: read_mask(path, kind=kind, shape=image.shape[-2:]) for kind, path in source.masks
    }
    nuclei, roi = masks.get("nuclei"), masks.get("roi")
    if max(image.shape[-2:]) > config.tile_size:
        scratch.parent.mkdir(parents=True, exist_ok=True)
        labels = np.lib.format.open_memmap(
            scratch, mode="w+", dtype=np.int32, shape=image.shape[-2:]
        )
        result = analyze_tiled(
            image,
            params=config.analysis,
            tile_size=config.tile_size,
            labels_out=labels,
            labels=nuclei,
            roi=roi,
        )
        return image, result, roi
    return image, analyze_image(image, params=config.analysis, labels=nuclei, roi=roi), roi


def _write_field(
    image: FishImage,
    result: ImageResult,
    field_dir: Path,
    case_dir: Path,
    roi: np.ndarray | None = None,
) -> None:
    field_dir.mkdir(parents=True, exist_ok=True)
    (case_dir / "labels").mkdir(parents=True, exist_ok=True)
    write_table(result.cells, field_dir / "cells.csv")
    spots = result.spots.assign(image=result.name)
    write_table(spots, field_dir / "spots.csv")
    lateral = result.spacing_um[-2:]
    write_labels(result.labels, case_dir / "labels" / f"{result.name}.tif", spacing_um=lateral)
    roi_path = case_dir / "labels" / f"{result.name}.roi.tif"  # where napari's review reads it
    if roi is not None:
        write_labels(roi.astype(np.uint8), roi_path, spacing_um=lateral)
    else:  # a region from an earlier run of this field no longer applies
        roi_path.unlink(missing_ok=True)
    qupath = case_dir / "labels" / f"{result.name}.geojson"
    write_qupath(result.labels, result.cells, result.spots, qupath)
    figures = field_figures(image, result.labels, result.cells, roi)
    write_json(figures, field_dir / "figures.json")


# ----------------------------------------------------------------------------- one case


def finish_case(
    case: Case,
    records: Sequence[FieldRecord],
    case_dir: Path,
    config: PipelineConfig,
    options: RunOptions,
) -> CaseOutcome:
    """Pool the fields of a case, score and classify it, and write its outputs."""
    done = [r for r in records if r.ok]
    tables = {}
    for name, schema in (("cells.csv", CELL_SCHEMA), ("spots.csv", SPOT_SCHEMA)):
        texts = [(case_dir / "fields" / r.name / name).read_bytes() for r in done]
        tables[name] = _concat(texts, schema)
        if not _join_csv(texts, case_dir / name):
            write_table(tables[name], case_dir / name)
    cells, spots = tables["cells.csv"], tables["spots.csv"]
    facts = {r.name: _input_facts(case_dir / "fields" / r.name / FIELD_RECORD) for r in done}
    summary = score_case(
        cells,
        spots=spots,
        rng=options.seed,
        rule_set=config.rule_set,
        signal_sigma_um=[size for fact in facts.values() for size in fact["signal_sigma_um"]],
        lossy_inputs={name: fact["lossy"] for name, fact in facts.items() if fact["lossy"]},
        ridge_maxima={name: fact["ridge_maxima"] for name, fact in facts.items()},
        dapi_clipped={name: fact["dapi_clipped"] for name, fact in facts.items()},
    )
    ihc = options.ihc_of(case.name)
    result = classify(summary, rule_set=config.rule_set, ihc=ihc)
    record = case_record(
        case=case.name,
        summary=summary,
        classification=result,
        fields=[_field_entry(r) for r in records],
        images=[{**_image_entry(r), **facts[r.name]} for r in done],
        count_params=config.analysis.to_dict()["count"],
        provenance=provenance(
            config.to_dict(),
            options={
                "channels": options.channels,
                "spacing_um": options.spacing_um,
                "ihc": ihc,
                "seed": options.seed,
            },
        ),
    )
    write_case_report(case_dir, record)
    return CaseOutcome(case.name, case_dir, tuple(records), record)


def _input_facts(field_record: Path) -> dict[str, Any]:
    """What a field's record says about its input: how the file was compressed with loss
    ("" when it was not), the share of its nuclear area with clipped DAPI, and
    :func:`ishcount.analyze.input_facts` of its detection."""
    document = _read_record(field_record)
    facts = input_facts(document.get("detection") or {})
    lossy = str(document.get("lossy") or "")
    return {"lossy": lossy, "dapi_clipped": float(document.get("dapi_clipped") or 0.0), **facts}


def _concat(texts: Sequence[bytes], schema: dict[str, str]) -> pd.DataFrame:
    """Parse the field tables (CSV bytes) and pool them into one table of ``schema``."""
    frames = [pd.read_csv(io.BytesIO(t), keep_default_na=False, na_values=[""]) for t in texts]
    frames = [f for f in frames if len(f)]
    if not frames:
        table = empty_table(schema)
        return table.assign(image=pd.Series(dtype="object")) if "image" not in schema else table
    table = pd.concat(frames, ignore_index=True)
    for column, dtype in schema.items():
        if dtype == "object":
            table[column] = table[column].fillna("").astype(str)
    return conform(table, schema)


def _join_csv(texts: Sequence[bytes], destination: Path) -> bool:
    """Write the rows of CSV texts that share one header into ``destination``, as bytes.

    The field tables were written by :func:`ishcount.io.write_table`, so their text is
    already what the case table would be; copying it costs a fraction of formatting the
    numbers again. Returns False (nothing written) when there are no texts or the headers
    differ.
    """
    if not texts:
        return False
    headers = {text.partition(b"\n")[0] for text in texts}
    if len(headers) != 1:
        return False
    bodies = [text.partition(b"\n")[2] for text in texts]
    bodies = [body if body.endswith(b"\n") or not body else body + b"\n" for body in bodies]
    content = texts[0].partition(b"\n")[0] + b"\n" + b"".join(bodies)
    atomic_write(destination, lambda tmp: Path(tmp).write_bytes(content))
    return True


def _image_entry(record: FieldRecord) -> dict[str, Any]:
    masks = set(record.masks.values())
    return {
        "name": record.name,
        "source": [path for path in record.files if path not in masks],
        "masks": dict(record.masks),  # nuclei segmented elsewhere, region of interest
        "spacing_um": list(record.spacing_um),
        "channel_mapping": record.channel_mapping,
        **({} if record.scene is None else {"scene": record.scene}),
    }


def _field_entry(record: FieldRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "status": record.status,
        "error": record.error,
        "files": [{"path": p, "sha256": h} for p, h in record.files.items()],
        "n_nuclei": record.n_nuclei,
        "n_scored": record.n_scored,
        "seconds": round(record.seconds, 3),
    }


# ----------------------------------------------------------------------------- the batch


def run_batch(
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    config: PipelineConfig | str | None = None,
    options: RunOptions | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    on_field: Callable[[FieldRecord], None] | None = None,
) -> list[CaseOutcome]:
    """Run every field of every case through the stages and write the case outputs.

    Parameters
    ----------
    inputs : sequence of path
        Image files, case folders or batch folders (see :func:`discover_cases`).
    out : path
        Output folder; ``out/<case>/`` per case and ``out/summary.csv``.
    config : PipelineConfig or str, optional
        Pipeline (default ``breast-dual-probe``).
    options : RunOptions, optional
        Channel mapping, pixel size, IHC score and seed from the command line.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``). Default: a local
        cluster of worker processes for this run (or none when ``workers == 1``).
    workers : int, optional
        Local worker processes; default the number of CPUs.
    on_field : callable, optional
        Called with each :class:`FieldRecord` as it completes (progress display).

    Returns
    -------
    list of CaseOutcome
    """
    config = config if isinstance(config, PipelineConfig) else load_pipeline(config)
    options = options or RunOptions()
    cases = discover_cases(inputs, config=config)
    unknown = sorted(set(options.ihc_by_case or ()) - {case.name for case in cases})
    if unknown:
        warnings.warn(
            f"the IHC table names case(s) not in this run: {', '.join(unknown)}",
            UserWarning,
            stacklevel=2,
        )
    out_dir = check_output_folder(Path(out), cases)
    out_dir.mkdir(parents=True, exist_ok=True)
    for case in cases:
        (out_dir / case.name).mkdir(exist_ok=True)
    run = _run_in_process if scheduler is None and workers == 1 else _run_on_dask
    with _one_blas_thread() if scheduler is None else contextlib.nullcontext():
        outcomes = run(
            cases, out_dir, config, options, on_field, scheduler=scheduler, workers=workers
        )
    write_table(summary_table(outcomes), out_dir / "summary.csv")
    return outcomes


@contextlib.contextmanager
def _one_blas_thread():
    """One BLAS thread in this process and in the worker processes it starts.

    A field is one task: the workers are the parallelism. OpenBLAS's extra threads gain
    nothing on the few vector products of an analysis but keep spinning after each, which
    took 16 % more CPU than wall time per 2048 field and, with two workers on two cores,
    time from the other worker. Forked workers inherit the limit; spawned ones (macOS,
    Windows) read it from the environment. Dask's own workers (``--scheduler``) set the
    same through their nanny.
    """
    from threadpoolctl import threadpool_limits

    names = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, "1"))
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _run_in_process(cases, out_dir, config, options, on_field, **_) -> list[CaseOutcome]:
    outcomes = []
    for case in cases:
        records = []
        for source in case.sources:
            records.append(process_field(case.name, source, out_dir / case.name, config, options))
            if on_field is not None:
                on_field(records[-1])
        outcomes.append(finish_case(case, records, out_dir / case.name, config, options))
    return outcomes


def _graph(cases, out_dir, config, options) -> tuple[list[Any], list[Any]]:
    """The batch as a Dask graph: one task per field, one per case depending on its fields."""
    import dask

    field_tasks, case_tasks = [], []
    for case in cases:
        case_dir = out_dir / case.name
        fields = [
            dask.delayed(process_field, pure=False)(case.name, source, case_dir, config, options)
            for source in case.sources
        ]
        field_tasks += fields
        case_tasks.append(
            dask.delayed(finish_case, pure=False)(case, fields, case_dir, config, options)
        )
    return field_tasks, case_tasks


def _run_on_dask(
    cases, out_dir, config, options, on_field, *, scheduler, workers
) -> list[CaseOutcome]:
    """Run the graph on this machine's worker processes, or on a ``dask.distributed`` cluster."""
    field_tasks, case_tasks = _graph(cases, out_dir, config, options)
    if scheduler is None:
        return _run_local_processes(case_tasks, len(field_tasks), workers, on_field)
    from dask.distributed import Client, as_completed

    with Client(scheduler) as client:
        futures = client.compute([*field_tasks, *case_tasks])
        for future in as_completed(futures[: len(field_tasks)]):
            if on_field is not None:
                on_field(future.result())
        return client.gather(futures[len(field_tasks) :])


def _run_local_processes(case_tasks, n_fields, workers, on_field) -> list[CaseOutcome]:
    """Compute the case tasks on dask's local process pool, one task per unit of work."""
    import dask
    import dask.multiprocessing
    from dask.callbacks import Callback

    class _Report(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if isinstance(result, FieldRecord) and on_field is not None:
                on_field(result)

    n_workers = max(1, min(workers or os.cpu_count() or 1, n_fields))
    # Forked workers start at once with ishcount imported; spawned ones (macOS, Windows)
    # import it first, about a second each.
    context = "fork" if sys.platform.startswith("linux") else "spawn"
    with _Report(), dask.config.set({"multiprocessing.context": context}):
        # chunksize=1: each field is its own unit of work (dask batches 6 tasks by default).
        # The scheduler is passed as a function: by name, dask first imports distributed
        # to look for a default client (a quarter of a second before any work starts).
        return list(
            dask.compute(
                *case_tasks, scheduler=dask.multiprocessing.get, num_workers=n_workers, chunksize=1
            )
        )


def summary_table(outcomes: Sequence[CaseOutcome]) -> pd.DataFrame:
    """One row per case: the figures and the result, for ``summary.csv``."""
    rows = []
    for outcome in outcomes:
        result = outcome.record.get("classification") or {}
        counts = (outcome.record.get("summary") or {}).get("counts") or {}
        rows.append(
            {
                "case": outcome.name,
                "fields": len(outcome.fields),
                "failed_fields": len(outcome.failed_fields),
                "nuclei_scored": counts.get("n_nuclei", 0),
                "mean_her2": result.get("mean_her2"),
                "mean_cep17": result.get("mean_cep17"),
                "ratio": result.get("ratio"),
                "group": result.get("group"),
                "ihc": result.get("ihc"),
                "call": result.get("call"),
                "rule_set": result.get("rule_set"),
            }
        )
    return pd.DataFrame(rows)
