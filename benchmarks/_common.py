"""Helpers shared by the benchmark scripts: machine description, timing, memory, output.

Not part of the package and not a test: the scripts in this folder import it by file
location (``python benchmarks/X.py`` puts this folder on ``sys.path``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ishcount.io import write_json

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _blas_kernel() -> str:
    """The BLAS library and the kernel it runs (threadpoolctl, when installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    parts = [
        f"{info.get('internal_api')} {info.get('version')} {info.get('architecture')} "
        f"x{info.get('num_threads')}"
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]
    return "; ".join(parts) or "none loaded"


def source_state() -> dict[str, Any]:
    """The git commit of the work tree and a hash of the ishcount sources actually imported.

    The hash identifies figures taken on uncommitted code.
    """
    import hashlib
    import subprocess

    import ishcount

    package = Path(ishcount.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    try:
        commit = subprocess.run(
            ["git", "-C", str(package.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"git_head": commit, "ishcount_sources_sha256": digest.hexdigest()[:16]}


def machine_info() -> dict[str, Any]:
    """CPU count, CPU model, library versions and BLAS settings of this run."""
    import scipy
    import skimage

    import ishcount

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit_image": skimage.__version__,
        "ishcount": ishcount.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE", "(unset)"),
        "blas": _blas_kernel(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        **source_state(),
    }


def machine_line(info: dict[str, Any]) -> str:
    """One printable paragraph describing the machine."""
    return (
        f"Machine: {info['cpu_count']} CPUs ({info['cpus_usable']} usable), {info['cpu_model']}, "
        f"{info['memory_gib']} GiB; Python {info['python']}, numpy {info['numpy']}, "
        f"scipy {info['scipy']}, scikit-image {info['scikit_image']}, "
        f"ishcount {info['ishcount']}\n"
        f"BLAS: {info['blas']}; OPENBLAS_CORETYPE={info['OPENBLAS_CORETYPE']}, "
        f"OPENBLAS_L2_SIZE={info['OPENBLAS_L2_SIZE']}; load average (1, 5, 15 min) "
        f"{info['load_average_at_start']} (other work on the machine slows every figure)\n"
        f"Date: {info['date']}; command: {info['command']}; git HEAD {info['git_head']}, "
        f"ishcount sources sha256 {info['ishcount_sources_sha256']}"
    )


# ----------------------------------------------------------------------------- arguments


def parse_args(description: str, argv: Sequence[str] | None = None, **extra: Any):
    """Common command line: ``--quick`` and ``--out`` (results JSON path)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small settings (under ~2 minutes)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default: results/)")
    for flag, options in extra.items():
        parser.add_argument(f"--{flag.replace('_', '-')}", **options)
    return parser.parse_args(argv)


def results_path(name: str, quick: bool, out: Path | None) -> Path:
    """``results/<name>.json`` (``<name>_quick.json`` in quick mode) unless ``out`` is given."""
    if out is not None:
        return out
    return RESULTS_DIR / (f"{name}_quick.json" if quick else f"{name}.json")


def write_results(path: Path, document: dict[str, Any]) -> Path:
    """Write the figures as indented JSON (atomically, :func:`ishcount.io.write_json`)."""
    if isinstance(document.get("machine"), dict):
        document["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json(document, path)


def publish(document: dict[str, Any], args: Any, suffix: str = "") -> int:
    """Write a benchmark's ``document`` to its results file (named by its ``benchmark``
    key; ``args`` from :func:`parse_args`), say where, and return the exit status."""
    path = write_results(results_path(document["benchmark"], args.quick, args.out), document)
    print(f"\nWrote {path}{suffix}")
    return 0


def publish_records(
    name: str,
    info: dict[str, Any],
    settings: dict[str, Any],
    seconds: float,
    rows: Sequence[dict[str, Any]],
    records: Sequence[dict[str, Any]],
    args: Any,
) -> int:
    """:func:`publish` a benchmark of summary ``rows`` over per-field ``records`` (NaN
    written as null)."""
    fields = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}
        for record in records
    ]
    document = {"benchmark": name, "machine": info, "settings": settings, "seconds": seconds}
    return publish(document | {"rows": list(rows), "fields": fields}, args)


# ----------------------------------------------------------------------------- tables


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return "nan" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], digits: int = 3) -> str:
    """A fixed-width text table (also valid Markdown) of ``rows`` restricted to ``columns``."""
    text = [[_cell(row.get(column), digits) for column in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in text)]) for i, c in enumerate(columns)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(columns), rule, *(line(r) for r in text)])


def verdict(passed: bool | None) -> str:
    """PASS, FAIL or n/a (when a target could not be evaluated)."""
    return "n/a" if passed is None else ("PASS" if passed else "FAIL")


# ----------------------------------------------------------------------------- timing


def summarize_times(seconds: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and all repeats of a list of wall times."""
    values = [float(s) for s in seconds]
    return {
        "median_s": statistics.median(values),
        "min_s": min(values),
        "max_s": max(values),
        "repeats": values,
    }


def timed(function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """Call ``function`` and return its result and wall time in seconds."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def loglog_slope(sizes: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of ``log(values)`` against ``log(sizes)`` (growth exponent)."""
    x, y = np.log(np.asarray(sizes, float)), np.log(np.asarray(values, float))
    if len(x) < 2:
        return math.nan
    return float(np.polyfit(x, y, 1)[0])


# ----------------------------------------------------------------------------- memory


def _traced_call(
    target: str, arrays_file: str, kwargs: dict[str, Any], warmup: bool
) -> dict[str, Any]:
    """Run ``module:function(**arrays, **kwargs)`` under tracemalloc; return peak and time."""
    import importlib

    module_name, function_name = target.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    with np.load(arrays_file) as archive:
        arrays = {key: archive[key] for key in archive.files}
    if warmup:  # imports, caches and lazy initialisation
        function(**arrays, **kwargs)
    tracemalloc.start()
    start = time.perf_counter()
    function(**arrays, **kwargs)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    import resource

    return {
        "peak_traced_mib": peak / 2**20,
        "traced_seconds": seconds,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def peak_memory(
    target: str, arrays_file: Path, *, warmup: bool = True, **kwargs: Any
) -> dict[str, Any]:
    """Peak memory of one step, measured in a fresh process.

    Parameters
    ----------
    target : str
        ``"module:function"``, importable in a child (a module of this folder or ishcount).
        The function is called with the arrays of ``arrays_file`` as keyword arguments.
    arrays_file : Path
        An ``.npz`` file with the inputs (loaded before tracing, so they are not counted).
    warmup : bool
        Call once untraced first (skip for large inputs: imports happen on import anyway).
    **kwargs
        Further keyword arguments (picklable).

    Returns
    -------
    dict
        ``peak_traced_mib``: largest traced allocation (numpy arrays included) above the
        inputs during one call (after the warm-up call, if any); ``traced_seconds``
        (slowed by tracing);
        ``max_rss_mib``: the child's peak resident size (interpreter, imports and inputs
        included).
    """
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_traced_call, target, str(arrays_file), kwargs, warmup).result()
