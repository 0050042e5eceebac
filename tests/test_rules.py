"""Rule sets and classify: boundaries, work-up, recount, HER2-low, errors, JSON."""

import json
import math

import numpy as np
import pytest

from ishcount.rules import (
    ADJUDICATION_REQUIRED,
    CALLS,
    INDETERMINATE,
    INSUFFICIENT,
    NEGATIVE,
    NEGATIVE_WITH_COMMENT,
    POSITIVE,
    RULE_SETS,
    WORKUP_REQUIRED,
    Classification,
    Counts,
    QualityFlag,
    classify,
    dual_probe_group,
    get_rule_set,
    parse_ihc,
)


def below(x):
    return math.nextafter(x, -math.inf)


def above(x):
    return math.nextafter(x, math.inf)


# Mean HER2 probes around the 4.0 and 6.0 cut-offs; ratio probes around 2.0.
MEANS = {
    "0": 0.0,
    "below4": below(4.0),
    "4": 4.0,
    "above4": above(4.0),
    "below6": below(6.0),
    "6": 6.0,
    "above6": above(6.0),
}
RATIOS_HIGH = {"2": 2.0, "above2": above(2.0), "big": 50.0}
RATIOS_LOW = {"0": 0.0, "below2": below(2.0)}

# Expected band per mean probe, written out by hand from her2-ish-rules.md.
EXPECTED = {
    "asco-cap-2018-breast-dual": {
        "high": dict.fromkeys(["4", "above4", "below6", "6", "above6"], "group 1")
        | {"0": "group 2", "below4": "group 2"},
        "low": {"0": "group 5", "below4": "group 5", "4": "group 4", "above4": "group 4"}
        | {"below6": "group 4", "6": "group 3", "above6": "group 3"},
    },
    "asco-cap-2013-breast-dual": {
        "high": dict.fromkeys(MEANS, "positive (ratio >= 2.0)"),
        "low": {"0": "negative", "below4": "negative", "4": "equivocal", "above4": "equivocal"}
        | {
            "below6": "equivocal",
            "6": "positive (mean >= 6.0)",
            "above6": "positive (mean >= 6.0)",
        },
    },
    "cap-ascp-asco-2016-gastroesophageal": {
        "high": dict.fromkeys(MEANS, "ratio >= 2.0"),
        "low": dict.fromkeys(MEANS, "ratio < 2.0"),
    },
}
SINGLE = {"0": "mean < 4.0", "below4": "mean < 4.0", "4": "4.0 <= mean < 6.0"}
SINGLE |= {"above4": "4.0 <= mean < 6.0", "below6": "4.0 <= mean < 6.0"}
SINGLE |= {"6": "mean >= 6.0", "above6": "mean >= 6.0"}

BOUNDARY_CASES = [
    (name, ratio, MEANS[mean_key], EXPECTED[name][side][mean_key])
    for name in EXPECTED
    for side, ratios in (("high", RATIOS_HIGH), ("low", RATIOS_LOW))
    for ratio in ratios.values()
    for mean_key in MEANS
] + [
    ("asco-cap-2018-breast-single", ratio, MEANS[key], SINGLE[key])
    for ratio in (None, 0.5, 3.0)
    for key in MEANS
]


@pytest.mark.parametrize(("rule_set", "ratio", "mean", "expected"), BOUNDARY_CASES)
def test_every_boundary_of_every_rule_set(rule_set, ratio, mean, expected):
    assert get_rule_set(rule_set).band_for(ratio, mean).key == expected


@pytest.mark.parametrize("rule_set", sorted(RULE_SETS))
def test_bands_cover_the_plane_exactly_once(rule_set):
    rules = RULE_SETS[rule_set]
    grid = [0.0, 1.0, below(2.0), 2.0, above(2.0), 3.0, below(4.0), 4.0, 5.0, 6.0, 9.0, 1e9]
    for ratio in grid:
        for mean in grid:
            hits = [band.key for band in rules.bands if band.contains(ratio, mean)]
            assert len(hits) == 1, (ratio, mean, hits)
    assert all(band.call in CALLS for band in rules.bands)


def test_2018_bands_agree_with_dual_probe_group():
    rules = RULE_SETS["asco-cap-2018-breast-dual"]
    rng = np.random.default_rng(7)
    ratios = [*rng.uniform(0, 4, 300), 2.0, below(2.0)]
    means = [*rng.uniform(0, 10, 300), 4.0, 6.0]
    for ratio, mean in zip(ratios, means, strict=True):
        assert rules.band_for(ratio, mean).group == dual_probe_group(ratio, mean)


@pytest.mark.parametrize(
    ("her2", "cep17", "group", "call"),
    [
        (80, 40, 1, POSITIVE),  # ratio exactly 2.0, mean exactly 4.0
        (120, 60, 1, POSITIVE),  # ratio 2.0, mean 6.0
        (120, 61, 3, WORKUP_REQUIRED),  # ratio just under 2.0, mean exactly 6.0
        (80, 41, 4, WORKUP_REQUIRED),  # ratio just under 2.0, mean exactly 4.0
        (79, 39, 2, WORKUP_REQUIRED),  # ratio above 2.0, mean just under 4.0
        (79, 40, 5, NEGATIVE),
    ],
)
def test_exact_ties_from_integer_counts(her2, cep17, group, call):
    result = classify(Counts(20, her2, cep17, n_fields=2))
    assert (result.group, result.call) == (group, call)


GROUP_COUNTS = {2: Counts(20, 70, 30, 2), 3: Counts(20, 130, 70, 2), 4: Counts(20, 100, 60, 2)}
OTHER_GROUP = Counts(20, 50, 40, 2)  # group 5
AFTER_IHC = {
    None: dict.fromkeys((2, 3, 4), WORKUP_REQUIRED),
    "0": dict.fromkeys((2, 3, 4), NEGATIVE_WITH_COMMENT),
    "1+": dict.fromkeys((2, 3, 4), NEGATIVE_WITH_COMMENT),
    "3+": dict.fromkeys((2, 3, 4), POSITIVE),
}
AFTER_CONFIRMED_RECOUNT = AFTER_IHC | {
    "2+": {2: NEGATIVE_WITH_COMMENT, 3: POSITIVE, 4: NEGATIVE_WITH_COMMENT}
}
AFTER_NO_RECOUNT = AFTER_IHC | {"2+": dict.fromkeys((2, 3, 4), WORKUP_REQUIRED)}


@pytest.mark.parametrize("group", [2, 3, 4])
@pytest.mark.parametrize("ihc", [None, "0", "1+", "2+", "3+"])
@pytest.mark.parametrize("recount", ["none", "same", "other"])
def test_every_ihc_and_recount_combination_for_groups_2_to_4(group, ihc, recount):
    counts = GROUP_COUNTS[group]
    second = {"none": None, "same": counts, "other": OTHER_GROUP}[recount]
    result = classify(counts, ihc=ihc, recount=second)
    assert result.group == group
    if recount == "other":
        assert result.call == ADJUDICATION_REQUIRED
        assert result.recount_band == "group 5"
        assert result.recount == OTHER_GROUP  # both counts are reported
        assert any("adjudicate" in step for step in result.workup)
        return
    table = AFTER_CONFIRMED_RECOUNT if recount == "same" else AFTER_NO_RECOUNT
    assert result.call == table[ihc][group]
    if ihc is None:
        assert any("concurrent IHC" in step for step in result.workup)
    elif ihc == "2+" and recount == "none":
        assert any("blinded recount of at least 20" in step for step in result.workup)
    else:
        assert result.workup == ()
    if result.call == NEGATIVE_WITH_COMMENT:
        assert result.comment


def test_recount_with_a_different_group_but_the_same_call_is_not_adjudicated():
    result = classify(GROUP_COUNTS[2], ihc="3+", recount=GROUP_COUNTS[3])
    assert result.call == POSITIVE
    assert any("same call" in reason for reason in result.reasons)


def test_recount_of_fewer_than_20_nuclei_is_not_used():
    result = classify(GROUP_COUNTS[4], ihc="2+", recount=Counts(10, 50, 30))
    assert result.call == WORKUP_REQUIRED
    assert any("not used" in reason for reason in result.reasons)


def test_ratio_of_sums_decides_not_mean_of_cell_ratios():
    pd = pytest.importorskip("pandas")
    from ishcount.score import score_case

    her2 = [4] * 10 + [4] * 10
    cep17 = [1] * 10 + [4] * 10
    assert np.mean(np.divide(her2, cep17)) >= 2.0  # 2.5
    cells = pd.DataFrame(
        {"image": ["a", "b"] * 10, "label": range(20), "n_her2": her2, "n_cep17": cep17}
        | {"is_scored": True}
    )
    result = classify(score_case(cells, rng=0, n_resamples=50))
    assert result.ratio == pytest.approx(80 / 50)
    assert result.group == 4
    assert result.call != POSITIVE


@pytest.mark.parametrize("rule_set", ["asco-cap-2018-breast-dual", "asco-cap-2013-breast-dual"])
def test_zero_cep17_is_indeterminate_for_ratio_rule_sets(rule_set):
    result = classify(Counts(20, 80, 0, 2), rule_set=rule_set)
    assert result.call == INDETERMINATE
    assert result.ratio is None
    assert result.group is None
    assert any("CEP17" in reason for reason in result.reasons)


def test_zero_cep17_gastric_and_single_probe():
    assert classify(Counts(20, 80, 0, 2), rule_set="cap-ascp-asco-2016-gastroesophageal").call == (
        INDETERMINATE
    )
    single = classify(Counts(20, 80, None, 2), rule_set="asco-cap-2018-breast-single")
    assert single.band == "4.0 <= mean < 6.0"
    assert single.call == WORKUP_REQUIRED


@pytest.mark.parametrize(
    ("ihc", "call", "step"),
    [("3+", POSITIVE, None), ("2+", WORKUP_REQUIRED, "dual-probe"), ("1+", NEGATIVE, None)],
)
def test_single_probe_work_up(ihc, call, step):
    result = classify(Counts(20, 100, None, 2), rule_set="asco-cap-2018-breast-single", ihc=ihc)
    assert result.call == call
    assert (step is None) == (result.workup == ())


def test_gastric_is_positive_by_ratio_irrespective_of_copy_number():
    gastric = "cap-ascp-asco-2016-gastroesophageal"
    assert classify(Counts(20, 50, 25, 2), rule_set=gastric).call == POSITIVE  # mean 2.5
    assert classify(Counts(20, 160, 90, 2), rule_set=gastric).call == NEGATIVE  # mean 8


def test_legacy_2013_differs_from_2018_where_expected():
    group2 = Counts(20, 70, 30, 2)
    assert classify(group2, rule_set="asco-cap-2013-breast-dual").call == POSITIVE
    assert classify(group2).call == WORKUP_REQUIRED
    equivocal = classify(Counts(20, 100, 60, 2), rule_set="asco-cap-2013-breast-dual", ihc="2+")
    assert (equivocal.band, equivocal.call) == ("equivocal", WORKUP_REQUIRED)


def test_counting_rules_insufficient_and_hand_counts_without_fields():
    few = classify(Counts(19, 40, 38, 2))
    assert few.call == INSUFFICIENT
    assert "1 more nuclei" in few.workup[0]
    one_field = classify(Counts(40, 80, 76, 1))
    assert one_field.call == INSUFFICIENT
    assert "1 more separate field" in one_field.workup[0]
    at_microscope = classify(Counts(20, 40, 38))
    assert at_microscope.call == NEGATIVE
    assert any("not checked" in reason for reason in at_microscope.reasons)


@pytest.mark.parametrize(
    ("her2", "cep17", "n_recommendations"),
    [(88, 40, 2), (90, 40, 0), (72, 40, 1), (40, 40, 0), (130, 100, 1)],
)
def test_near_cutoff_recommends_20_more_nuclei(her2, cep17, n_recommendations):
    # 88/40 = 2.20 and mean 4.40 (both bounds inclusive); 72/40 = 1.80 with mean 3.6 counts once
    # for the ratio and once for the mean; 130/20 = 6.5 is within 10% of 6.0.
    result = classify(Counts(20, her2, cep17, 2))
    expected = n_recommendations + (1 if (her2, cep17) == (72, 40) else 0)
    assert len(result.recommendations) == expected
    assert all("20 more nuclei" in text for text in result.recommendations)


def test_tripped_quality_flag_makes_the_result_indeterminate():
    class Summary:
        counts = Counts(40, 80, 80, 3)
        quality_flags = (
            QualityFlag("weak_signals", 0.31, 0.25, True, "31.0% of signals are weak."),
            QualityFlag("signals_outside_nuclei", 0.02, 0.10, False, "2.0% outside."),
        )
        notes = ("A note from the summary.",)

    result = classify(Summary())
    assert result.call == INDETERMINATE
    assert any("31.0%" in reason for reason in result.reasons)
    assert "A note from the summary." in result.reasons
    assert Classification.from_json(result.to_json()) == result


@pytest.mark.parametrize(
    ("counts", "ihc", "category"),
    [
        (Counts(20, 50, 40, 2), "0", "HER2-0"),
        (Counts(20, 50, 40, 2), "1+", "HER2-low"),
        (Counts(20, 50, 40, 2), "2+", "HER2-low"),  # group 5, ISH not amplified
        (Counts(20, 50, 40, 2), "3+", None),
        (Counts(20, 50, 40, 2), None, None),
        (Counts(20, 92, 40, 2), "2+", None),  # group 1, amplified
        (Counts(20, 100, 60, 2), "2+", None),  # group 4 waiting for the recount
    ],
)
def test_her2_low_annotation_never_replaces_the_call(counts, ihc, category):
    result = classify(counts, ihc=ihc)
    assert result.ihc_category == category
    assert bool(result.annotations) == (category is not None)
    if category is not None:
        assert "2023" in result.annotations[0]
    if counts.ratio < 2.0 and counts.mean_her2 < 4.0:
        assert result.call == NEGATIVE  # group 5 stays negative whatever the IHC annotation


def test_no_her2_low_annotation_for_gastric():
    gastric = classify(Counts(20, 50, 40, 2), rule_set="cap-ascp-asco-2016-gastroesophageal", ihc=1)
    assert gastric.ihc_category is None
    assert gastric.ihc == "1+"


@pytest.mark.parametrize(
    ("make", "argument", "value"),
    [
        (lambda: Counts(-1, 10, 10), "n_nuclei", "-1"),
        (lambda: Counts(20, float("nan"), 10), "total_her2", "nan"),
        (lambda: Counts(20, 10, -3), "total_cep17", "-3"),
        (lambda: Counts(0, 10, 10), "n_nuclei", "0"),
        (lambda: classify(Counts(20, 40, 40), rule_set="asco-cap-2099"), "rule_set", "2099"),
        (lambda: classify(Counts(20, 40, 40), ihc="4+"), "ihc", "4+"),
        (lambda: classify(Counts(20, 40, None)), "total_cep17", "None"),
        (lambda: get_rule_set("nope"), "rule_set", "nope"),
        (
            lambda: RULE_SETS["asco-cap-2018-breast-dual"].band_for(float("nan"), 4.0),
            "ratio",
            "nan",
        ),
        (lambda: RULE_SETS["asco-cap-2018-breast-dual"].band_for(2.0, -1.0), "mean_her2", "-1"),
    ],
)
def test_bad_input_names_argument_and_value(make, argument, value):
    with pytest.raises(ValueError, match=argument) as info:
        make()
    assert value in str(info.value)


def test_wrong_types_are_type_errors():
    with pytest.raises(TypeError, match="n_nuclei"):
        Counts(20.5, 10, 10)
    with pytest.raises(TypeError, match="summary_or_counts"):
        classify({"n_nuclei": 20})
    with pytest.raises(TypeError, match="recount"):
        classify(Counts(20, 40, 40), recount=(20, 40, 40))


def test_parse_ihc_accepts_canonical_forms_only():
    given = (0, 1, 2, 3, "0", " 1+", "2+ ")
    assert [parse_ihc(v) for v in given] == ["0", "1+", "2+", "3+", "0", "1+", "2+"]
    for bad in ("4+", "2", True, -1, 2.0):
        with pytest.raises(ValueError, match="ihc"):
            parse_ihc(bad)


def _all_kinds_of_classification():
    yield from (
        classify(GROUP_COUNTS[g], ihc=ihc, recount=rc)
        for g in (2, 3, 4)
        for ihc in (None, "0", "2+", "3+")
        for rc in (None, GROUP_COUNTS[g], OTHER_GROUP)
    )
    yield classify(Counts(20, 80, 0, 2))
    yield classify(Counts(5, 11.5, 9, None))
    yield classify(Counts(0, 0, 0, 0))
    yield classify(Counts(20, 100, None, 2), rule_set="asco-cap-2018-breast-single", ihc=0)


def test_every_classification_round_trips_through_json():
    for result in _all_kinds_of_classification():
        assert result.call in CALLS
        assert Classification.from_json(result.to_json()) == result
        assert Classification.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_from_dict_rejects_unknown_keys():
    data = classify(Counts(20, 40, 40, 2)).to_dict() | {"colour": "blue"}
    with pytest.raises(ValueError, match="colour"):
        Classification.from_dict(data)


def test_rule_sets_are_immutable_and_versioned():
    rules = RULE_SETS["asco-cap-2018-breast-dual"]
    with pytest.raises(AttributeError):
        rules.version = "x"
    with pytest.raises(TypeError):
        RULE_SETS["mine"] = rules
    assert all(r.version and r.sources for r in RULE_SETS.values())
    result = classify(Counts(20, 40, 40, 2), rule_set=rules)
    assert (result.rule_set, result.rule_set_version) == (rules.name, rules.version)
