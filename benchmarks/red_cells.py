"""Red blood cells over the tissue: counts with and without the shared-shape test.

Erythrocytes are autofluorescent in the green and red filter sets (CEP17 and HER2) and
lie in every section, often over tumour cells. This adds red cells to synthetic fields
with exact truth: discs 6.6-8 um across, brighter towards the rim (biconcave), blurred by
0.3 um, at a peak of 0.3-3 single signals' peak amplitude in CEP17 and 0.6 of that in
HER2, 40 per 2048x2048 field (about 4 % of its area), placed at random over nuclei and
stroma alike. Each field is analysed as it is and with the red cells, once with
``ishcount.spots.shared_signals`` (the default) and once with it switched off, and its
case figures are compared with the truth; ``e2e`` figures use the nuclei the pipeline
itself scores (red-cell debris excludes the nuclei under it).

Usage::

    python benchmarks/red_cells.py            # group1, group2, group5 x 2 seeds, 2048x2048
    python benchmarks/red_cells.py --quick    # group2, 1 seed, 1024x1024
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import format_table, machine_info, machine_line, parse_args, publish_records
from accuracy import evaluate_field

import ishcount.analyze
from ishcount.analyze import analyze_image
from ishcount.assign import DEBRIS
from ishcount.synthetic import PRESETS, make_field

LEVELS = (0.0, 0.3, 1.0, 2.0, 3.0)  # red-cell peak in CEP17, in single-signal amplitudes
HER2_SHARE = 0.6  # the red cells' light in HER2 against CEP17
CELLS_PER_MEGAPIXEL = 40 / 2048**2
COLUMNS = [
    "level",
    "shape_test",
    "fields",
    "ratio_err_mean",
    "ratio_err_max",
    "e2e_ratio_err_max",
    "e2e_mean_her2_err_max",
    "cep17_mae",
    "debris_excluded",
    "groups_right",
]


def red_cells(shape: tuple[int, int], pixel_um: float, rng: np.random.Generator) -> np.ndarray:
    """Red-cell light (peak 1) on a field: biconcave discs 6.6-8 um across, blurred 0.3 um."""
    count = max(1, round(CELLS_PER_MEGAPIXEL * shape[0] * shape[1]))
    image = np.zeros(shape, np.float32)
    for cy, cx in rng.uniform(40, np.array(shape) - 40, (count, 2)):
        radius = rng.uniform(3.3, 4.0) / pixel_um
        reach = int(radius) + 2
        window = (
            slice(max(0, int(cy) - reach), int(cy) + reach + 1),
            slice(max(0, int(cx) - reach), int(cx) + reach + 1),
        )
        yy, xx = np.ogrid[window]
        r = np.hypot(yy - cy, xx - cx) / radius
        image[window] = np.maximum(image[window], np.where(r < 1, 0.6 + 0.4 * r**2, 0.0))
    return ndi.gaussian_filter(image, 0.3 / pixel_um)


def with_red_cells(image, cells: np.ndarray, peak: float):
    """``image`` with ``cells`` (peak 1) added to both probe channels at ``peak``."""

    def add(channel, share):
        values = np.asarray(channel, np.float64) + share * peak * cells
        return np.clip(values, 0, np.iinfo(np.uint16).max).astype(np.asarray(channel).dtype)

    return dataclasses.replace(image, her2=add(image.her2, HER2_SHARE), cep17=add(image.cep17, 1.0))


def without_shape_test(image):
    """``analyze_image`` with :func:`ishcount.spots.shared_signals` finding nothing."""

    def nothing(her2, cep17, *args, **kwargs):
        return her2.index[:0], cep17.index[:0]

    with mock.patch.object(ishcount.analyze, "shared_signals", nothing):
        return analyze_image(image)


def field_figures(field, result) -> dict[str, Any]:
    figures = evaluate_field(field, result)
    counts, case, e2e = figures["counts"], figures["case"], figures["end_to_end"]
    return {
        "ratio_rel_error": case["ratio_rel_error"],
        "e2e_ratio_rel_error": e2e["ratio_rel_error"],
        "e2e_mean_her2_rel_error": e2e["mean_her2_rel_error"],
        "e2e_group_agrees": bool(e2e["group_agrees"]),
        "cep17_mae": float((counts["pred_cep17"] - counts["true_cep17"]).abs().mean()),
        "debris_excluded": int((result.cells["exclusion_reason"] == DEBRIS).sum()),
    }


def summarize(level: float, test: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    def values(key):
        return np.array([r[key] for r in records], dtype=float)

    return {
        "level": level,
        "shape_test": test,
        "fields": len(records),
        "ratio_err_mean": float(np.nanmean(values("ratio_rel_error"))),
        "ratio_err_max": float(np.nanmax(values("ratio_rel_error"))),
        "e2e_ratio_err_max": float(np.nanmax(values("e2e_ratio_rel_error"))),
        "e2e_mean_her2_err_max": float(np.nanmax(values("e2e_mean_her2_rel_error"))),
        "cep17_mae": float(values("cep17_mae").mean()),
        "debris_excluded": float(values("debris_excluded").mean()),
        "groups_right": f"{sum(r['e2e_group_agrees'] for r in records)}/{len(records)}",
    }


def main(argv=None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    info = machine_info()
    print(machine_line(info), flush=True)
    if args.quick:
        config = {"shape": (1024, 1024), "presets": ["group2"], "seeds": [1]}
    else:
        config = {"shape": (2048, 2048), "presets": ["group1", "group2", "group5"], "seeds": [1, 2]}
    config |= {"levels": LEVELS, "her2_share": HER2_SHARE, "cells_per_2048_field": 40}
    runs = {"on": analyze_image, "off": without_shape_test}
    records: dict[tuple[float, str], list[dict[str, Any]]] = {}
    per_field = []
    start = time.perf_counter()
    for preset in config["presets"]:
        for seed in config["seeds"]:
            field = make_field(preset, shape=config["shape"], rng=seed, name=preset)
            pixel_um = field.image.spacing_um[-1]
            cells = red_cells(config["shape"], pixel_um, np.random.default_rng(seed))
            for level in LEVELS:
                peak = level * PRESETS[preset].spot_amplitude
                image = with_red_cells(field.image, cells, peak) if level else field.image
                for test, analyse in runs.items():
                    figures = field_figures(field, analyse(image))
                    records.setdefault((level, test), []).append(figures)
                    per_field.append(
                        {"preset": preset, "seed": seed, "level": level, "shape_test": test}
                        | figures
                    )
                    print(
                        f"  {preset:7s} seed {seed}  red cells x{level:<3g} shape test {test:3s}"
                        f"  ratio error {100 * figures['ratio_rel_error']:5.1f}%  e2e "
                        f"{100 * figures['e2e_ratio_rel_error']:5.1f}%  CEP17 MAE "
                        f"{figures['cep17_mae']:.3f}  debris-excluded {figures['debris_excluded']}",
                        flush=True,
                    )
    elapsed = time.perf_counter() - start
    rows = [summarize(level, test, records[level, test]) for level in LEVELS for test in runs]
    print(f"\nSettings: {config}; {elapsed:.0f} s in total\n")
    print("Per red-cell level (relative errors as fractions; ratio_err over matched scorable")
    print("nuclei, e2e over the nuclei the pipeline scores):")
    print(format_table(rows, COLUMNS))
    return publish_records("red_cells", info, config, elapsed, rows, per_field, args)


if __name__ == "__main__":
    raise SystemExit(main())
