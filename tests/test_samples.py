"""The bundled sample cases: the README's main job classifies each one as its ground truth says."""

import json
from pathlib import Path

import pytest

from ishcount.pipeline import run_batch

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"
CASES = sorted(p.name for p in SAMPLES.iterdir() if (p / "truth.json").is_file())


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    results = run_batch([SAMPLES], tmp_path_factory.mktemp("demo") / "results", workers=2)
    return {outcome.name: outcome for outcome in results}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_demo_matches_the_ground_truth(outcomes, case):
    truth = json.loads((SAMPLES / case / "truth.json").read_text())["truth"]
    outcome = outcomes[case]
    result = outcome.record["classification"]
    assert not outcome.failed_fields
    assert result["group"] == truth["group"]
    # a fifth either way: these cases hold only 20-30 scored nuclei each
    assert result["mean_her2"] == pytest.approx(truth["mean_her2"], rel=0.2)
    assert result["ratio"] == pytest.approx(truth["ratio"], rel=0.2)
