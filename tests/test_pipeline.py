"""Batch runs: outputs, failures, resume, refusal of unsafe output folders, a real Dask cluster."""

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path

import imagecodecs
import numpy as np
import pandas as pd
import pytest
import tifffile

from ishcount.cli import main
from ishcount.config import parse_pipeline
from ishcount.pipeline import RunOptions, discover_cases, read_ihc_table, run_batch
from ishcount.synthetic import make_case, write_case
from ishcount.tables import CELL_SCHEMA

SHAPE = (384, 384)
SPACING = (0.16, 0.16)  # coarse pixels: many nuclei in a small, fast field


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("batch")
    for preset, seed in (("group1", 11), ("group5", 12)):
        case = make_case(preset, n_fields=2, shape=SHAPE, spacing_um=SPACING, rng=seed)
        write_case(case, root / "in" / preset)
    return root / "in"


def digest_tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_run_writes_every_output_and_leaves_inputs_alone(batch, tmp_path):
    before = digest_tree(batch)
    outcomes = run_batch([batch], tmp_path / "out", options=RunOptions(seed=1), workers=1)
    assert digest_tree(batch) == before
    assert [o.name for o in outcomes] == ["group1", "group5"]
    for outcome in outcomes:
        case_dir = tmp_path / "out" / outcome.name
        cells = pd.read_csv(case_dir / "cells.csv")
        assert list(cells.columns[: len(CELL_SCHEMA)]) == list(CELL_SCHEMA)
        assert set(cells["image"]) == {
            s.name for s in discover_cases([batch / outcome.name])[0].sources
        }
        spots = pd.read_csv(case_dir / "spots.csv")
        assert {"label", "channel", "copies", "image"} <= set(spots.columns)
        # the case tables hold every field's rows, in field order, exactly as written there
        for name, table in (("cells.csv", cells), ("spots.csv", spots)):
            fields = sorted((case_dir / "fields").glob(f"*/{name}"))
            pooled = pd.concat([pd.read_csv(f) for f in fields], ignore_index=True)
            pd.testing.assert_frame_equal(table, pooled)
        # the per-nucleus counts are the sums of the signal table
        inside = spots[spots["label"] > 0]
        her2 = inside[inside["channel"] == "her2"].groupby(["image", "label"])["copies"].sum()
        merged = cells.set_index(["image", "label"])["n_her2"]
        assert (her2.reindex(merged.index).fillna(0).astype(int) == merged).all()
        record = json.loads((case_dir / "case.json").read_text())
        assert record["classification"]["call"]
        hashes = {f["path"]: f["sha256"] for field in record["fields"] for f in field["files"]}
        for path, sha in hashes.items():
            assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha
        assert record["provenance"]["pipeline"]["rule_set"] == "asco-cap-2018-breast-dual"
        assert "numpy" in record["provenance"]["dependencies"]
        for field in record["fields"]:
            assert (case_dir / "labels" / f"{field['name']}.tif").is_file()
            outlines = json.loads((case_dir / "labels" / f"{field['name']}.geojson").read_text())
            nuclei = [f for f in outlines["features"] if f["geometry"]["type"] == "Polygon"]
            assert len(nuclei) == int((cells["image"] == field["name"]).sum())
            stored = json.loads((case_dir / "fields" / field["name"] / "field.json").read_text())
            keys = {"dapi>her2", "dapi>cep17", "her2>cep17", "cep17>her2"}
            assert set(stored["crosstalk"]) == keys
            assert all(0 <= k < 0.5 for k in stored["crosstalk"].values())
            for channel in ("her2", "cep17"):  # what detection measured, for quality control
                found = stored["detection"][channel]
                assert found["reference_source"] == "isolated"
                assert found["spot_sigma_source"] == "default"
                assert 0.1 < found["measured_spot_sigma_um"] < 0.2
        page = (case_dir / "report.html").read_text()
        assert "qualified pathologist" in page
        assert page.count("data:image/png;base64,") >= 2
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert summary["case"].tolist() == ["group1", "group5"]
    assert summary["group"].tolist() == [1, 5]


def test_corrupt_file_fails_alone_and_rerun_resumes(batch, tmp_path):
    broken = tmp_path / "in" / "group5"
    broken.mkdir(parents=True)
    for path in (batch / "group5").iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "group5_zz_corrupt.ome.tif").write_bytes(b"II*\x00 this is not a TIFF")
    out = tmp_path / "out"
    assert main(["run", str(broken), "--out", str(out), "--workers", "1"]) == 1
    record = json.loads((out / "group5" / "case.json").read_text())
    failed = record["failed_fields"]
    assert [f["name"] for f in failed] == ["group5_zz_corrupt"]
    assert "group5_zz_corrupt.ome.tif" in failed[0]["error"]
    assert record["summary"]["counts"]["n_nuclei"] > 0, "the good fields still give a result"
    first_cells = (out / "group5" / "cells.csv").read_text()

    # simulate an interrupted run: one field's completion record is missing
    good = sorted((out / "group5" / "fields").iterdir())[0]
    (good / "field.json").unlink()
    seen = []
    run_batch([broken], out, workers=1, on_field=seen.append)
    status = {r.name: r.status for r in seen}
    assert status[good.name] == "done"
    assert status["group5_zz_corrupt"] == "failed"
    assert [s for n, s in status.items() if n not in (good.name, "group5_zz_corrupt")] == [
        "resumed"
    ]
    assert (out / "group5" / "cells.csv").read_text() == first_cells


def test_ihc_table_gives_each_case_its_score_without_recomputing(batch, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["run", str(batch), "--out", str(out), "--workers", "1", "--ihc", "1+"]
    assert main(args) == 0
    table = tmp_path / "ihc.csv"
    table.write_text("Case;IHC;block\ngroup5;2+;B1\nelsewhere;3+;C4\n")  # a lab's master list
    seen = []
    with pytest.warns(UserWarning, match="not in this run: elsewhere"):
        run_batch(
            [batch],
            out,
            workers=1,
            options=RunOptions(ihc="1+", ihc_by_case=read_ihc_table(table)),
            on_field=seen.append,
        )
    assert {r.status for r in seen} == {"resumed"}, "an IHC score changes no field's analysis"
    records = {c: json.loads((out / c / "case.json").read_text()) for c in ("group1", "group5")}
    assert records["group5"]["ihc"] == "2+", "listed in the table"
    assert records["group1"]["ihc"] == "1+", "not listed: --ihc"
    assert records["group5"]["provenance"]["options"]["ihc"] == "2+"
    summary = pd.read_csv(out / "summary.csv", dtype={"ihc": str})
    assert summary.set_index("case")["ihc"].to_dict() == {"group1": "1+", "group5": "2+"}


def test_dry_run_lists_cases_fields_masks_and_ihc_without_analysing(batch, tmp_path, capsys):
    folder = tmp_path / "in"
    for case in ("group1", "group5"):
        (folder / case).mkdir(parents=True)
        for path in (batch / case).iterdir():
            (folder / case / path.name).write_bytes(path.read_bytes())
    first = sorted(p.name for p in (folder / "group5").glob("*.ome.tif"))[0]
    field = first.removesuffix(".ome.tif")
    (folder / "group5" / f"{field}.roi.png").write_bytes(b"")
    table = tmp_path / "ihc.csv"
    table.write_text("case,ihc\ngroup5,2+\n")
    args = [
        "run",
        str(folder),
        "--out",
        str(tmp_path / "out"),
        "--dry-run",
        "--ihc-table",
        str(table),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "group1: 2 field(s), IHC not given"
    assert "group5: 2 field(s), IHC 2+" in printed
    assert f"  {field}: {first}; roi: {field}.roi.png" in printed
    assert printed[-1] == "2 case(s), 4 field(s); nothing was analysed (--dry-run)."
    assert not (tmp_path / "out").exists()
    inside = ["run", str(folder), "--out", str(folder / "group1" / "out"), "--dry-run"]
    assert main(inside) == 2, "an output folder inside an input is refused before a run too"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("case,score\ngroup5,2+\n", "needs a header with 'case' and 'ihc'"),
        ("case,ihc\ngroup1,2+\ngroup5,4+\n", "line 3: IHC score '4\\+' of case 'group5'"),
        ("case,ihc\ngroup5,2+\ngroup5,3+\n", "line 3: case 'group5' has two IHC scores"),
    ],
)
def test_a_wrong_ihc_table_is_refused_with_its_line(batch, tmp_path, capsys, text, message):
    table = tmp_path / "ihc.csv"
    table.write_text(text)
    args = ["run", str(batch), "--out", str(tmp_path / "out"), "--ihc-table", str(table)]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "ihc.csv" in error
    assert re.search(message, error)
    assert not (tmp_path / "out").exists(), "nothing is run on a wrong table"


def test_a_resumed_field_gets_the_qupath_file_an_older_run_left_out(batch, tmp_path):
    out = tmp_path / "out"
    run_batch([batch / "group5"], out, workers=1)
    written = sorted((out / "group5" / "labels").glob("*.geojson"))
    assert len(written) == 2
    first = written[0].read_text()
    written[0].unlink()  # as a run of an ishcount without the QuPath output left it
    seen = []
    run_batch([batch / "group5"], out, workers=1, on_field=seen.append)
    assert {r.status for r in seen} == {"resumed"}
    assert json.loads(written[0].read_text()) == json.loads(first)


def test_changed_parameters_are_recomputed(batch, tmp_path):
    out = tmp_path / "out"
    run_batch([batch / "group5"], out, workers=1)
    seen = []
    run_batch([batch / "group5"], out, workers=1, on_field=seen.append)
    assert {r.status for r in seen} == {"resumed"}
    seen.clear()
    run_batch(
        [batch / "group5"],
        out,
        workers=1,
        options=RunOptions(spacing_um=0.17),
        on_field=seen.append,
    )
    assert {r.status for r in seen} == {"done"}


def test_a_pixel_size_stated_far_too_small_is_noticed(batch, tmp_path):
    """0.16 um fields read as 0.065 um pixels: the signals come out narrower than light
    allows, and the case says to check the pixel size; at the right size it does not."""

    def pixel_notes(spacing_um):
        options = RunOptions(spacing_um=spacing_um)
        outcome = run_batch([batch / "group1"], tmp_path / str(spacing_um), options=options)[0]
        return [n for n in outcome.record["summary"]["notes"] if "pixel size" in n]

    assert pixel_notes(None) == []
    assert any(note.startswith("Signals measure 0.0") for note in pixel_notes(0.065))


def test_fields_read_from_jpeg_files_are_noted(tmp_path):
    case = make_case("group1", n_fields=2, shape=SHAPE, spacing_um=SPACING, rng=11)
    folder = tmp_path / "jpeg_case"
    folder.mkdir()
    for index, field in enumerate(case.fields):
        channels = [field.image.channel(c) for c in ("her2", "cep17", "dapi")]
        rgb = np.stack([(c >> 4).astype(np.uint8) for c in channels], axis=-1)
        encoded = imagecodecs.jpeg8_encode(rgb, level=80, subsampling="420")
        (folder / f"field{index}.jpg").write_bytes(encoded)
    options = RunOptions(spacing_um=SPACING)
    outcome = run_batch([folder], tmp_path / "out", options=options, workers=1)[0]
    (note,) = [n for n in outcome.record["summary"]["notes"] if "lossy" in n]
    assert note.startswith("2 fields were read from lossy files (field0: JPEG, quality about 8")
    assert "chroma subsampled 4:2:0" in note
    assert {image["lossy"][:4] for image in outcome.record["images"]} == {"JPEG"}


def _with_fibres(image, peak):
    """``image`` with three straight autofluorescent fibres in both probe channels."""
    from scipy import ndimage as ndi

    lines = np.zeros(image.shape[-2:])
    lines[40:470, 100:102] = lines[300:302, 20:490] = 1
    lines[np.arange(50, 450), np.arange(50, 450)] = 1
    light = ndi.gaussian_filter(lines, 1.5)
    light *= peak / light.max()
    her2, cep17 = (
        np.asarray(image.channel(c), float) + k * light for c, k in (("her2", 0.8), ("cep17", 1))
    )
    return dataclasses.replace(image, her2=her2.astype(np.uint16), cep17=cep17.astype(np.uint16))


def test_a_field_with_autofluorescent_fibres_is_named(tmp_path):
    from ishcount.synthetic import PRESETS

    case = make_case("group2", n_fields=2, shape=(512, 512), rng=4)
    first = case.fields[0]
    fibres = _with_fibres(first.image, PRESETS["group2"].spot_amplitude)
    case = dataclasses.replace(
        case, fields=(dataclasses.replace(first, image=fibres), *case.fields[1:])
    )
    write_case(case, tmp_path / "in" / "fibres")
    outcome = run_batch([tmp_path / "in" / "fibres"], tmp_path / "out", workers=1)[0]
    ridges = {image["name"]: image["ridge_maxima"] for image in outcome.record["images"]}
    assert ridges[first.image.name] >= 50 > ridges[case.fields[1].image.name]
    (note,) = [n for n in outcome.record["summary"]["notes"] if "fibres" in n]
    assert note.startswith(f"1 field shows autofluorescent fibres ({first.image.name}, ")


def test_a_field_with_over_exposed_dapi_is_named(tmp_path):
    case = make_case("group2", n_fields=2, shape=(512, 512), rng=4)
    first = case.fields[0]
    dapi = np.asarray(first.image.dapi, float)
    level = np.percentile(dapi[first.nuclei > 0], 50)  # a 12-bit camera clips half the nuclei
    bright = np.minimum(dapi * 4095 / level, 4095).astype(np.uint16)
    over = dataclasses.replace(first, image=dataclasses.replace(first.image, dapi=bright))
    case = dataclasses.replace(case, fields=(over, *case.fields[1:]))
    write_case(case, tmp_path / "in" / "bright")
    outcome = run_batch([tmp_path / "in" / "bright"], tmp_path / "out", workers=1)[0]
    shares = {image["name"]: image["dapi_clipped"] for image in outcome.record["images"]}
    assert shares[first.image.name] == pytest.approx(0.5, abs=0.1)
    assert shares[case.fields[1].image.name] == 0.0
    (note,) = [n for n in outcome.record["summary"]["notes"] if "over-exposed" in n]
    assert note.startswith(f"1 field has over-exposed DAPI ({first.image.name}, ")


def test_images_over_the_tile_size_run_in_tiles_with_labels_on_disk(batch, tmp_path):
    tiled_config = parse_pipeline({"name": "tiled", "image": {"tile_size": 256}})
    whole = run_batch([batch / "group5"], tmp_path / "whole", workers=1)[0]
    tiled = run_batch([batch / "group5"], tmp_path / "tiled", config=tiled_config, workers=1)[0]
    case_dir = tmp_path / "tiled" / "group5"
    assert not list(case_dir.rglob("*.tmp.npy"))  # the memory-mapped scratch labels are gone
    for field in tiled.record["fields"]:
        labels = tifffile.imread(case_dir / "labels" / f"{field['name']}.tif")
        cells = pd.read_csv(case_dir / "fields" / field["name"] / "cells.csv")
        assert sorted(np.unique(labels[labels > 0])) == sorted(cells["label"])
    scored = [o.record["summary"]["counts"]["n_nuclei"] for o in (whole, tiled)]
    assert scored[1] == pytest.approx(scored[0], abs=3)


def test_output_inside_input_is_refused(batch):
    assert main(["run", str(batch), "--out", str(batch / "group1" / "results")]) == 2


def test_unknown_input_and_bad_workers_are_usage_errors(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["run", str(tmp_path), "--out", str(tmp_path / "o"), "--workers", "0"]) == 2


@pytest.mark.slow
def test_local_cluster_gives_the_local_results(batch, tmp_path):
    from dask.distributed import LocalCluster

    local = run_batch([batch], tmp_path / "local", workers=1)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        remote = run_batch([batch], tmp_path / "remote", scheduler=cluster.scheduler_address)
    for a, b in zip(local, remote, strict=True):
        cells_a = pd.read_csv(tmp_path / "local" / a.name / "cells.csv")
        cells_b = pd.read_csv(tmp_path / "remote" / b.name / "cells.csv")
        pd.testing.assert_frame_equal(cells_a, cells_b)
        assert a.record["classification"] == b.record["classification"]
    assert np.isfinite([o.record["classification"]["ratio"] for o in remote]).all()


def _blas_threads(queue=None):
    from threadpoolctl import threadpool_info

    counts = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
    if queue is None:
        return counts
    queue.put(counts)


def test_local_runs_use_one_blas_thread_in_every_process(monkeypatch):
    # A field is one task; extra BLAS threads only spin (16 % more CPU than wall time per
    # field) and take time from the other worker. Forked workers inherit the limit.
    import multiprocessing

    from ishcount.pipeline import _one_blas_thread

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    with _one_blas_thread():
        assert set(_blas_threads()) == {1}
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_blas_threads, args=(queue,))
        child.start()
        assert set(queue.get(timeout=60)) == {1}
        child.join()
        assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    assert "OPENBLAS_NUM_THREADS" not in os.environ


def test_synth_command_writes_a_case_that_run_reads(tmp_path, capsys):
    assert (
        main(
            [
                "synth",
                "--preset",
                "group5",
                "--out",
                str(tmp_path / "case"),
                "--size",
                "256",
                "--fields",
                "2",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    assert "group 5" in capsys.readouterr().out
    assert len(discover_cases([tmp_path / "case"])[0].sources) == 2
    assert (
        main(["run", str(tmp_path / "case"), "--out", str(tmp_path / "out"), "--workers", "1"]) == 0
    )
    assert (tmp_path / "out" / "case" / "report.html").is_file()
