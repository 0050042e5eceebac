"""Red blood cells and elastin fibres over the tissue: counts with and without the tests
that look for them.

Erythrocytes and elastin are autofluorescent in the green and red filter sets (CEP17 and
HER2) and lie in every section, often over tumour cells. This adds them to synthetic fields
with exact truth:

- red cells: discs 6.6-8 um across, brighter towards the rim (biconcave), blurred by
  0.3 um, 40 per 2048x2048 field (about 4 % of its area), HER2 at 0.6 of CEP17;
- fibres: 25 per 2048x2048 field, random walks about 60 um long and 0.4-0.5 um wide,
  HER2 at 0.8 of CEP17;

placed at random over nuclei and stroma alike, at a peak of 0.5-3 single signals' peak
amplitude in CEP17. Each field is analysed as it is and with the structures, once as
ishcount runs (``ishcount.spots.shared_signals``, a shape both probe channels show alike,
and the ridge and line tests of ``detect_spots``) and once with them switched off, and its case
figures are compared with the truth; ``e2e`` figures use the nuclei the pipeline itself
scores (red-cell debris excludes the nuclei under it).

Usage::

    python benchmarks/autofluorescence.py            # group1, group2, group5 x 2 seeds, 2048
    python benchmarks/autofluorescence.py --quick    # group2, 1 seed, 1024x1024
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
import ishcount.spots
from ishcount.analyze import analyze_image
from ishcount.assign import DEBRIS
from ishcount.synthetic import PRESETS, make_field

LEVELS = (0.0, 0.5, 1.0, 2.0, 3.0)  # peak in CEP17, in single-signal amplitudes
HER2_SHARE = {"red cells": 0.6, "fibres": 0.8}  # their light in HER2 against CEP17
RED_CELLS_PER_MEGAPIXEL = 40 / 2048**2
FIBRES_PER_MEGAPIXEL = 25 / 2048**2
COLUMNS = [
    "structure",
    "level",
    "tests",
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
    count = max(1, round(RED_CELLS_PER_MEGAPIXEL * shape[0] * shape[1]))
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


def fibres(shape: tuple[int, int], pixel_um: float, rng: np.random.Generator) -> np.ndarray:
    """Elastin-like fibres (peak 1): random walks of 0.15 um steps, about 60 um long,
    dilated by one pixel and blurred by 0.15 um."""
    count = max(1, round(FIBRES_PER_MEGAPIXEL * shape[0] * shape[1]))
    lines = np.zeros(shape, bool)
    step = 0.15 / pixel_um
    for _ in range(count):
        point, angle = rng.uniform(0, 1, 2) * shape, rng.uniform(0, 2 * np.pi)
        for _ in range(400):
            angle += rng.normal(0.0, 0.08)
            point = point + step * np.array([np.sin(angle), np.cos(angle)])
            y, x = int(point[0]), int(point[1])
            if 0 <= y < shape[0] and 0 <= x < shape[1]:
                lines[y, x] = True
    image = ndi.gaussian_filter(ndi.binary_dilation(lines).astype(np.float32), 0.15 / pixel_um)
    return image / max(float(image.max()), 1e-12)


STRUCTURES = {"red cells": red_cells, "fibres": fibres}


def with_structure(image, light: np.ndarray, peak: float, her2_share: float):
    """``image`` with ``light`` (peak 1) added to both probe channels at ``peak`` in CEP17."""

    def add(channel, share):
        values = np.asarray(channel, np.float64) + share * peak * light
        return np.clip(values, 0, np.iinfo(np.uint16).max).astype(np.asarray(channel).dtype)

    return dataclasses.replace(image, her2=add(image.her2, her2_share), cep17=add(image.cep17, 1.0))


def without_tests(image):
    """``analyze_image`` with :func:`ishcount.spots.shared_signals` finding nothing and the
    ridge and line tests of ``detect_spots`` switched off."""

    def nothing(her2, cep17, *args, **kwargs):
        return her2.index[:0], cep17.index[:0]

    with (
        mock.patch.object(ishcount.analyze, "shared_signals", nothing),
        mock.patch.object(ishcount.spots, "_MIN_ROUNDNESS", -np.inf),
        mock.patch.object(ishcount.spots, "_LINE_HELD", np.inf),
    ):
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


def summarize(structure: str, level: float, tests: str, records) -> dict[str, Any]:
    def values(key):
        return np.array([r[key] for r in records], dtype=float)

    return {
        "structure": structure,
        "level": level,
        "tests": tests,
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
    config |= {
        "levels": LEVELS,
        "her2_share": HER2_SHARE,
        "red_cells_per_2048_field": 40,
        "fibres_per_2048_field": 25,
    }
    runs = {"on": analyze_image, "off": without_tests}
    records: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    per_field = []
    start = time.perf_counter()
    for preset in config["presets"]:
        for seed in config["seeds"]:
            field = make_field(preset, shape=config["shape"], rng=seed, name=preset)
            pixel_um = field.image.spacing_um[-1]
            for structure, draw in STRUCTURES.items():
                light = draw(config["shape"], pixel_um, np.random.default_rng(seed))
                for level in LEVELS:
                    if level == 0 and structure != "red cells":
                        continue  # one baseline per field
                    peak = level * PRESETS[preset].spot_amplitude
                    image = field.image
                    if level:
                        image = with_structure(image, light, peak, HER2_SHARE[structure])
                    name = structure if level else "none"
                    for tests, analyse in runs.items():
                        figures = field_figures(field, analyse(image))
                        records.setdefault((name, level, tests), []).append(figures)
                        where = {"preset": preset, "seed": seed, "structure": name}
                        per_field.append(where | {"level": level, "tests": tests} | figures)
                        print(
                            f"  {preset:7s} seed {seed}  {name:9s} x{level:<3g} tests {tests:3s}"
                            f"  ratio error {100 * figures['ratio_rel_error']:5.1f}%  e2e "
                            f"{100 * figures['e2e_ratio_rel_error']:5.1f}%  CEP17 MAE "
                            f"{figures['cep17_mae']:.3f}  debris-excluded "
                            f"{figures['debris_excluded']}",
                            flush=True,
                        )
    elapsed = time.perf_counter() - start
    rows = [summarize(*key, found) for key, found in records.items()]
    print(f"\nSettings: {config}; {elapsed:.0f} s in total\n")
    print("Per structure and level (relative errors as fractions; ratio_err over matched scorable")
    print("nuclei, e2e over the nuclei the pipeline scores):")
    print(format_table(rows, COLUMNS))
    return publish_records("autofluorescence", info, config, elapsed, rows, per_field, args)


if __name__ == "__main__":
    raise SystemExit(main())
