"""ishcount against big-fish on the same synthetic fields: speed, memory, accuracy (issue 7).

In one process, alternating the steps within every repeat, on a 2048x2048 three-channel
synthetic field, its 1024x1024 crop and a 4096x4096 field stitched from four fields:

- floor: one ``scipy.ndimage.gaussian_filter`` pass (sigma 1.4 px) per channel (3 channels);
- big-fish ``detection.detect_spots`` for HER2 and CEP17;
- big-fish's building blocks (``stack.log_filter``, ``detection.local_maximum_detection``,
  ``automated_threshold_setting``, ``spots_thresholding``) for HER2 and CEP17;
- big-fish ``detection.decompose_dense`` of both channels' spots;
- ishcount ``detect_spots`` (cluster estimation included) for HER2 and CEP17;
- ishcount ``analyze_image`` (segmentation, both channels, assignment, counts).

Peak memory of each step is measured once per size in a fresh process (tracemalloc,
inputs excluded). Accuracy of both tools is measured on the same truth: isolated-signal
F1 (0.15 um lateral) and HER2/CEP17 per truth nucleus (every detection assigned to the
truth nucleus under it; a big-fish dense region contributes its decomposed spots).

big-fish parameters: ``voxel_size=(100, 100)`` nm, ``spot_radius=(140, 140)`` nm (the
synthetic PSF sigma is 0.12-0.16 um; ishcount's default signal sigma is 0.14 um),
automatic (elbow) threshold, ``decompose_dense`` defaults (alpha 0.5, beta 1, gamma 5).

The machine sets OPENBLAS_CORETYPE for old OpenBLAS builds; it slows a current numpy.
For timings, run with both unset in that command alone::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/vs_bigfish.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/vs_bigfish.py --quick

Needs ``big-fish-reloaded`` (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    format_table,
    machine_info,
    machine_line,
    parse_args,
    peak_memory,
    publish,
    summarize_times,
    timed,
    verdict,
)

from ishcount.analyze import analyze_image
from ishcount.evaluate import count_errors, evaluate_spots
from ishcount.image import FishImage
from ishcount.score import is_amplified
from ishcount.spots import detect_spots
from ishcount.synthetic import make_field

VOXEL_NM = (100, 100)
SPOT_RADIUS_NM = (140, 140)
FLOOR_SIGMA_PX = 1.4
SPACING_UM = (0.1, 0.1)
SIGNALS = ("her2", "cep17")
MATCH_DISTANCE_UM = 0.15
TARGET_BIGFISH_OVER_ANALYZE = 4.0  # analyze_image < 1/4 of big-fish detection + decomposition
TARGET_ANALYZE_OVER_FLOOR = 8.0  # analyze_image within 8x of one Gaussian pass per channel


# ----------------------------------------------------------------------------- steps
# Each step takes the three channels as keyword arrays (so it can run in a child process
# for the memory measurement) and returns what the accuracy part needs.


def step_floor(dapi, her2, cep17):
    """One Gaussian pass per channel (float32 output): the cost floor of any detector."""
    return [
        ndimage.gaussian_filter(a, FLOOR_SIGMA_PX, output=np.float32) for a in (dapi, her2, cep17)
    ]


def step_bigfish_detect(dapi, her2, cep17):
    """big-fish ``detect_spots`` on both signal channels (automatic threshold)."""
    from bigfish import detection

    return {
        name: detection.detect_spots(
            image, voxel_size=VOXEL_NM, spot_radius=SPOT_RADIUS_NM, return_threshold=False
        )
        for name, image in (("her2", her2), ("cep17", cep17))
    }


def _bigfish_blocks(image, seconds: dict[str, float]):
    from bigfish import detection, stack

    sigma = detection.get_object_radius_pixel(VOXEL_NM, SPOT_RADIUS_NM, image.ndim)
    log, t = timed(stack.log_filter, image, sigma)
    seconds["log_filter"] = seconds.get("log_filter", 0.0) + t
    mask, t = timed(detection.local_maximum_detection, log, sigma)
    seconds["local_maximum"] = seconds.get("local_maximum", 0.0) + t
    threshold, t = timed(detection.automated_threshold_setting, log, mask)
    seconds["threshold"] = seconds.get("threshold", 0.0) + t
    (spots, _), t = timed(detection.spots_thresholding, log, mask, threshold)
    seconds["spots_thresholding"] = seconds.get("spots_thresholding", 0.0) + t
    return spots


def step_bigfish_blocks(dapi, her2, cep17, seconds=None):
    """big-fish's building blocks (LoG, local maxima, elbow threshold, spots) per channel."""
    seconds = {} if seconds is None else seconds
    return {
        name: _bigfish_blocks(image, seconds)
        for name, image in zip(SIGNALS, (her2, cep17), strict=True)
    }


def step_bigfish_decompose(dapi, her2, cep17, spots=None):
    """big-fish ``decompose_dense`` of both channels (detection first when not given)."""
    from bigfish import detection

    spots = spots or step_bigfish_detect(dapi, her2, cep17)
    return {
        name: detection.decompose_dense(
            image, spots[name], voxel_size=VOXEL_NM, spot_radius=SPOT_RADIUS_NM
        )[0]
        for name, image in zip(SIGNALS, (her2, cep17), strict=True)
    }


def step_bigfish_detect_decompose(dapi, her2, cep17):
    """big-fish detection plus dense decomposition of both channels (for the memory step)."""
    return step_bigfish_decompose(dapi, her2, cep17)


def step_ishcount_detect(dapi, her2, cep17):
    """ishcount ``detect_spots`` (cluster estimation included) on both signal channels."""
    return pd.concat(
        [
            detect_spots(image, spacing_um=SPACING_UM, channel=name)
            for name, image in zip(SIGNALS, (her2, cep17), strict=True)
        ],
        ignore_index=True,
    )


def step_ishcount_analyze(dapi, her2, cep17):
    """ishcount ``analyze_image`` on the three channels."""
    return analyze_image(FishImage(dapi, her2, cep17, spacing_um=SPACING_UM, name="bench"))


STEPS = {
    "floor_gauss_3ch": step_floor,
    "bigfish_detect": step_bigfish_detect,
    "bigfish_blocks": step_bigfish_blocks,
    "bigfish_decompose": step_bigfish_decompose,
    "ishcount_detect": step_ishcount_detect,
    "ishcount_analyze": step_ishcount_analyze,
}
MEMORY_STEPS = {
    "floor_gauss_3ch": "step_floor",
    "bigfish_detect": "step_bigfish_detect",
    "bigfish_detect+decompose": "step_bigfish_detect_decompose",
    "ishcount_detect": "step_ishcount_detect",
    "ishcount_analyze": "step_ishcount_analyze",
}


# ----------------------------------------------------------------------------- images


def stitch(fields) -> tuple[dict[str, np.ndarray], np.ndarray, pd.DataFrame]:
    """Four fields of equal shape as one field twice as large (channels, nuclei, spots)."""
    height, width = fields[0].nuclei.shape
    channels = {
        name: np.block(
            [
                [fields[0].image.channel(name), fields[1].image.channel(name)],
                [fields[2].image.channel(name), fields[3].image.channel(name)],
            ]
        )
        for name in ("dapi", *SIGNALS)
    }
    nuclei, spots, offset = [], [], 0
    for index, field in enumerate(fields[:4]):
        labels = np.where(field.nuclei > 0, field.nuclei + offset, 0)
        table = field.spots.copy()
        table["y"] += (index // 2) * height
        table["x"] += (index % 2) * width
        table["signal_id"] += index * 10**7
        table["cluster_id"] = np.where(table["cluster_id"] >= 0, table["cluster_id"] + offset, -1)
        nuclei.append(labels)
        spots.append(table)
        offset += int(field.nuclei.max()) + 1
    labels = np.block([[nuclei[0], nuclei[1]], [nuclei[2], nuclei[3]]])
    return channels, labels, pd.concat(spots, ignore_index=True)


def make_inputs(quick: bool) -> dict[str, dict[str, np.ndarray]]:
    """Channels per size: the 1024 crop, the 2048 field and (default mode) the 4096 stitch."""
    n_fields = 1 if quick else 4
    fields = [make_field("group1", shape=(2048, 2048), rng=seed) for seed in range(1, 1 + n_fields)]
    base = {name: fields[0].image.channel(name) for name in ("dapi", *SIGNALS)}
    sizes = {
        "1024": {name: np.ascontiguousarray(a[:1024, :1024]) for name, a in base.items()},
        "2048": base,
    }
    if not quick:
        sizes["4096"] = stitch(fields)[0]
    return sizes


# ----------------------------------------------------------------------------- timing


def time_steps(channels: dict[str, np.ndarray], repeats: int) -> dict[str, Any]:
    """Alternate every step within each repeat (after one untimed warm-up of each)."""
    times: dict[str, list[float]] = {name: [] for name in STEPS}
    blocks: dict[str, list[float]] = {}
    for repeat in range(repeats + 1):
        spots = None
        for name, step in STEPS.items():
            kwargs = dict(channels)
            if name == "bigfish_decompose":
                kwargs["spots"] = spots
            block_seconds: dict[str, float] = {}
            if name == "bigfish_blocks":
                kwargs["seconds"] = block_seconds
            result, seconds = timed(step, **kwargs)
            if name == "bigfish_detect":
                spots = result
            if repeat:  # the first round is the warm-up
                times[name].append(seconds)
                for key, value in block_seconds.items():
                    blocks.setdefault(key, []).append(value)
    summary = {name: summarize_times(values) for name, values in times.items()}
    summary["bigfish_blocks_parts"] = {k: summarize_times(v) for k, v in blocks.items()}
    return summary


def timing_rows(size: str, summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [
        {
            "size": size,
            "step": name,
            "median_s": summary[name]["median_s"],
            "min_s": summary[name]["min_s"],
            "max_s": summary[name]["max_s"],
        }
        for name in STEPS
    ]
    for part, values in summary["bigfish_blocks_parts"].items():
        rows.append({"size": size, "step": f"  blocks: {part}", **_short(values)})
    return rows


def _short(values: dict[str, Any]) -> dict[str, float]:
    return {key: values[key] for key in ("median_s", "min_s", "max_s")}


def ratios(size: str, summary: dict[str, Any]) -> dict[str, Any]:
    """The comparisons and the two targets at one size (medians)."""
    median = {name: summary[name]["median_s"] for name in STEPS}
    bigfish_full = median["bigfish_detect"] + median["bigfish_decompose"]
    bigfish_blocks_full = median["bigfish_blocks"] + median["bigfish_decompose"]
    row = {
        "size": size,
        "bigfish_det+dec_s": bigfish_full,
        "ishcount_detect_s": median["ishcount_detect"],
        "analyze_s": median["ishcount_analyze"],
        "floor_s": median["floor_gauss_3ch"],
        "bf/ish_detect": bigfish_full / median["ishcount_detect"],
        "bf_blocks/ish_detect": bigfish_blocks_full / median["ishcount_detect"],
        "bf/analyze": bigfish_full / median["ishcount_analyze"],
        "analyze/floor": median["ishcount_analyze"] / median["floor_gauss_3ch"],
    }
    row["target_speed"] = verdict(row["bf/analyze"] >= TARGET_BIGFISH_OVER_ANALYZE)
    row["target_floor"] = verdict(row["analyze/floor"] <= TARGET_ANALYZE_OVER_FLOOR)
    return row


def memory_rows(size: str, channels: dict[str, np.ndarray], scratch: Path) -> list[dict]:
    """Peak traced memory of each step in a fresh process."""
    arrays_file = scratch / f"channels_{size}.npz"
    np.savez(arrays_file, **channels)
    rows = []
    for label, function in MEMORY_STEPS.items():
        measured = peak_memory(f"vs_bigfish:{function}", arrays_file)
        megapixels = channels["her2"].size / 1e6
        rows.append(
            {
                "size": size,
                "step": label,
                "peak_mib": measured["peak_traced_mib"],
                "mib_per_mpx": measured["peak_traced_mib"] / megapixels,
                "child_max_rss_mib": measured["max_rss_mib"],
            }
        )
        print(f"  memory {size} {label}: {measured['peak_traced_mib']:.0f} MiB", flush=True)
    return rows


# ----------------------------------------------------------------------------- accuracy


def _bigfish_table(spots: dict[str, np.ndarray]) -> pd.DataFrame:
    parts = [
        pd.DataFrame(
            {"channel": name, "y": coords[:, 0].astype(float), "x": coords[:, 1].astype(float)}
        )
        for name, coords in spots.items()
    ]
    table = pd.concat(parts, ignore_index=True)
    table["copies"] = 1
    return table


def per_nucleus_counts(detections: pd.DataFrame, nuclei: np.ndarray) -> dict[str, pd.Series]:
    """Copies per truth nucleus and channel (each detection to the truth label under it)."""
    y = np.clip(np.rint(detections["y"].to_numpy()).astype(int), 0, nuclei.shape[0] - 1)
    x = np.clip(np.rint(detections["x"].to_numpy()).astype(int), 0, nuclei.shape[1] - 1)
    labels = nuclei[y, x]
    out = {}
    for channel in SIGNALS:
        keep = (detections["channel"].to_numpy() == channel) & (labels > 0)
        copies = detections["copies"].to_numpy()[keep]
        out[channel] = pd.Series(copies).groupby(labels[keep]).sum()
    return out


def accuracy_row(tool: str, preset: str, field, detections: pd.DataFrame) -> dict[str, Any]:
    """Isolated F1, per-nucleus count errors and ratio on the truth-scorable nuclei."""
    scorable = field.cells[field.cells["is_scorable"]].set_index("label")
    counts = per_nucleus_counts(detections, field.nuclei)
    pred = {c: counts[c].reindex(scorable.index, fill_value=0).to_numpy() for c in SIGNALS}
    true = {c: scorable[f"n_{c}"].to_numpy() for c in SIGNALS}
    amplified = is_amplified(true["her2"], true["cep17"])
    row = {"tool": tool, "preset": preset, "n_nuclei": len(scorable)}
    for channel in SIGNALS:
        spots = evaluate_spots(
            field.spots,
            detections,
            max_distance=MATCH_DISTANCE_UM,
            spacing=SPACING_UM,
            channel=channel,
        )
        errors = count_errors(true[channel], pred[channel])
        row[f"{channel}_iso_f1"] = spots.isolated.f1
        row[f"{channel}_mae"] = errors.mae
        row[f"{channel}_bias"] = errors.bias
    amp = count_errors(true["her2"][amplified], pred["her2"][amplified])
    row["amp_her2_rel_err"] = amp.mean_relative_error
    row["ratio_true"] = true["her2"].sum() / max(true["cep17"].sum(), 1)
    total_cep17 = pred["cep17"].sum()
    row["ratio_pred"] = pred["her2"].sum() / total_cep17 if total_cep17 else math.nan
    return row


def accuracy_rows(quick: bool) -> list[dict[str, Any]]:
    """Both tools on one 2048 field of each of group1 and low_snr (1024 in quick mode)."""
    shape = (1024, 1024) if quick else (2048, 2048)
    rows = []
    for preset in ("group1", "low_snr"):
        field = make_field(preset, shape=shape, rng=11)
        channels = {name: field.image.channel(name) for name in ("dapi", *SIGNALS)}
        decomposed = step_bigfish_decompose(**channels)
        rows.append(accuracy_row("big-fish", preset, field, _bigfish_table(decomposed)))
        result = step_ishcount_analyze(**channels)
        rows.append(accuracy_row("ishcount", preset, field, result.spots))
    return rows


# ----------------------------------------------------------------------------- driver

TIMING_COLUMNS = ["size", "step", "median_s", "min_s", "max_s"]
RATIO_COLUMNS = [
    "size",
    "bigfish_det+dec_s",
    "ishcount_detect_s",
    "analyze_s",
    "floor_s",
    "bf/ish_detect",
    "bf_blocks/ish_detect",
    "bf/analyze",
    "analyze/floor",
    "target_speed",
    "target_floor",
]
ACCURACY_COLUMNS = [
    "tool",
    "preset",
    "n_nuclei",
    "her2_iso_f1",
    "cep17_iso_f1",
    "amp_her2_rel_err",
    "her2_mae",
    "her2_bias",
    "cep17_mae",
    "cep17_bias",
    "ratio_true",
    "ratio_pred",
]


def run(quick: bool) -> dict[str, Any]:
    repeats = {"1024": 3 if quick else 5, "2048": 2 if quick else 3, "4096": 2}
    sizes = make_inputs(quick)
    timings, comparisons, memory = [], [], []
    with tempfile.TemporaryDirectory(prefix="ishcount_vs_bigfish_") as tmp:
        for size, channels in sizes.items():
            start = time.perf_counter()
            summary = time_steps(channels, repeats[size])
            print(f"  timed {size}: {time.perf_counter() - start:.0f} s", flush=True)
            timings += timing_rows(size, summary)
            comparisons.append(ratios(size, summary))
            if size != "1024":
                memory += memory_rows(size, channels, Path(tmp))
    return {
        "repeats": repeats,
        "timings": timings,
        "comparisons": comparisons,
        "memory": memory,
        "accuracy": accuracy_rows(quick),
    }


def main(argv=None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    import bigfish

    info = machine_info()
    info["big_fish"] = bigfish.__version__
    print(machine_line(info) + f"\nbig-fish {bigfish.__version__}", flush=True)
    start = time.perf_counter()
    document = run(args.quick)
    elapsed = time.perf_counter() - start
    print(f"\nTimings (seconds; median, min, max of {document['repeats']} repeats):")
    print(format_table(document["timings"], TIMING_COLUMNS))
    print(
        "\nComparison (bf = big-fish detect_spots + decompose_dense of HER2 and CEP17; "
        "targets: bf/analyze >= 4, analyze/floor <= 8):"
    )
    print(format_table(document["comparisons"], RATIO_COLUMNS, digits=2))
    print("\nPeak memory per step (tracemalloc in a fresh process, inputs excluded):")
    print(format_table(document["memory"], ["size", "step", "peak_mib", "mib_per_mpx"], digits=1))
    print("\nAccuracy on the same truth (counts per truth-scorable nucleus):")
    print(format_table(document["accuracy"], ACCURACY_COLUMNS))
    document = {"benchmark": "vs_bigfish", "machine": info, "seconds": elapsed, **document}
    return publish(document, args, f" ({elapsed:.0f} s)")


if __name__ == "__main__":
    raise SystemExit(main())
