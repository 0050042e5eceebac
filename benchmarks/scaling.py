"""How time and memory grow with image size and with workers (issue 7).

``analyze_image`` on 1024, 2048, 4096 and 8192 px square three-channel fields (the larger
ones tiled from distinct 2048x2048 synthetic fields), ``analyze_tiled`` (2048 px tiles, and
the same with its labels in a memory-mapped file as ``ishcount run`` does) at 4096 and
8192, and a batch of four 2048x2048 fields through ``run_batch`` with 1 and 2
workers. Prints wall times, the growth exponent (log-log slope of time and of peak
memory against pixels; 1.0 = linear) and memory per megapixel (tracemalloc in a fresh
process, inputs excluded).

Usage::

    python benchmarks/scaling.py            # sizes up to 8192, batch of 4 x 2048
    python benchmarks/scaling.py --quick    # sizes up to 4096, batch of 4 x 1024
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    format_table,
    loglog_slope,
    machine_info,
    machine_line,
    parse_args,
    peak_memory,
    publish,
    summarize_times,
    timed,
)
from throughput import measure, summarize, write_batch

from ishcount.analyze import analyze_image
from ishcount.image import FishImage
from ishcount.synthetic import make_field
from ishcount.tiles import analyze_tiled

SPACING_UM = (0.1, 0.1)
CHANNELS = ("dapi", "her2", "cep17")
TILE_SIZE = 2048


def whole(dapi, her2, cep17):
    """``analyze_image`` of the whole field (a memory-measurement target)."""
    return analyze_image(FishImage(dapi, her2, cep17, spacing_um=SPACING_UM, name="scaling"))


def tiled(dapi, her2, cep17):
    """``analyze_tiled`` with 2048 px tiles, one worker (a memory-measurement target)."""
    image = FishImage(dapi, her2, cep17, spacing_um=SPACING_UM, name="scaling")
    return analyze_tiled(image, tile_size=TILE_SIZE, workers=1)


def tiled_on_disk(dapi, her2, cep17):
    """``analyze_tiled`` writing its labels into a memory-mapped file (as ``ishcount run``)."""
    import tempfile

    image = FishImage(dapi, her2, cep17, spacing_um=SPACING_UM, name="scaling")
    with tempfile.TemporaryDirectory() as folder:
        labels = np.lib.format.open_memmap(
            Path(folder) / "labels.npy", mode="w+", dtype=np.int32, shape=dapi.shape
        )
        return analyze_tiled(image, tile_size=TILE_SIZE, workers=1, labels_out=labels)


METHODS = {"analyze_image": whole, "analyze_tiled": tiled, "analyze_tiled_disk": tiled_on_disk}


def mosaic(fields, size: int) -> dict[str, np.ndarray]:
    """A ``size`` x ``size`` field tiled from the 2048 fields (cycled); cropped below 2048."""
    base = fields[0].nuclei.shape[0]
    if size <= base:
        return {c: np.ascontiguousarray(fields[0].image.channel(c)[:size, :size]) for c in CHANNELS}
    n = size // base
    grid = [[fields[(i * n + j) % len(fields)] for j in range(n)] for i in range(n)]
    return {c: np.block([[f.image.channel(c) for f in row] for row in grid]) for c in CHANNELS}


def plan(quick: bool) -> list[tuple[int, str, int]]:
    """(size, method, repeats) of every timing."""
    if quick:
        return [
            (1024, "analyze_image", 2),
            (2048, "analyze_image", 2),
            (4096, "analyze_image", 1),
            (4096, "analyze_tiled", 1),
        ]
    return [
        (1024, "analyze_image", 3),
        (2048, "analyze_image", 3),
        (4096, "analyze_image", 2),
        (8192, "analyze_image", 1),
        (4096, "analyze_tiled", 1),
        (8192, "analyze_tiled", 1),
        (4096, "analyze_tiled_disk", 1),
        (8192, "analyze_tiled_disk", 1),
    ]


def measure_size(size: int, method: str, repeats: int, channels, scratch: Path) -> dict:
    """Wall times in this process, then the peak memory in a fresh one."""
    function = METHODS[method]
    if size <= 2048:
        function(**channels)  # warm-up (imports, first-call costs) on small sizes only
    results, seconds = [], []
    for _ in range(repeats):
        result, elapsed = timed(function, **channels)
        seconds.append(elapsed)
        results.append(result)
    arrays_file = scratch / f"channels_{size}.npz"
    if not arrays_file.exists():
        np.savez(arrays_file, **channels)
    memory = peak_memory(f"scaling:{function.__name__}", arrays_file, warmup=size <= 2048)
    megapixels = size * size / 1e6
    timing = summarize_times(seconds)
    row = {
        "method": method,
        "size": size,
        "megapixels": megapixels,
        **{k: timing[k] for k in ("median_s", "min_s", "max_s")},
        "s_per_mpx": timing["median_s"] / megapixels,
        "peak_mib": memory["peak_traced_mib"],
        "mib_per_mpx": memory["peak_traced_mib"] / megapixels,
        "n_nuclei": len(results[-1].cells),
        "repeats": timing["repeats"],
    }
    print(f"  {method} {size}: {row['median_s']:.1f} s, {row['peak_mib']:.0f} MiB peak", flush=True)
    return row


def growth(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Log-log slope of time and memory against pixels, per method."""
    out = []
    for method in METHODS:
        part = [r for r in rows if r["method"] == method]
        if len(part) < 2:
            continue
        pixels = [r["megapixels"] for r in part]
        out.append(
            {
                "method": method,
                "sizes": " ".join(str(r["size"]) for r in part),
                "time_exponent": loglog_slope(pixels, [r["median_s"] for r in part]),
                "memory_exponent": loglog_slope(pixels, [r["peak_mib"] for r in part]),
            }
        )
    return out


def main(argv=None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    info = machine_info()
    print(machine_line(info), flush=True)
    n_fields = 1 if args.quick else 4
    start = time.perf_counter()
    fields = [make_field("group1", shape=(2048, 2048), rng=s) for s in range(1, 1 + n_fields)]
    print(f"  generated {n_fields} fields in {time.perf_counter() - start:.0f} s", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ishcount_scaling_") as tmp:
        scratch = Path(tmp)
        for size, method, repeats in plan(args.quick):
            rows.append(measure_size(size, method, repeats, mosaic(fields, size), scratch))
        del fields
        batch_shape = (1024, 1024) if args.quick else (2048, 2048)
        inputs = write_batch(scratch / "in", 4, batch_shape, "group1", 7)
        batch = summarize(measure(inputs, scratch, [1, 2], 1))
    slopes = growth(rows)
    print("\nTime and peak memory against image size:")
    columns = ["method", "size", "megapixels", "median_s", "min_s", "max_s", "s_per_mpx"]
    print(format_table(rows, [*columns, "peak_mib", "mib_per_mpx", "n_nuclei"], digits=2))
    print("\nGrowth exponents (log-log slope against pixels; 1.0 = linear):")
    print(format_table(slopes, ["method", "sizes", "time_exponent", "memory_exponent"], digits=2))
    print(f"\nBatch of 4 fields of {batch_shape[0]}x{batch_shape[1]} through run_batch:")
    print(format_table(batch, ["workers", "n_fields", "median_s", "fields_per_s", "speedup"], 2))
    document = {
        "benchmark": "scaling",
        "machine": info,
        "sizes": rows,
        "growth": slopes,
        "batch": {"shape": batch_shape, "rows": batch},
    }
    return publish(document, args)


if __name__ == "__main__":
    raise SystemExit(main())
