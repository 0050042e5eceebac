"""Pipeline files: every shipped file loads; errors name the key and the file."""

import pickle

import pytest

from ishcount.analyze import AnalysisParams
from ishcount.config import available_pipelines, load_pipeline, parse_pipeline
from ishcount.rules import RULE_SETS

SHIPPED = [
    "breast-dual-probe",
    "breast-dual-probe-zstack",
    "breast-single-probe",
    "gastric-dual-probe",
]


def test_shipped_pipelines_load_and_name_known_rule_sets():
    assert available_pipelines() == SHIPPED
    for name in SHIPPED:
        config = load_pipeline(name)
        assert config.name == name
        assert config.rule_set in RULE_SETS
        assert isinstance(config.analysis, AnalysisParams)
    assert load_pipeline("gastric-dual-probe").rule_set == "cap-ascp-asco-2016-gastroesophageal"
    assert not load_pipeline("breast-single-probe").analysis.count.require_both_signals


def test_default_and_path(tmp_path):
    assert load_pipeline().name == "breast-dual-probe"
    path = tmp_path / "lab.yaml"
    path.write_text("name: lab\nspots:\n  her2: {threshold_snr: 6}\nimage:\n  pixel_size_um: 0.1\n")
    config = load_pipeline(path)
    assert config.analysis.her2["threshold_snr"] == 6.0
    assert config.pixel_size_um == (0.1, 0.1)
    assert config.source == str(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nsegmnt: {}\n", "unknown key 'segmnt'"),
        ("name: x\nsegment: {min_area: 3}\n", "unknown key 'segment.min_area'"),
        ("name: x\nsegment: {spacing_um: 3}\n", "unknown key 'segment.spacing_um'"),
        ("name: x\nspots: {her2: {saturated: 1}}\n", "unknown key 'spots.her2.saturated'"),
        ("name: x\nspots: {cep17: {companion: 1}}\n", "unknown key 'spots.cep17.companion'"),
        ("name: x\nspots: {her2: {floor: 1}}\n", "unknown key 'spots.her2.floor'"),
        (
            "name: x\nspots: {her2: {threshold_snr: high}}\n",
            "spots.her2.threshold_snr: expected float",
        ),
        (
            "name: x\ncount: {require_both_signals: 1}\n",
            "count.require_both_signals: expected bool",
        ),
        ("name: x\nrule_set: asco-2099\n", "rule_set: unknown rule set 'asco-2099'"),
        ("name: x\nimage: {channels: {dapi: 0}}\n", "image.channels: must give at least dapi"),
        ("name: x\nimage: {channels: {dapi: -1, her2: 1}}\n", "image.channels.dapi"),
        ("name: x\nimage: {pixel_size_um: [0.1, 0]}\n", "image.pixel_size_um"),
        ("- a list\n", "top level: expected a mapping"),
        ("name: [unclosed\n", "cannot read pipeline file"),
    ],
)
def test_errors_name_the_key_and_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        load_pipeline(path)
    assert str(path) in str(info.value)


def test_unknown_pipeline_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="breast-dual-probe"):
        load_pipeline("no-such-pipeline")


def test_config_is_frozen_and_picklable():
    config = load_pipeline()
    with pytest.raises(TypeError, match="read-only"):
        config.analysis.her2["threshold_snr"] = 1.0  # type: ignore[index]
    clone = pickle.loads(pickle.dumps(config))
    assert clone == config
    assert clone.analysis.digest() == config.analysis.digest()


def test_digest_changes_with_any_parameter():
    base = parse_pipeline({"name": "x"}).analysis
    changed = parse_pipeline({"name": "x", "count": {"min_solidity": 0.8}}).analysis
    assert base.digest() != changed.digest()
    assert AnalysisParams.from_dict(changed.to_dict()) == changed


@pytest.mark.parametrize("switch", ["remove_crosstalk", "remove_debris", "register_channels"])
def test_spot_switches_reach_the_analysis(switch):
    default = parse_pipeline({"name": "x"}).analysis
    off = parse_pipeline({"name": "x", "spots": {switch: False}}).analysis
    assert getattr(default, switch)
    assert not getattr(off, switch)
    assert default.digest() != off.digest()
    assert AnalysisParams.from_dict(off.to_dict()) == off
    with pytest.raises(ValueError, match=rf"spots\.{switch}"):
        parse_pipeline({"name": "x", "spots": {switch: "no"}})
