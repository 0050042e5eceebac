"""Batch throughput: fields per second with 1 and 2 workers (issue 5).

Writes one synthetic case of eight 2048x2048 three-channel fields (OME-TIFF, zlib) to a
temporary folder once, then times :func:`ishcount.pipeline.run_batch` end to end (read,
analyse, write tables/labels, case report) with ``workers=1`` (no Dask cluster) and
``workers=2`` (a local cluster of two worker processes, start-up included), each into a
fresh output folder and in a fresh Python process, as ``ishcount run`` is started (every
process then pays its first field's costs: memory touched for the first time, lazily
imported modules; timed in the process that had generated the fields, the one-worker run
was warm and the two-worker run cold), alternating the two settings over the repeats.
Imports are not timed. For reference it also
times reading and analysing the same files in a warm plain process pool of 1 and 2
processes (no Dask, nothing written, one BLAS thread per process as in ``run_batch``): the
most two workers could gain on this machine.

Usage::

    python benchmarks/throughput.py            # 8 fields of 2048x2048, 2 repeats
    python benchmarks/throughput.py --quick    # 8 fields of 1024x1024, 1 repeat
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    format_table,
    machine_info,
    machine_line,
    parse_args,
    publish,
    summarize_times,
)

from ishcount.analyze import analyze_image
from ishcount.io import find_images, read_image
from ishcount.pipeline import run_batch
from ishcount.synthetic import make_case, write_case


def write_batch(folder: Path, n_fields: int, shape: tuple[int, int], preset: str, seed: int):
    """Write one synthetic case of ``n_fields`` fields into ``folder / <case>``; return it."""
    case = make_case(preset, n_fields=n_fields, shape=shape, rng=seed, name=f"{preset}_bench")
    case_dir = folder / case.name
    write_case(case, case_dir)
    return case_dir


def time_batch(inputs: Path, out: Path, workers: int) -> dict[str, Any]:
    """One run of ``run_batch`` into the fresh folder ``out`` in a fresh Python process."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "from throughput import run_in_this_process; "
        f"print(json.dumps(run_in_this_process({str(inputs)!r}, {str(out)!r}, {workers})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"run_batch failed with workers={workers}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_in_this_process(inputs: str, out: str, workers: int) -> dict[str, Any]:
    """One run of ``run_batch``: wall time and per-field times."""
    inputs, out = Path(inputs), Path(out)
    start = time.perf_counter()
    outcomes = run_batch([inputs], out, workers=workers)
    seconds = time.perf_counter() - start
    records = [record for outcome in outcomes for record in outcome.fields]
    failed = [record.name for record in records if not record.ok]
    if failed:
        raise RuntimeError(f"run_batch failed on {failed}")
    return {
        "seconds": seconds,
        "n_fields": len(records),
        "field_seconds_sum": sum(record.seconds for record in records),
        "field_seconds": [round(record.seconds, 3) for record in records],
    }


def _one_blas_thread() -> None:
    """Pool initializer: one BLAS thread per process, as ``run_batch`` runs its workers."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def _read_and_analyze(path: str) -> int:
    """Read one field and analyse it, writing nothing (the reference task)."""
    return len(analyze_image(read_image(path)).cells)


def time_plain_pool(inputs: Path, workers: int) -> dict[str, Any]:
    """Reference: read + analyse every field in a plain warm process pool (no Dask, no output).

    Separates what the machine allows (two processes on two shared cores) from the batch
    machinery's own cost (cluster start-up, scheduling, writing tables and reports).
    """
    paths = [str(source.path) for source in find_images(inputs)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_one_blas_thread
    ) as pool:
        list(pool.map(_read_and_analyze, paths[:workers]))  # warm the workers up
        start = time.perf_counter()
        list(pool.map(_read_and_analyze, paths))
        seconds = time.perf_counter() - start
    return {"workers": workers, "n_fields": len(paths), "seconds": seconds}


def measure(inputs: Path, scratch: Path, workers_list, repeats: int) -> dict[int, list[dict]]:
    """Alternate the worker settings ``repeats`` times; every run writes a fresh folder."""
    runs: dict[int, list[dict]] = {workers: [] for workers in workers_list}
    for repeat in range(repeats):
        for workers in workers_list:
            run = time_batch(inputs, scratch / f"out_w{workers}_r{repeat}", workers)
            runs[workers].append(run)
            print(
                f"  workers={workers} repeat {repeat + 1}: {run['seconds']:.1f} s "
                f"for {run['n_fields']} fields (per field: {run['field_seconds']})",
                flush=True,
            )
    return runs


def summarize(runs: dict[int, list[dict]]) -> list[dict[str, Any]]:
    """Fields per second (from the median wall time) and speed-up against one worker."""
    rows = []
    for workers, items in runs.items():
        timing = summarize_times([item["seconds"] for item in items])
        n_fields = items[0]["n_fields"]
        rows.append(
            {
                "workers": workers,
                "n_fields": n_fields,
                "median_s": timing["median_s"],
                "min_s": timing["min_s"],
                "max_s": timing["max_s"],
                "fields_per_s": n_fields / timing["median_s"],
                "s_per_field": timing["median_s"] / n_fields,
                "task_s_per_field": items[0]["field_seconds_sum"] / n_fields,
                "repeats": timing["repeats"],
            }
        )
    base = rows[0]["fields_per_s"]
    for row in rows:
        row["speedup"] = row["fields_per_s"] / base
    return rows


def main(argv=None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    info = machine_info()
    print(machine_line(info), flush=True)
    config = {
        "n_fields": 8,
        "shape": (1024, 1024) if args.quick else (2048, 2048),
        "preset": "group1",
        "seed": 7,
        "repeats": 1 if args.quick else 2,
        "workers": [1, 2],
    }
    with tempfile.TemporaryDirectory(prefix="ishcount_throughput_") as tmp:
        scratch = Path(tmp)
        start = time.perf_counter()
        inputs = write_batch(
            scratch / "in", config["n_fields"], config["shape"], config["preset"], config["seed"]
        )
        print(f"  wrote {config['n_fields']} fields in {time.perf_counter() - start:.0f} s")
        runs = measure(inputs, scratch, config["workers"], config["repeats"])
        plain = [time_plain_pool(inputs, workers) for workers in config["workers"]]
    rows = summarize(runs)
    for row in plain:
        row["fields_per_s"] = row["n_fields"] / row["seconds"]
        row["speedup"] = row["fields_per_s"] / plain[0]["n_fields"] * plain[0]["seconds"]
    print(f"\nSettings: {config}\n")
    columns = ["workers", "n_fields", "median_s", "min_s", "max_s", "fields_per_s"]
    print(format_table(rows, [*columns, "s_per_field", "task_s_per_field", "speedup"], digits=2))
    print(
        "\nmedian_s: wall time of run_batch (read, analyse, write, case report; with 2 workers "
        "the local Dask cluster start-up is included); task_s_per_field: the fields' own "
        "recorded times."
    )
    print("\nReference: read + analyse only, in a warm plain process pool (no Dask, no output):")
    print(format_table(plain, ["workers", "n_fields", "seconds", "fields_per_s", "speedup"], 2))
    document = {
        "benchmark": "throughput",
        "machine": info,
        "settings": config,
        "rows": rows,
        "speedup_2_workers": rows[-1]["speedup"],
        "plain_pool_reference": plain,
    }
    return publish(document, args)


if __name__ == "__main__":
    raise SystemExit(main())
