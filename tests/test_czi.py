"""Zeiss CZI files: channels and pixel size from their metadata, one field per file."""

import dataclasses
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile

from ishcount.analyze import analyze_image
from ishcount.io import ImageSource, find_images, read_image
from ishcount.pipeline import run_batch
from ishcount.synthetic import make_field

pyczi = pytest.importorskip("pylibCZIrw.czi")

RNG = np.random.default_rng(11)
CZYX = RNG.integers(0, 4000, size=(3, 2, 24, 32), dtype=np.uint16)


def write_czi(path, stack, names, scale_um=(0.3, 0.1, 0.1), scenes=1, compression=None):
    """Write ``stack`` (C, Z, Y, X) as a CZI file with channel names and scaling (metres);
    with ``scenes`` > 1 (or a list of stacks) each scene holds its stack, side by side."""
    stacks = stack if isinstance(stack, list) else [stack] * scenes
    path.parent.mkdir(parents=True, exist_ok=True)
    with pyczi.create_czi(str(path), exist_ok=True, compression_options=compression) as document:
        for scene, one in enumerate(stacks):
            for c, planes in enumerate(one):
                for z, plane in enumerate(planes):
                    document.write(
                        data=plane[..., None],
                        plane={"C": c, "Z": z, "T": 0},
                        scene=scene,
                        location=(scene * (plane.shape[1] + 8), 0),
                    )
        document.write_metadata(
            document_name=path.stem,
            channel_names=dict(enumerate(names)),
            scale_x=scale_um[2] * 1e-6,
            scale_y=scale_um[1] * 1e-6,
            scale_z=scale_um[0] * 1e-6,
        )
    return path


def test_czi_zstack_maps_channels_by_name_and_reads_spacing(tmp_path):
    # ZEN's short names for Vysis SpectrumOrange and SpectrumGreen, in no particular order
    path = write_czi(tmp_path / "field 1.czi", CZYX, ["SpGr", "DAPI", "SpOr"])
    image = read_image(path)
    assert image.name == "field 1"
    assert image.shape == (2, 24, 32)
    np.testing.assert_array_equal(image.cep17, CZYX[0])
    np.testing.assert_array_equal(image.dapi, CZYX[1])
    np.testing.assert_array_equal(image.her2, CZYX[2])
    assert image.spacing_um == pytest.approx((0.3, 0.1, 0.1))
    assert image.metadata["format"] == "czi"
    assert image.metadata["channel_mapping_source"] == "metadata channel names"
    assert image.metadata["spacing_source"] == dict.fromkeys("zyx", "CZI metadata")


def test_zstd_compressed_czi_reads_exactly_and_is_not_lossy(tmp_path):
    # ZEN's lossless Zstandard, with the high/low byte split it applies to 16-bit data
    zstd = "zstd1:ExplicitLevel=2;PreProcess=HiLoByteUnpack"
    path = write_czi(tmp_path / "f.czi", CZYX, NAMES_3, compression=zstd)
    image = read_image(path)
    for index, channel in enumerate(("dapi", "her2", "cep17")):
        np.testing.assert_array_equal(image.channel(channel), CZYX[index])
    assert image.metadata["lossy"] == ""


def test_mosaic_czi_reads_as_one_stitched_field(tmp_path):
    # a tiled acquisition: each plane stored as two tiles side by side (sub-blocks with an M index)
    path = tmp_path / "mosaic.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as document:
        for c, plane in enumerate(CZYX[:, 0]):
            for x0 in (0, 16):
                tile = plane[:, x0 : x0 + 16, None]
                document.write(data=tile, plane={"C": c, "Z": 0, "T": 0}, location=(x0, 0))
        document.write_metadata(channel_names=dict(enumerate(NAMES_3)), scale_x=1e-7, scale_y=1e-7)
    image = read_image(path)
    np.testing.assert_array_equal(image.her2, CZYX[1, 0])
    np.testing.assert_array_equal(image.cep17, CZYX[2, 0])


def test_single_plane_czi_is_a_2d_field(tmp_path):
    path = write_czi(tmp_path / "f.czi", CZYX[:, :1], ["DAPI", "HER2", "CEP17"])
    image = read_image(path)
    assert image.shape == (24, 32)
    assert image.spacing_um == pytest.approx((0.1, 0.1))
    np.testing.assert_array_equal(image.her2, CZYX[1, 0])


def test_colour_czi_follows_the_rgb_convention(tmp_path):
    blue, green, red = (RNG.integers(0, 255, (24, 32), dtype=np.uint8) for _ in range(3))
    path = tmp_path / "composite.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as document:
        # CZI stores colour pixels as BGR (pixel type Bgr24)
        document.write(data=np.dstack([blue, green, red]), plane={"C": 0, "Z": 0, "T": 0})
        document.write_metadata(document_name="composite", scale_x=1e-7, scale_y=1e-7)
    image = read_image(path)
    np.testing.assert_array_equal(image.dapi, blue)
    np.testing.assert_array_equal(image.her2, red)
    np.testing.assert_array_equal(image.cep17, green)
    assert image.metadata["channel_mapping_source"].startswith("RGB convention")


def test_czi_field_gives_the_counts_of_the_same_field_as_ome_tiff(tmp_path):
    field = make_field("group2", shape=(384, 384), rng=3)
    stack = np.stack([field.image.channel(c) for c in ("dapi", "her2", "cep17")])[:, None]
    czi = write_czi(tmp_path / "case" / "f1.czi", stack, ["DAPI", "HER2", "CEP17"], (1, 0.1, 0.1))
    ome = tmp_path / "f1.ome.tif"
    meta = {"axes": "CYX", "Channel": {"Name": ["DAPI", "HER2", "CEP17"]}}
    tifffile.imwrite(ome, stack[:, 0], metadata=meta | {"PhysicalSizeX": 0.1, "PhysicalSizeY": 0.1})
    assert [source.path for source in find_images(tmp_path / "case")] == [czi]
    from_czi = analyze_image(read_image(czi)).cells
    from_ome = analyze_image(read_image(ome)).cells
    assert len(from_czi) > 5
    columns = ["label", "n_her2", "n_cep17", "is_scored"]
    assert from_czi[columns].equals(from_ome[columns])


def test_each_scene_of_a_czi_file_is_a_field(tmp_path):
    # a ZEN experiment over two positions: one file, a scene per position
    second = (CZYX[:, :1] // 2 + 7).astype(np.uint16)
    path = write_czi(tmp_path / "positions.czi", [CZYX[:, :1], second], NAMES_3)
    (tmp_path / "positions_s02.roi.tif").write_bytes(b"")  # a mask names its scene's field
    sources = find_images(tmp_path)
    assert [(s.name, s.scene) for s in sources] == [("positions_s01", 0), ("positions_s02", 1)]
    assert sources[1].mask("roi").name == "positions_s02.roi.tif"
    first, other = (read_image(source) for source in sources)
    np.testing.assert_array_equal(first.her2, CZYX[1, 0])
    np.testing.assert_array_equal(other.her2, second[1, 0])
    assert other.name == "positions_s02"
    assert other.metadata["scene"] == 1
    with pytest.raises(ValueError, match=r"positions\.czi: the CZI file holds 2 scenes"):
        read_image(path)
    with pytest.raises(ValueError, match=r"positions\.czi: no scene 2 \(the file holds 2"):
        read_image(ImageSource("x", path=path, scene=2))
    tiff = tmp_path / "plain.tif"
    tifffile.imwrite(tiff, CZYX[:, 0], photometric="minisblack")
    with pytest.raises(ValueError, match=r"plain\.tif: scene=0 given, but only CZI"):
        read_image(ImageSource("plain", path=tiff, scene=0))


def test_a_run_over_a_multi_scene_czi_file_analyses_each_scene(tmp_path):
    fields = [make_field("group2", shape=(320, 320), rng=seed) for seed in (4, 5)]
    stacks = [
        np.stack([f.image.channel(c) for c in ("dapi", "her2", "cep17")])[:, None] for f in fields
    ]
    path = write_czi(tmp_path / "in" / "S-24-0017.czi", stacks, NAMES_3, (1, 0.1, 0.1))
    [outcome] = run_batch([path], tmp_path / "out", workers=1)
    assert outcome.name == "S-24-0017"
    images = {entry["name"]: entry for entry in outcome.record["images"]}
    assert {name: entry["scene"] for name, entry in images.items()} == {
        "S-24-0017_s01": 0,
        "S-24-0017_s02": 1,
    }
    cells = pd.read_csv(tmp_path / "out" / "S-24-0017" / "cells.csv")
    direct = analyze_image(dataclasses.replace(fields[1].image, name="S-24-0017_s02")).cells
    mine = cells[cells["image"] == "S-24-0017_s02"].reset_index(drop=True)
    columns = ["label", "n_her2", "n_cep17", "is_scored"]
    assert mine[columns].equals(direct[columns].astype(mine[columns].dtypes))


def test_corrupt_czi_fails_with_its_name(tmp_path):
    path = write_czi(tmp_path / "broken.czi", CZYX, NAMES_3)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"broken\.czi: cannot read as a Zeiss CZI file"):
        read_image(path)
    garbage = tmp_path / "garbage.czi"
    garbage.write_bytes(b"not a czi file at all" * 20)
    with pytest.raises(ValueError, match=r"garbage\.czi: cannot read as a Zeiss CZI file"):
        read_image(garbage)


def test_czi_without_the_reader_package_says_what_to_install(tmp_path, monkeypatch):
    path = write_czi(tmp_path / "f.czi", CZYX, NAMES_3)
    monkeypatch.setitem(sys.modules, "pylibCZIrw", None)  # as if not installed
    with pytest.raises(
        ValueError, match=r"f\.czi: reading Zeiss CZI files needs .*ishcount\[czi\]"
    ):
        read_image(path)


NAMES_3 = ["DAPI", "HER2", "CEP17"]
