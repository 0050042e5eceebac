"""Accuracy on 8-bit RGB composites, lossless and JPEG, against the 12-bit original.

Microscope software often exports a field as an RGB composite (red = HER2, green = CEP17,
blue = DAPI) with each channel stretched for display and cut to 8 bits, sometimes as JPEG.
For synthetic fields with exact truth this writes such composites (each channel scaled
linearly from its 0.5th, or its 30th, to its 99.9th percentile, so the brightest pixels
clip and, with the black level at the 30th, the background sits at zero, as display
settings do), reads them back through ``ishcount.io.read_image`` (the RGB convention) and
compares the counts with those of the original uint16 field.

Usage::

    python benchmarks/composites.py            # 5 presets x 2 seeds, 2048x2048
    python benchmarks/composites.py --quick    # group1 and group2, 1 seed, 1024x1024
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import format_table, machine_info, machine_line, parse_args, publish_records
from accuracy import evaluate_field

from ishcount.analyze import analyze_image
from ishcount.io import read_image
from ishcount.synthetic import make_field

#: (name, JPEG quality or None for PNG, chroma subsampling, display black level as a
#: percentile); the first is the original.
VARIANTS = (
    ("uint16 original", None, None, None),
    ("PNG 8-bit", None, None, 0.5),
    ("PNG black at 30%", None, None, 30.0),
    ("JPEG q95 4:2:0", 95, "420", 0.5),
    ("JPEG q85 4:4:4", 85, "444", 0.5),
    ("JPEG q85 4:2:0", 85, "420", 0.5),
    ("JPEG q75 4:2:0", 75, "420", 0.5),
)
COLUMNS = [
    "variant",
    "fields",
    "ratio_err_mean",
    "ratio_err_max",
    "mean_her2_err_mean",
    "mean_her2_err_max",
    "her2_bias",
    "cep17_mae",
    "cep17_bias",
    "groups_right",
]


def display_8bit(channel: np.ndarray, low: float = 0.5, high: float = 99.9) -> np.ndarray:
    """A channel stretched linearly between two percentiles and cut to uint8."""
    values = np.asarray(channel, dtype=np.float32)
    lo, hi = np.percentile(values, [low, high])
    scaled = (values - lo) * np.float32(255.0 / max(hi - lo, 1e-6))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def write_composite(
    image, folder: Path, quality: int | None, subsampling: str | None, black: float
) -> Path:
    """Write ``image`` as an RGB composite PNG (``quality`` None) or JPEG, each channel's
    display black level at its ``black`` percentile."""
    import imagecodecs

    channels = [display_8bit(image.channel(c), low=black) for c in ("her2", "cep17", "dapi")]
    rgb = np.stack(channels, axis=-1)
    if quality is None:
        path = folder / f"{image.name}_black{black:g}.png"
        path.write_bytes(imagecodecs.png_encode(rgb))
    else:
        path = folder / f"{image.name}_q{quality}_{subsampling}.jpg"
        path.write_bytes(imagecodecs.jpeg8_encode(rgb, level=quality, subsampling=subsampling))
    return path


def field_figures(field, result) -> dict[str, Any]:
    """Case errors, count bias and CEP17 MAE of one analysed field."""
    figures = evaluate_field(field, result)
    counts, case = figures["counts"], figures["case"]
    return {
        "ratio_rel_error": case["ratio_rel_error"],
        "mean_her2_rel_error": case["mean_her2_rel_error"],
        "group_agrees": bool(case["group_agrees"]),
        "her2_bias": float((counts["pred_her2"] - counts["true_her2"]).mean()),
        "cep17_mae": float((counts["pred_cep17"] - counts["true_cep17"]).abs().mean()),
        "cep17_bias": float((counts["pred_cep17"] - counts["true_cep17"]).mean()),
    }


def summarize(variant: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    def values(key):
        return np.array([r[key] for r in records], dtype=float)

    return {
        "variant": variant,
        "fields": len(records),
        "ratio_err_mean": float(np.nanmean(values("ratio_rel_error"))),
        "ratio_err_max": float(np.nanmax(values("ratio_rel_error"))),
        "mean_her2_err_mean": float(np.nanmean(values("mean_her2_rel_error"))),
        "mean_her2_err_max": float(np.nanmax(values("mean_her2_rel_error"))),
        "her2_bias": float(values("her2_bias").mean()),
        "cep17_mae": float(values("cep17_mae").mean()),
        "cep17_bias": float(values("cep17_bias").mean()),
        "groups_right": f"{sum(r['group_agrees'] for r in records)}/{len(records)}",
    }


def main(argv=None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    info = machine_info()
    print(machine_line(info), flush=True)
    if args.quick:
        config = {"shape": (1024, 1024), "presets": ["group1", "group2"], "seeds": [1]}
    else:
        presets = ["group1", "group2", "group3", "group5", "heterogeneous"]
        config = {"shape": (2048, 2048), "presets": presets, "seeds": [1, 2]}
    config["display_white_percentile"] = 99.9
    records: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in VARIANTS}
    per_field = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for preset in config["presets"]:
            for seed in config["seeds"]:
                field = make_field(preset, shape=config["shape"], rng=seed, name=preset)
                for variant, quality, subsampling, black in VARIANTS:
                    image = field.image
                    if black is not None:
                        path = write_composite(image, Path(tmp), quality, subsampling, black)
                        image = read_image(path, spacing_um=field.image.spacing_um)
                    figures = field_figures(field, analyze_image(image))
                    records[variant].append(figures)
                    where = {"preset": preset, "seed": seed, "variant": variant}
                    per_field.append({**where, **figures})
                    print(
                        f"  {preset:13s} seed {seed}  {variant:16s} ratio error "
                        f"{100 * figures['ratio_rel_error']:5.1f}%  mean HER2 error "
                        f"{100 * figures['mean_her2_rel_error']:5.1f}%  CEP17 MAE "
                        f"{figures['cep17_mae']:.3f}",
                        flush=True,
                    )
    elapsed = time.perf_counter() - start
    rows = [summarize(name, records[name]) for name, *_ in VARIANTS]
    print(f"\nSettings: {config}; {elapsed:.0f} s in total\n")
    print("Per variant (relative errors as fractions; counts over matched scorable nuclei):")
    print(format_table(rows, COLUMNS))
    return publish_records("composites", info, config, elapsed, rows, per_field, args)


if __name__ == "__main__":
    raise SystemExit(main())
