"""Accuracy of every stage on synthetic presets against their exact truth (issue 4).

For each preset (group1..group5, heterogeneous, borderline, low_snr), 2D fields and
z-stacks, over several seeds: nuclei F1 at IoU 0.5, isolated-signal F1 per channel,
per-nucleus count errors and case-level ratio / mean HER2 / group, with PASS/FAIL
against the project's targets and the peer's (big-fish, dense decomposition) figures.

Counts and case figures use the nuclei that are matched (IoU >= 0.5) and scorable in
truth, so segmentation misses do not enter the count errors twice; the end-to-end
case result (the pipeline's own scored nuclei through :func:`ishcount.score_case`) is
printed beside it.

Usage::

    python benchmarks/accuracy.py            # 2D 2048x2048 x 3 seeds, z-stacks 2048x2048x9 x 2
    python benchmarks/accuracy.py --quick    # 2D 1024x1024 x 1 seed, z-stacks 512x512x9 x 1
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    format_table,
    machine_info,
    machine_line,
    parse_args,
    publish,
    verdict,
)

from ishcount.analyze import analyze_image
from ishcount.evaluate import case_errors, count_errors, evaluate_spots, match_labels
from ishcount.score import is_amplified, score_case
from ishcount.synthetic import PRESETS, make_field

PRESET_NAMES = (
    "group1",
    "group2",
    "group3",
    "group4",
    "group5",
    "heterogeneous",
    "borderline",
    "low_snr",
    "wide_signals",
    "clean",
)
LOW_SNR_PRESETS = frozenset({"low_snr"})
MATCH_DISTANCE_UM = 0.15  # 1.5 px at the default 0.1 um pixel
RATIO_CUTOFF = 2.0
MEAN_HER2_CUTOFFS = (4.0, 6.0)
MIN_AMPLIFIED_NUCLEI = 10  # fewer amplified nuclei in a row: its relative error is not judged

TARGETS = {
    "nuclei_f1": 0.95,
    "isolated_f1_normal": 0.99,
    "isolated_f1_low_snr": 0.95,
    "amplified_her2_rel_error": 0.08,
    "cep17_mae": 0.1,
    "case_rel_error": 0.05,
}

#: The peer's published figures (big-fish with dense decomposition), for reference.
PEER_FIGURES = [
    {"figure": "isolated-signal F1", "normal": "0.99", "low SNR": "0.90"},
    {"figure": "amplified-nucleus HER2 count error", "normal": "12%", "low SNR": "18%"},
    {"figure": "CEP17 per nucleus (bias)", "normal": "+0.6", "low SNR": "-"},
    {"figure": "case ratio (true 4.81)", "normal": "4.01", "low SNR": "2.17"},
]


# ----------------------------------------------------------------------------- one field


def _weak_isolated_rows(truth: pd.DataFrame, channel: str) -> np.ndarray:
    """Truth rows standing for the channel's isolated weak signals (first row of a split)."""
    part = truth[(truth["channel"] == channel) & (truth["cluster_id"] < 0)]
    signals = part.reset_index().groupby("signal_id")
    first = signals.agg(row=("index", "min"), weak=("is_weak", "any"))
    return first.loc[first["weak"], "row"].to_numpy()


def _outside_obscured(field, result) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The true and detected signals outside nuclei the truth calls obscured by debris.

    Nobody scores a nucleus under debris (the truth's cells say it is not scorable, and the
    pipeline excludes it), and its signals cannot be told from the debris's own light: the
    pipeline drops the debris together with the signals it runs into. Neither hits nor
    misses there enter the signal F1, as for the nuclei. Also returns how many true
    signals were left out.
    """
    truth = field.spots.reset_index(drop=True)
    obscured = field.cells.loc[field.cells["is_obscured"], "label"].to_numpy()
    keep_truth = ~truth["label"].isin(obscured).to_numpy()
    found = result.spots.reset_index(drop=True)
    y = np.clip(np.rint(found["y"].to_numpy(float)).astype(int), 0, field.nuclei.shape[-2] - 1)
    x = np.clip(np.rint(found["x"].to_numpy(float)).astype(int), 0, field.nuclei.shape[-1] - 1)
    keep_found = ~np.isin(field.nuclei[y, x], obscured)
    left_out = truth.loc[~keep_truth].drop_duplicates(["channel", "signal_id"])
    return (
        truth[keep_truth].reset_index(drop=True),
        found[keep_found].reset_index(drop=True),
        len(left_out),
    )


def _spot_accuracy(field, result) -> dict[str, Any]:
    """Isolated-signal matches per channel, laterally within MATCH_DISTANCE_UM.

    Beside the counts of all isolated signals, those of the weak ones (rendered at an
    amplitude of 2-3 noise standard deviations): how many there are and how many were found.
    Signals in nuclei under debris are left out (:func:`_outside_obscured`).
    """
    lateral = tuple(field.image.spacing_um[-2:])
    truth, detected, left_out = _outside_obscured(field, result)
    out = {"left_out": left_out}
    for channel in ("her2", "cep17"):
        record = evaluate_spots(
            truth,
            detected,
            max_distance=MATCH_DISTANCE_UM,
            spacing=lateral,
            channel=channel,
        )
        iso = record.isolated
        weak = _weak_isolated_rows(truth, channel)
        found = np.isin(weak, [pair[0] for pair in iso.pairs])
        out[channel] = {
            "tp": iso.tp,
            "n_true": iso.n_true,
            "n_pred": iso.n_pred,
            "weak_true": len(weak),
            "weak_tp": int(found.sum()),
        }
    return out


def _matched_counts(field, result, mapping: dict[int, int]) -> pd.DataFrame:
    """True and predicted counts of the matched nuclei that are scorable in truth."""
    truth = field.cells.set_index("label")
    pred = result.cells.set_index("label")
    pairs = [
        (t, p) for t, p in mapping.items() if t in truth.index and bool(truth.at[t, "is_scorable"])
    ]
    true_labels = [t for t, _ in pairs]
    pred_labels = [p for _, p in pairs]
    return pd.DataFrame(
        {
            "true_her2": truth.loc[true_labels, "n_her2"].to_numpy(np.int64),
            "true_cep17": truth.loc[true_labels, "n_cep17"].to_numpy(np.int64),
            "pred_her2": pred.loc[pred_labels, "n_her2"].to_numpy(np.int64),
            "pred_cep17": pred.loc[pred_labels, "n_cep17"].to_numpy(np.int64),
            "pred_scored": pred.loc[pred_labels, "is_scored"].to_numpy(bool),
        }
    )


def _case_values(her2: np.ndarray, cep17: np.ndarray) -> dict[str, float]:
    n = len(her2)
    return {
        "ratio": float(her2.sum() / cep17.sum()) if cep17.sum() else math.nan,
        "mean_her2": float(her2.mean()) if n else math.nan,
        "mean_cep17": float(cep17.mean()) if n else math.nan,
    }


def _end_to_end(field, result) -> dict[str, Any]:
    """The pipeline's own case result (its scored nuclei) against the field's truth."""
    truth_cells = field.cells[field.cells["is_scorable"]]
    truth = _case_values(truth_cells["n_her2"].to_numpy(), truth_cells["n_cep17"].to_numpy())
    summary = score_case(result.cells, rng=0, n_resamples=1)
    if summary.ratio is None or summary.mean_her2 is None:
        return {"ratio_rel_error": math.nan, "mean_her2_rel_error": math.nan, "group_agrees": False}
    errors = case_errors(truth, summary)
    return {
        "ratio_true": errors.ratio_true,
        "ratio_pred": errors.ratio_pred,
        "ratio_rel_error": errors.ratio_rel_error,
        "mean_her2_rel_error": errors.mean_her2_rel_error,
        "group_agrees": errors.group_agrees,
    }


def _far_from_cutoffs(ratio: float, mean_her2: float, margin: float = 0.10) -> bool:
    """True when ratio and mean HER2 are both at least ``margin`` (relative) from a cut-off."""
    ratio_far = abs(ratio - RATIO_CUTOFF) >= margin * RATIO_CUTOFF
    mean_far = all(abs(mean_her2 - cut) >= margin * cut for cut in MEAN_HER2_CUTOFFS)
    return ratio_far and mean_far


def evaluate_field(field, result) -> dict[str, Any]:
    """All accuracy figures of one analysed synthetic field (one field = one case here)."""
    segmentation = match_labels(field.nuclei, result.labels, iou_threshold=0.5)
    counts = _matched_counts(field, result, segmentation.mapping)
    truth = _case_values(counts["true_her2"].to_numpy(), counts["true_cep17"].to_numpy())
    pred = _case_values(counts["pred_her2"].to_numpy(), counts["pred_cep17"].to_numpy())
    case = case_errors(truth, pred)
    return {
        "nuclei": {
            "tp": segmentation.tp,
            "n_true": segmentation.n_true,
            "n_pred": segmentation.n_pred,
        },
        "spots": _spot_accuracy(field, result),
        "counts": counts,
        "case": {
            "ratio_true": case.ratio_true,
            "ratio_pred": case.ratio_pred,
            "ratio_rel_error": case.ratio_rel_error,
            "mean_her2_true": case.mean_her2_true,
            "mean_her2_pred": case.mean_her2_pred,
            "mean_her2_rel_error": case.mean_her2_rel_error,
            "group_true": case.group_true,
            "group_pred": case.group_pred,
            "group_agrees": case.group_agrees,
            "group_judged": _far_from_cutoffs(case.ratio_true, case.mean_her2_true),
        },
        "end_to_end": _end_to_end(field, result),
    }


# ----------------------------------------------------------------------------- pooling


def _f1(tp: int, n_true: int, n_pred: int) -> float:
    return 2 * tp / (n_true + n_pred) if n_true + n_pred else math.nan


def _pooled_f1(records: list[dict[str, int]]) -> float:
    return _f1(*(sum(r[k] for r in records) for k in ("tp", "n_true", "n_pred")))


def _weak_split(records: list[dict[str, int]]) -> tuple[float, float, float]:
    """Share of weak signals among the isolated, their recall, and the F1 of the others.

    The F1 of the others leaves out the weak signals and the detections matched to them.
    """
    total = {k: sum(r[k] for r in records) for k in records[0]}
    share = total["weak_true"] / total["n_true"] if total["n_true"] else math.nan
    recall = total["weak_tp"] / total["weak_true"] if total["weak_true"] else math.nan
    others = _f1(
        total["tp"] - total["weak_tp"],
        total["n_true"] - total["weak_true"],
        total["n_pred"] - total["weak_tp"],
    )
    return share, recall, others


def summarize_row(preset: str, mode: str, fields: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool the per-field figures of one preset and mode (micro-averaged over seeds)."""
    counts = pd.concat([f["counts"] for f in fields], ignore_index=True)
    amplified = is_amplified(counts["true_her2"], counts["true_cep17"])
    her2 = count_errors(counts["true_her2"], counts["pred_her2"])
    cep17 = count_errors(counts["true_cep17"], counts["pred_cep17"])
    amp = count_errors(counts["true_her2"][amplified], counts["pred_her2"][amplified])
    # The nuclei a user's result rests on: those the pipeline scores as well.
    scored = counts["pred_scored"].to_numpy(bool)
    amp_scored = count_errors(
        counts["true_her2"][amplified & scored], counts["pred_her2"][amplified & scored]
    )
    her2_scored = count_errors(counts["true_her2"][scored], counts["pred_her2"][scored])
    cep17_scored = count_errors(counts["true_cep17"][scored], counts["pred_cep17"][scored])
    cases = [f["case"] for f in fields]
    e2e = [f["end_to_end"] for f in fields]
    weak = {ch: _weak_split([f["spots"][ch] for f in fields]) for ch in ("her2", "cep17")}
    return {
        "preset": preset,
        "mode": mode,
        "fields": len(fields),
        "nuclei_f1": _pooled_f1([f["nuclei"] for f in fields]),
        "her2_iso_f1": _pooled_f1([f["spots"]["her2"] for f in fields]),
        "cep17_iso_f1": _pooled_f1([f["spots"]["cep17"] for f in fields]),
        "weak_share": weak["her2"][0],
        "her2_weak_recall": weak["her2"][1],
        "cep17_weak_recall": weak["cep17"][1],
        "her2_iso_f1_others": weak["her2"][2],
        "cep17_iso_f1_others": weak["cep17"][2],
        "signals_under_debris": sum(f["spots"]["left_out"] for f in fields),
        "n_nuclei": len(counts),
        "n_amplified": int(amplified.sum()),
        "amp_her2_rel_err": amp.mean_relative_error if amp.n >= MIN_AMPLIFIED_NUCLEI else math.nan,
        "her2_mae": her2.mae,
        "her2_bias": her2.bias,
        "cep17_mae": cep17.mae,
        "cep17_bias": cep17.bias,
        "scored_share": float(scored.mean()) if len(scored) else math.nan,
        "amp_her2_rel_err_scored": amp_scored.mean_relative_error
        if amp_scored.n >= MIN_AMPLIFIED_NUCLEI
        else math.nan,
        "her2_mae_scored": her2_scored.mae,
        "cep17_mae_scored": cep17_scored.mae,
        "ratio_true": float(np.mean([c["ratio_true"] for c in cases])),
        "ratio_pred": float(np.mean([c["ratio_pred"] for c in cases])),
        "ratio_rel_err_max": float(np.max([c["ratio_rel_error"] for c in cases])),
        "mean_her2_rel_err_max": float(np.max([c["mean_her2_rel_error"] for c in cases])),
        "groups": " ".join(f"{c['group_true']}>{c['group_pred']}" for c in cases),
        "group_judged": sum(c["group_judged"] for c in cases),
        "group_wrong_judged": sum(c["group_judged"] and not c["group_agrees"] for c in cases),
        "e2e_ratio_rel_err_max": float(np.nanmax([c["ratio_rel_error"] for c in e2e])),
        "e2e_mean_her2_rel_err_max": float(np.nanmax([c["mean_her2_rel_error"] for c in e2e])),
        "e2e_group_agrees": sum(bool(c["group_agrees"]) for c in e2e),
    }


def _row_checks(row: dict[str, Any]) -> dict[str, bool | None]:
    """PASS/FAIL of each target for one row (None: not applicable)."""
    low = row["preset"] in LOW_SNR_PRESETS
    iso_target = TARGETS["isolated_f1_low_snr" if low else "isolated_f1_normal"]
    amp = row["amp_her2_rel_err"]
    return {
        "nuclei_f1": row["nuclei_f1"] >= TARGETS["nuclei_f1"],
        "isolated_f1": min(row["her2_iso_f1"], row["cep17_iso_f1"]) >= iso_target,
        "amp_her2": None if math.isnan(amp) else amp <= TARGETS["amplified_her2_rel_error"],
        "cep17_mae": row["cep17_mae"] <= TARGETS["cep17_mae"],
        "ratio": row["ratio_rel_err_max"] <= TARGETS["case_rel_error"],
        "mean_her2": row["mean_her2_rel_err_max"] <= TARGETS["case_rel_error"],
        "group": None if not row["group_judged"] else row["group_wrong_judged"] == 0,
    }


def target_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per target: the worst row, and PASS when every applicable row passes."""
    descriptions = {
        "nuclei_f1": ("nuclei F1 @IoU0.5 >= 0.95", "nuclei_f1", min),
        "isolated_f1": ("isolated F1 >= 0.99 (0.95 low SNR)", None, min),
        "amp_her2": ("amplified HER2 rel. error <= 8%", "amp_her2_rel_err", max),
        "cep17_mae": ("CEP17 MAE <= 0.1 / nucleus", "cep17_mae", max),
        "ratio": ("case ratio within 5%", "ratio_rel_err_max", max),
        "mean_her2": ("mean HER2 within 5%", "mean_her2_rel_err_max", max),
        "group": ("group right (>= 10% from cut-offs)", "group_wrong_judged", max),
    }
    lines = []
    for key, (text, column, worst) in descriptions.items():
        for mode in sorted({r["mode"] for r in rows}):
            part = [r for r in rows if r["mode"] == mode and r["checks"][key] is not None]
            if column is None:
                values = {r["preset"]: min(r["her2_iso_f1"], r["cep17_iso_f1"]) for r in part}
            else:
                values = {r["preset"]: r[column] for r in part}
            checks = [r["checks"][key] for r in part]
            worst_preset = worst(values, key=values.get) if values else None
            lines.append(
                {
                    "target": text,
                    "mode": mode,
                    "worst": values.get(worst_preset) if worst_preset else None,
                    "worst_preset": worst_preset,
                    "failing": ", ".join(r["preset"] for r in part if not r["checks"][key]),
                    "verdict": verdict(all(checks) if checks else None),
                }
            )
    return lines


# ----------------------------------------------------------------------------- driver


def run_mode(mode: str, shape, n_z, seeds, presets) -> list[dict[str, Any]]:
    """Generate, analyse and evaluate every preset in one mode; return the pooled rows."""
    rows = []
    for preset in presets:
        fields = []
        for seed in seeds:
            start = time.perf_counter()
            field = make_field(preset, shape=shape, n_z=n_z, rng=seed, name=f"{preset}_{seed}")
            result = analyze_image(field.image)
            fields.append(evaluate_field(field, result))
            print(
                f"  {mode:7s} {preset:13s} seed {seed}: {time.perf_counter() - start:5.1f} s",
                flush=True,
            )
        row = summarize_row(preset, mode, fields)
        row["checks"] = _row_checks(row)
        row["fails"] = ",".join(k for k, v in row["checks"].items() if v is False) or "-"
        rows.append(row)
    return rows


MAIN_COLUMNS = [
    "preset",
    "mode",
    "fields",
    "nuclei_f1",
    "her2_iso_f1",
    "cep17_iso_f1",
    "n_nuclei",
    "n_amplified",
    "amp_her2_rel_err",
    "her2_mae",
    "cep17_mae",
    "cep17_bias",
    "fails",
]
WEAK_COLUMNS = [
    "preset",
    "mode",
    "her2_iso_f1",
    "weak_share",
    "her2_weak_recall",
    "her2_iso_f1_others",
    "cep17_iso_f1",
    "cep17_weak_recall",
    "cep17_iso_f1_others",
    "signals_under_debris",
]
SCORED_COLUMNS = [
    "preset",
    "mode",
    "scored_share",
    "amp_her2_rel_err_scored",
    "her2_mae_scored",
    "cep17_mae_scored",
]
CASE_COLUMNS = [
    "preset",
    "mode",
    "ratio_true",
    "ratio_pred",
    "ratio_rel_err_max",
    "mean_her2_rel_err_max",
    "groups",
    "group_judged",
    "group_wrong_judged",
    "e2e_ratio_rel_err_max",
    "e2e_mean_her2_rel_err_max",
    "e2e_group_agrees",
]


def settings(quick: bool) -> dict[str, Any]:
    """Benchmark sizes: default 2048x2048 2D and 2048x2048x9 z-stacks; quick is smaller.

    z-stacks are judged at the 2D size: on 1024x1024 layouts even 2D scores a nuclei F1 of
    about 0.94 (a larger share of nuclei is cut by the edge), so a smaller z field would
    mix up the cost of projection with the cost of the field size.
    """
    if quick:
        return {"2d_shape": (1024, 1024), "2d_seeds": [1], "z_shape": (512, 512), "z_seeds": [1]}
    return {
        "2d_shape": (2048, 2048),
        "2d_seeds": [1, 2, 3],
        "z_shape": (2048, 2048),
        "z_seeds": [1, 2],
    }


def main(argv=None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    info = machine_info()
    print(machine_line(info), flush=True)
    config = settings(args.quick)
    config["n_z"] = 9
    config["match_distance_um"] = MATCH_DISTANCE_UM
    start = time.perf_counter()
    rows = run_mode("2D", config["2d_shape"], None, config["2d_seeds"], PRESET_NAMES)
    rows += run_mode("z-stack", config["z_shape"], 9, config["z_seeds"], PRESET_NAMES)
    elapsed = time.perf_counter() - start
    targets = target_summary(rows)
    print(f"\nSettings: {config}; {elapsed:.0f} s in total\n")
    print("Per preset (counts over matched nuclei scorable in truth):")
    print(format_table(rows, MAIN_COLUMNS))
    print(
        "\nThe same nuclei where ishcount scores them too (scored_share of them; the others"
        " it excludes, e.g. under debris or lacking a signal):"
    )
    print(format_table(rows, SCORED_COLUMNS))
    print(
        "\nIsolated signals: the weak ones (weak_share of the HER2 truth, rendered at 2-3 noise"
        " sds), the share of them found, and the F1 of the others (without the weak signals"
        " and the detections matched to them):"
    )
    print(format_table(rows, WEAK_COLUMNS))
    print("\nCase level (matched scorable nuclei; e2e = the pipeline's own scored nuclei):")
    print(format_table(rows, CASE_COLUMNS))
    print("\nTargets:")
    print(format_table(targets, ["target", "mode", "worst", "worst_preset", "failing", "verdict"]))
    print("\nPeer's published figures (big-fish, dense decomposition), for reference:")
    print(format_table(PEER_FIGURES, ["figure", "normal", "low SNR"]))
    presets = {name: PRESETS[name].description for name in PRESET_NAMES}
    document = {
        "benchmark": "accuracy",
        "machine": info,
        "settings": config,
        "seconds": elapsed,
        "presets": presets,
        "targets": TARGETS,
        "rows": rows,
        "target_summary": targets,
        "peer_figures": PEER_FIGURES,
    }
    return publish(document, args)


if __name__ == "__main__":
    raise SystemExit(main())
