"""The ishcount command: classify hand counts, list rule sets, exit codes."""

import json

import pytest

from ishcount import RESEARCH_USE_NOTICE
from ishcount.cli import main
from ishcount.rules import Classification


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_classify_example_from_the_issue(capsys):
    code, out, _ = run(capsys, "classify", "--her2", "92", "--cep17", "40", "--nuclei", "20",
                       "--ihc", "2+")  # fmt: skip
    assert code == 0
    assert "Call:       positive (group 1)" in out
    assert "ratio 2.30" in out
    assert "mean HER2 4.60" in out
    assert "fields was not given" in out
    assert RESEARCH_USE_NOTICE in out


def test_classify_group_4_shows_comment_and_work_up(capsys):
    code, out, _ = run(capsys, "classify", "--her2", "100", "--cep17", "60", "--nuclei", "20",
                       "--fields", "2", "--ihc", "2+")  # fmt: skip
    assert code == 0
    assert "work-up required (group 4)" in out
    assert "Comment:" in out
    assert "blinded recount" in out


def test_json_output_loads_as_a_classification(capsys):
    code, out, _ = run(capsys, "classify", "--her2", "100", "--cep17", "60", "--nuclei", "20",
                       "--fields", "2", "--ihc", "2+", "--recount-her2", "98", "--recount-cep17",
                       "60", "--recount-nuclei", "20", "--json")  # fmt: skip
    payload = json.loads(out)
    assert code == 0
    assert payload["notice"] == RESEARCH_USE_NOTICE
    result = Classification.from_dict(payload["classification"])
    assert (result.group, result.call, result.recount_band) == (
        4,
        "negative with comment",
        "group 4",
    )
    assert result.ihc_category == "HER2-low"


def test_single_probe_needs_no_cep17(capsys):
    code, out, _ = run(capsys, "classify", "--her2", "130", "--nuclei", "20", "--fields", "2",
                       "--rule-set", "asco-cap-2018-breast-single")  # fmt: skip
    assert code == 0
    assert "Call:       positive (mean >= 6.0)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--her2", "92", "--cep17", "40", "--nuclei", "20", "--ihc", "4+"], "'4+'"),
        (["--her2", "-2", "--cep17", "40", "--nuclei", "20"], "total_her2"),
        (["--her2", "92", "--cep17", "nan", "--nuclei", "20"], "total_cep17"),
        (["--her2", "92", "--nuclei", "20"], "total_cep17"),
        (["--her2", "92", "--cep17", "40", "--nuclei", "20", "--rule-set", "x"], "rule_set"),
        (["--her2", "92", "--cep17", "40", "--nuclei", "20", "--recount-her2", "9"], "recount"),
    ],
)
def test_bad_values_exit_2_and_name_the_argument(capsys, argv, message):
    code, out, err = run(capsys, "classify", *argv)
    assert code == 2
    assert out == ""
    assert message in err


def test_usage_errors_and_help(capsys):
    assert run(capsys, "classify", "--her2", "9")[0] == 2  # missing --nuclei: argparse
    assert run(capsys, "frobnicate")[0] == 2
    code, out, _ = run(capsys, "classify", "--help")
    assert code == 0
    assert "exit codes" in out


def test_rules_lists_every_rule_set_with_its_version(capsys):
    code, out, _ = run(capsys, "rules")
    lines = out.strip().splitlines()
    assert code == 0
    assert len(lines) == 4
    assert lines[0].startswith("asco-cap-2018-breast-dual (version 2018.1)")
    assert "[default]" in lines[0]
