"""score_case: totals, ratio of sums, bootstrap, heterogeneity and quality flags."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from ishcount.analyze import analyze_image
from ishcount.rules import INDETERMINATE, INSUFFICIENT, RULE_SETS, classify
from ishcount.score import band_indices, is_amplified, score_case, signal_quality_flags
from ishcount.synthetic import make_field
from ishcount.tables import CELL_SCHEMA, SPOT_SCHEMA, conform, empty_table


def make_cells(her2, cep17, *, n_fields=2, scored=None, reasons=None):
    n = len(her2)
    scored = [True] * n if scored is None else scored
    table = pd.DataFrame(
        {
            "image": [f"field{i % n_fields}" for i in range(n)],
            "label": np.arange(1, n + 1),
            "centroid_y": 0.0,
            "centroid_x": 0.0,
            "area_um2": 50.0,
            "n_her2": her2,
            "n_cep17": cep17,
            "n_her2_clusters": 0,
            "touches_border": False,
            "is_scored": scored,
            "exclusion_reason": reasons or ["" if s else "no CEP17 signal" for s in scored],
        }
    )
    return conform(table, CELL_SCHEMA)


def test_totals_means_ratio_fields_and_exclusions():
    cells = make_cells(
        [3, 5, 2, 9, 4, 0], [2, 2, 1, 3, 2, 0], n_fields=3, scored=[True] * 5 + [False]
    )
    cells.loc[5, "image"] = "field9"  # an excluded nucleus does not add a field
    summary = score_case(cells, rng=0, n_resamples=100)
    assert (summary.n_nuclei, summary.n_fields, summary.n_excluded) == (5, 3, 1)
    assert (summary.total_her2, summary.total_cep17) == (23, 10)
    assert summary.mean_her2 == pytest.approx(4.6)
    assert summary.ratio == pytest.approx(2.3)
    assert summary.exclusion_reasons == (("no CEP17 signal", 1),)
    assert any("1 nuclei were not scored" in note for note in summary.notes)


def test_empty_table_gives_an_empty_summary_that_classifies_as_insufficient():
    summary = score_case(empty_table(CELL_SCHEMA), rng=0)
    assert summary.n_nuclei == 0
    assert summary.ratio is None
    assert summary.ratio_ci is None
    assert classify(summary).call == INSUFFICIENT


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(3)
    cells = make_cells(rng.poisson(3, 60), np.maximum(rng.poisson(2, 60), 1))
    first, again = score_case(cells, rng=11), score_case(cells, rng=11)
    assert first.ratio_ci == again.ratio_ci
    assert first.mean_her2_ci == again.mean_her2_ci
    assert first.ratio_ci[0] < first.ratio < first.ratio_ci[1]
    assert first.mean_her2_ci[0] < first.mean_her2 < first.mean_her2_ci[1]
    bigger = score_case(pd.concat([cells] * 9, ignore_index=True), rng=11)
    assert np.ptp(bigger.ratio_ci) < np.ptp(first.ratio_ci) / 2  # ~1/3 for 9x the nuclei


def test_bootstrap_interval_covers_the_true_ratio_in_most_simulated_cases():
    rng = np.random.default_rng(5)
    covered = 0
    for _ in range(40):
        her2, cep17 = rng.poisson(3.0, 40), rng.poisson(2.0, 40)  # true ratio 1.5
        covered += (lambda ci: ci[0] <= 1.5 <= ci[1])(
            score_case(make_cells(her2, cep17), rng=rng, n_resamples=400).ratio_ci
        )
    assert covered >= 33  # nominal 95%: 38 of 40; binomial 1st percentile is about 35


def test_recount_change_probability_is_small_far_from_cutoffs_and_large_at_them():
    far = score_case(make_cells([2, 2, 3, 1] * 10, [2, 2, 2, 2] * 10), rng=0)
    at_cutoff = score_case(make_cells([4, 5, 3, 4] * 10, [2, 3, 1, 2] * 10), rng=0)  # 2.0, 4.0
    assert far.band == "group 5"
    assert far.recount_change_probability < 0.01
    assert at_cutoff.band == "group 1"
    assert at_cutoff.recount_change_probability > 0.4


def test_heterogeneity_reports_both_populations():
    her2 = [14, 12, 16] * 4 + [2, 3, 2, 2] * 7  # 12 of 40 amplified (30%)
    cep17 = [2] * 40
    summary = score_case(make_cells(her2, cep17), rng=0, n_resamples=200)
    assert summary.amplified_fraction == pytest.approx(0.3)
    assert summary.has_separate_population
    amplified, rest = summary.amplified_population, summary.rest_population
    assert (amplified.n_nuclei, rest.n_nuclei) == (12, 28)
    assert (amplified.band, rest.band) == ("group 1", "group 5")
    assert amplified.total_her2 + rest.total_her2 == summary.total_her2
    reasons = classify(summary).reasons
    assert any("separate population" in r for r in reasons)
    assert any("at least 20 nuclei of the amplified population" in r for r in reasons)


@pytest.mark.parametrize(
    ("her2", "separate"),
    [
        ([14, 12, 16, 10] * 10, False),  # uniformly amplified: one population
        ([14] * 2 + [2] * 38, False),  # 5%: below the 10% rule
        ([3, 2, 2, 2] * 10, False),  # 3 HER2 / 1 CEP17 is a high ratio but too few copies
    ],
)
def test_no_separate_population_when_not_warranted(her2, separate):
    cep17 = [1, 1, 2, 2] * 10 if her2[0] == 3 else [2] * 40
    summary = score_case(make_cells(her2, cep17), rng=0, n_resamples=50)
    assert summary.has_separate_population is separate
    assert summary.amplified_population is None


def test_is_amplified_definition():
    her2 = np.array([2, 3, 4, 4, 5, 6, 8, 4])
    cep17 = np.array([1, 1, 2, 3, 3, 6, 4, 0])
    assert is_amplified(her2, cep17).tolist() == [
        False,
        False,
        True,
        False,
        False,
        True,
        True,
        True,
    ]


def _spots(labels, snr, in_cytoplasm=None):
    spots = empty_table(SPOT_SCHEMA).reindex(range(len(labels)))
    spots["label"], spots["snr"] = labels, snr
    spots["in_cytoplasm"] = [lab == 0 for lab in labels] if in_cytoplasm is None else in_cytoplasm
    spots["copies"], spots["saturated"] = 1, False
    return spots


def test_saturated_signals_are_flagged_by_the_copies_they_hold():
    spots = _spots([1] * 100, [9.0] * 100)
    assert not {f.name: f for f in signal_quality_flags(spots)}["saturated_signals"].tripped
    spots.loc[:1, "copies"] = 12  # two clipped clusters hold 24 of 122 copies
    spots.loc[:1, "saturated"] = True
    flag = {f.name: f for f in signal_quality_flags(spots)}["saturated_signals"]
    assert flag.value == pytest.approx(24 / 122)
    assert flag.tripped
    assert "camera's maximum" in flag.message
    spots.loc[:1, "label"] = 0  # far from any nucleus: not counted
    spots.loc[:1, "in_cytoplasm"] = False
    assert {f.name: f for f in signal_quality_flags(spots)}["saturated_signals"].value == 0
    # tables without the column (older outputs) get no such flag
    names = {f.name for f in signal_quality_flags(spots.drop(columns="saturated"))}
    assert "saturated_signals" not in names


def test_signals_far_from_nuclei_are_not_over_cytoplasm():
    labels = [0] * 30 + [1] * 90
    near = [True] * 5 + [False] * 25 + [False] * 90  # 25 signals over stroma or debris
    flags = {f.name: f for f in signal_quality_flags(_spots(labels, [9.0] * 120, near))}
    assert flags["signals_outside_nuclei"].value == pytest.approx(5 / 95)
    assert not flags["signals_outside_nuclei"].tripped


def test_signal_quality_flags_carry_figure_and_limit():
    outside = _spots([0] * 15 + [1] * 85, [9.0] * 100)
    flags = {f.name: f for f in signal_quality_flags(outside)}
    assert flags["signals_outside_nuclei"].value == pytest.approx(0.15)
    assert flags["signals_outside_nuclei"].limit == 0.10
    assert flags["signals_outside_nuclei"].tripped
    assert "15.0%" in flags["signals_outside_nuclei"].message
    assert not flags["weak_signals"].tripped
    weak = {f.name: f for f in signal_quality_flags(_spots([1] * 100, [2.0] * 26 + [9.0] * 74))}
    assert weak["weak_signals"].tripped
    assert weak["weak_signals"].value == pytest.approx(0.26)
    exactly_at_limit = signal_quality_flags(_spots([0] * 10 + [1] * 90, [9.0] * 100))
    assert not exactly_at_limit[0].tripped
    assert signal_quality_flags(empty_table(SPOT_SCHEMA)) == ()


def test_quality_flags_make_the_case_indeterminate():
    cells = make_cells([2] * 40, [2] * 40)
    summary = score_case(cells, spots=_spots([0] * 30 + [1] * 70, [9.0] * 100), rng=0)
    result = classify(summary)
    assert result.call == INDETERMINATE
    assert any("30.0%" in reason for reason in result.reasons)


def test_too_few_scorable_nuclei_flag():
    scored = [True] * 20 + [False] * 30
    summary = score_case(make_cells([2] * 50, [2] * 50, scored=scored), rng=0, n_resamples=20)
    flag = next(f for f in summary.quality_flags if f.name == "scorable_nuclei")
    assert flag.tripped
    assert flag.value == pytest.approx(0.4)
    assert classify(summary).call == INDETERMINATE


def test_many_nuclei_excluded_for_their_size_ask_for_the_pixel_size():
    def size_notes(n_small):
        reasons = ["too small"] * n_small + [""] * (50 - n_small)
        cells = make_cells([2] * 50, [2] * 50, scored=[r == "" for r in reasons], reasons=reasons)
        notes = score_case(cells, rng=0, n_resamples=10).notes
        return [note for note in notes if "pixel size" in note]

    assert size_notes(10) == []  # 20%: at the limit
    (note,) = size_notes(15)
    assert note.startswith("30% of nuclei away from the image edge")
    assert "50 um2" in note


def test_signals_narrower_than_light_allows_ask_for_the_pixel_size():
    cells = make_cells([2] * 20, [2] * 20)

    def notes(sigmas):
        return score_case(cells, rng=0, n_resamples=10, signal_sigma_um=sigmas).notes

    assert not [n for n in notes([0.14, 0.12, np.nan, 0.06]) if "pixel size" in n]
    (note,) = [n for n in notes([0.06, 0.065, 0.13, np.nan]) if "pixel size" in n]
    assert note.startswith("Signals measure 0.065 um")


def test_a_pixel_size_stated_too_small_is_noticed():
    """Nuclei of a 0.1 um field read as 0.065 um pixels: a third fall under the minimum."""
    field = make_field("group5", shape=(1024, 1024), rng=1)

    def size_notes(pixel_um):
        image = dataclasses.replace(field.image, spacing_um=(pixel_um, pixel_um))
        notes = score_case(analyze_image(image).cells, rng=0, n_resamples=10).notes
        return [note for note in notes if "pixel size" in note]

    assert size_notes(0.1) == []
    assert len(size_notes(0.065)) == 1


def test_band_indices_match_band_for():
    rng = np.random.default_rng(2)
    ratio = np.r_[rng.uniform(0, 4, 200), 2.0, np.nextafter(2.0, 0)]
    mean = np.r_[rng.uniform(0, 9, 200), 4.0, 6.0]
    for rules in RULE_SETS.values():
        keys = [b.key for b in rules.bands]
        got = band_indices(rules, ratio, mean)
        assert [keys[i] for i in got] == [
            rules.band_for(r, m).key for r, m in zip(ratio, mean, strict=True)
        ]


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda c: c.drop(columns="n_cep17"), ValueError, "n_cep17"),
        (lambda c: c.astype({"n_her2": float}).assign(n_her2=np.nan), ValueError, "n_her2"),
        (lambda c: c.assign(n_cep17=-1), ValueError, "-1"),
        (lambda c: c.to_dict(), TypeError, "cells"),
    ],
)
def test_bad_cell_tables_are_rejected(change, error, match):
    with pytest.raises(error, match=match):
        score_case(change(make_cells([2] * 4, [2] * 4)), rng=0)


def test_bad_options_are_rejected():
    cells = make_cells([2] * 4, [2] * 4)
    with pytest.raises(TypeError, match="rng"):
        score_case(cells, rng="seed")
    with pytest.raises(ValueError, match="ci_level"):
        score_case(cells, ci_level=95)
    with pytest.raises(ValueError, match="rule_set"):
        score_case(cells, rule_set="nope")


def test_a_case_whose_cep17_clusters_asks_whether_the_channels_are_swapped():
    image = make_field("group1", shape=(768, 768), rng=2).image
    normal = analyze_image(image)
    swapped = analyze_image(dataclasses.replace(image, her2=image.cep17, cep17=image.her2))
    assert not [
        n for n in score_case(normal.cells, spots=normal.spots, rng=0).notes if "swapped" in n
    ]
    (note,) = [
        n for n in score_case(swapped.cells, spots=swapped.spots, rng=0).notes if "swapped" in n
    ]
    share = float(note.split("CEP17 clusters in ")[1].split("%")[0])
    assert share > 50, note
