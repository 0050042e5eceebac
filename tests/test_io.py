import hashlib
import json
import os

import dask.array as da
import imagecodecs
import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import tifffile

from ishcount import io
from ishcount.io import (
    ImageSource,
    atomic_write,
    find_images,
    match_channel_names,
    parse_channels,
    parse_spacing_um,
    read_image,
    sha256_file,
    write_json,
    write_labels,
    write_table,
)

RNG = np.random.default_rng(7)
CYX = RNG.integers(0, 4000, size=(3, 24, 32), dtype=np.uint16)
CZYX = RNG.integers(0, 4000, size=(3, 4, 24, 32), dtype=np.uint16)
NAMES = ("DAPI", "HER2", "CEP17")


def assert_channels(image, stack, mapping):
    for channel, index in mapping.items():
        np.testing.assert_array_equal(np.asarray(image.channel(channel)), stack[index])


# --------------------------------------------------------------------------- metadata flavours


def test_ome_tiff_maps_channels_by_name_and_reads_spacing(tmp_path):
    path = tmp_path / "field.ome.tif"
    meta = {
        "axes": "CYX",
        "Channel": {"Name": ["SpectrumOrange", "Hoechst", "SpectrumGreen"]},
        "PhysicalSizeX": 0.11,
        "PhysicalSizeY": 0.12,
    }
    tifffile.imwrite(path, CYX, metadata=meta)
    image = read_image(path)
    assert_channels(image, CYX, {"her2": 0, "dapi": 1, "cep17": 2})
    assert image.spacing_um == (0.12, 0.11)
    assert image.name == "field"
    assert image.metadata["channel_mapping_source"] == "metadata channel names"
    assert image.metadata["spacing_source"] == {"y": "OME metadata", "x": "OME metadata"}
    assert image.metadata["format"] == "ome-tiff"
    assert image.metadata["source"] == [str(path)]
    assert isinstance(image.dapi, np.ndarray)


def test_ome_zstack_converts_nanometres(tmp_path):
    path = tmp_path / "stack.ome.tif"
    meta = {
        "axes": "CZYX",
        "Channel": {"Name": list(NAMES)},
        "PhysicalSizeX": 65.0,
        "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 65.0,
        "PhysicalSizeYUnit": "nm",
        "PhysicalSizeZ": 0.3,
    }
    tifffile.imwrite(path, CZYX, metadata=meta)
    image = read_image(path)
    assert image.shape == (4, 24, 32)
    assert image.spacing_um == pytest.approx((0.3, 0.065, 0.065))
    assert_channels(image, CZYX, {"dapi": 0, "her2": 1, "cep17": 2})


def test_imagej_hyperstack_labels_resolution_and_z_spacing(tmp_path):
    path = tmp_path / "hyper.tif"
    zcyx = CZYX.transpose(1, 0, 2, 3)
    labels = ["CEP17 FITC", "DAPI", "HER2 Texas Red"] * 4
    tifffile.imwrite(
        path,
        zcyx[:, [2, 0, 1]],
        imagej=True,
        resolution=(1 / 0.08, 1 / 0.08),
        metadata={"axes": "ZCYX", "spacing": 0.5, "unit": "micron", "Labels": labels},
    )
    image = read_image(path)
    assert image.metadata["format"] == "imagej-tiff"
    assert image.spacing_um == pytest.approx((0.5, 0.08, 0.08))
    assert_channels(image, CZYX, {"dapi": 0, "her2": 1, "cep17": 2})


def test_imagej_without_length_unit_needs_spacing(tmp_path):
    path = tmp_path / "pixels.tif"
    tifffile.imwrite(path, CYX, imagej=True, metadata={"axes": "CYX", "Labels": list(NAMES)})
    with pytest.raises(ValueError, match="pixel size") as info:
        read_image(path)
    assert str(info.value).startswith(str(path))
    assert read_image(path, spacing_um=0.2).spacing_um == (0.2, 0.2)


# --------------------------------------------------------------------------- plain layouts


@pytest.mark.parametrize(
    ("axes", "order"),
    [("CYX", (0, 1, 2)), ("YXC", (1, 2, 0)), ("CZYX", (0, 1, 2, 3)), ("ZCYX", (1, 0, 2, 3))],
)
def test_plain_layouts_with_axes_metadata(tmp_path, axes, order):
    stack = CYX if len(axes) == 3 else CZYX
    path = tmp_path / f"plain_{axes}.tif"
    tifffile.imwrite(
        path, stack.transpose(order), photometric="minisblack", metadata={"axes": axes}
    )
    mapping = {"dapi": 2, "her2": 0, "cep17": 1}
    spacing = (0.1,) * (len(axes) - 1)
    image = read_image(path, channels=mapping, spacing_um=spacing)
    assert image.shape == stack.shape[1:]
    assert_channels(image, stack, mapping)
    assert image.metadata["channel_mapping_source"] == "argument"


def test_unnamed_channels_error_says_what_to_pass(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, CYX, photometric="minisblack", metadata={"axes": "CYX"})
    with pytest.raises(ValueError, match="--channels dapi=0,her2=1,cep17=2") as info:
        read_image(path, spacing_um=0.1)
    assert str(info.value).startswith(str(path))
    assert "channels={'dapi': 0, 'her2': 1, 'cep17': 2}" in str(info.value)
    with pytest.raises(ValueError, match="--pixel-size-um") as info:
        read_image(path, channels={"dapi": 0, "her2": 1})
    assert str(info.value).startswith(str(path))


def test_zstack_without_z_step_says_what_to_pass(tmp_path):
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, CZYX, photometric="minisblack", metadata={"axes": "CZYX"})
    channels = {"dapi": 0, "her2": 1, "cep17": 2}
    with pytest.raises(ValueError, match=r"z-step.*spacing_um=\(z_um, y_um, x_um\)"):
        read_image(path, channels=channels, spacing_um=0.1)
    assert read_image(path, channels=channels, spacing_um=(0.4, 0.1, 0.1)).spacing_um == (
        0.4,
        0.1,
        0.1,
    )


def test_unlabelled_axes_small_one_is_channels(tmp_path):
    path = tmp_path / "qq.tif"
    data = RNG.integers(0, 99, size=(3, 5, 8, 9), dtype=np.uint8)
    tifffile.imwrite(path, data.transpose(1, 0, 2, 3), photometric="minisblack")
    image = read_image(path, channels={"dapi": 0, "her2": 1}, spacing_um=(1, 0.1, 0.1))
    assert image.shape == (5, 8, 9)
    np.testing.assert_array_equal(image.her2, data[1])


def test_ambiguous_axes_need_axes_argument(tmp_path):
    path = tmp_path / "amb.tif"
    data = RNG.integers(0, 99, size=(3, 3, 8, 9), dtype=np.uint8)  # (Z, C, Y, X)
    tifffile.imwrite(path, data, photometric="minisblack")
    channels = {"dapi": 0, "her2": 1, "cep17": 2}
    with pytest.raises(ValueError, match="pass axes=") as info:
        read_image(path, channels=channels, spacing_um=(1, 0.1, 0.1))
    assert str(info.value).startswith(str(path))
    image = read_image(path, channels=channels, spacing_um=(1, 0.1, 0.1), axes="ZCYX")
    np.testing.assert_array_equal(image.cep17, data[:, 2])
    with pytest.raises(ValueError, match=r"axes='ZYX' must name each"):
        read_image(path, channels=channels, spacing_um=(1, 0.1, 0.1), axes="ZYX")


def test_channel_index_beyond_file_is_reported(tmp_path):
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, CYX[:2], photometric="minisblack", metadata={"axes": "CYX"})
    with pytest.raises(ValueError, match="index 2, but the file has 2 channel") as info:
        read_image(path, channels={"dapi": 0, "her2": 1, "cep17": 2}, spacing_um=0.1)
    assert str(info.value).startswith(str(path))


def test_single_channel_file_is_not_a_field(tmp_path):
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, CYX[0])
    with pytest.raises(ValueError, match="single channel"):
        read_image(path, spacing_um=0.1)


# --------------------------------------------------------------------------- RGB composites


def test_rgb_tiff_uses_colour_convention(tmp_path):
    path = tmp_path / "rgb.tif"
    rgb = (CYX[:, :, :] >> 4).astype(np.uint8).transpose(1, 2, 0)  # (Y, X, 3)
    tifffile.imwrite(path, rgb, photometric="rgb")
    image = read_image(path, spacing_um=0.2)
    np.testing.assert_array_equal(image.her2, rgb[..., 0])
    np.testing.assert_array_equal(image.cep17, rgb[..., 1])
    np.testing.assert_array_equal(image.dapi, rgb[..., 2])
    assert image.metadata["format"] == "rgb-tiff"
    assert image.metadata["channel_mapping_source"].startswith("RGB convention")
    with pytest.raises(ValueError, match="pixel size"):
        read_image(path)


def test_png_16bit_rgba(tmp_path):
    path = tmp_path / "export.png"
    rgba = np.concatenate([CYX, np.full((1, 24, 32), 65535, np.uint16)]).transpose(1, 2, 0)
    path.write_bytes(imagecodecs.png_encode(np.ascontiguousarray(rgba)))
    image = read_image(path, spacing_um=(0.1, 0.1))
    assert image.dapi.dtype == np.uint16
    assert_channels(image, CYX, {"her2": 0, "cep17": 1, "dapi": 2})
    assert image.metadata["format"] == "png"


def test_jpeg_within_tolerance(tmp_path):
    path = tmp_path / "export.jpg"
    yy, xx = np.mgrid[0:48, 0:64]
    rgb = np.stack([xx * 3, yy * 4, 255 - xx * 2], axis=-1).astype(np.uint8)
    iio.imwrite(path, rgb, quality=95)
    image = read_image(path, spacing_um=0.1)
    for channel, index in io.RGB_CHANNELS.items():
        error = np.abs(image.channel(channel).astype(int) - rgb[..., index].astype(int))
        assert error.mean() < 2.0, channel
        assert error.max() <= 12, channel


@pytest.mark.parametrize(("quality", "subsampling"), [(95, "444"), (85, "420"), (60, "422")])
def test_jpeg_files_say_how_they_were_compressed(tmp_path, quality, subsampling):
    rgb = np.ascontiguousarray((CYX >> 4).astype(np.uint8).transpose(1, 2, 0))
    path = tmp_path / "export.jpg"
    path.write_bytes(imagecodecs.jpeg8_encode(rgb, level=quality, subsampling=subsampling))
    lossy = read_image(path, spacing_um=0.1).metadata["lossy"]
    assert lossy.startswith(f"JPEG, quality about {quality}")
    assert ("chroma subsampled 4:2" in lossy) == (subsampling != "444")


def test_lossless_files_are_not_called_lossy_and_jpeg_tiff_is(tmp_path):
    rgb = np.ascontiguousarray((CYX >> 4).astype(np.uint8).transpose(1, 2, 0))
    (tmp_path / "export.png").write_bytes(imagecodecs.png_encode(rgb))
    tifffile.imwrite(tmp_path / "zlib.tif", rgb, photometric="rgb", compression="zlib")
    tifffile.imwrite(tmp_path / "jpeg.tif", rgb, photometric="rgb", compression="jpeg")
    lossy = {
        name: read_image(tmp_path / name, spacing_um=0.1).metadata["lossy"]
        for name in ("export.png", "zlib.tif", "jpeg.tif")
    }
    assert lossy == {"export.png": "", "zlib.tif": "", "jpeg.tif": "TIFF with JPEG compression"}


# --------------------------------------------------------------------------- per-channel groups


def write_group(folder, stem="f1", channels=("DAPI", "HER2", "CEP17"), shape=(24, 32)):
    for index, suffix in enumerate(channels):
        tifffile.imwrite(folder / f"{stem}_{suffix}.tif", CYX[index, : shape[0], : shape[1]])


def test_find_images_groups_channels_and_ignores_outputs(tmp_path):
    write_group(tmp_path, "f2")
    write_group(tmp_path, "F1", channels=("dapi", "Her2", "cep17"))
    tifffile.imwrite(tmp_path / "a.ome.tif", CYX, metadata={"axes": "CYX"})
    for ignored in [".hidden.tif", "a.truth_spots.tif", "a.labels.ome.tif", "notes.csv"]:
        (tmp_path / ignored).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    tifffile.imwrite(tmp_path / "sub" / "x.tif", CYX, photometric="minisblack")
    sources = find_images(tmp_path)
    assert [s.name for s in sources] == ["a", "F1", "f2"]
    assert sources[0].path == tmp_path / "a.ome.tif"
    assert [ch for ch, _ in sources[1].channel_paths] == ["dapi", "her2", "cep17"]
    image = read_image(sources[2], spacing_um=0.1)
    assert image.name == "f2"
    assert_channels(image, CYX, {"dapi": 0, "her2": 1, "cep17": 2})
    assert image.metadata["channel_mapping_source"] == "file names"
    assert len(image.metadata["source"]) == 3


def test_custom_glob_patterns(tmp_path):
    for index, channel in enumerate(["blue", "red", "green"]):
        tifffile.imwrite(tmp_path / f"{channel}-field9.tiff", CYX[index])
    patterns = {"dapi": "blue-*.tiff", "her2": "red-*.tiff", "cep17": "green-*.tiff"}
    (source,) = find_images(tmp_path, channel_patterns=patterns)
    assert source.name == "field9"
    assert_channels(read_image(source, spacing_um=0.1), CYX, {"dapi": 0, "her2": 1, "cep17": 2})
    with pytest.raises(ValueError, match="exactly one"):
        find_images(tmp_path, channel_patterns={"dapi": "*_*"})
    with pytest.raises(ValueError, match="channel_patterns"):
        find_images(tmp_path, channel_patterns={"red": "_R"})


def test_group_missing_channel_file_is_reported(tmp_path):
    write_group(tmp_path, "good")
    write_group(tmp_path, "bad", channels=("DAPI", "HER2"))
    sources = {s.name: s for s in find_images(tmp_path)}
    assert sources["bad"].missing_channels == ("cep17",)
    with pytest.raises(ValueError, match="no cep17 channel file") as info:
        read_image(sources["bad"], spacing_um=0.1)
    assert str(info.value).startswith(str(tmp_path / "bad"))
    only_dapi = ImageSource("x", channel_paths=(("dapi", tmp_path / "good_DAPI.tif"),))
    with pytest.raises(ValueError, match="no her2 channel file"):
        read_image(only_dapi, spacing_um=0.1)


def test_single_probe_group_and_duplicate_channel(tmp_path):
    write_group(tmp_path, "sp", channels=("DAPI", "HER2"))
    (source,) = find_images(tmp_path)
    image = read_image(source, spacing_um=0.1)
    assert image.channel_names == ("dapi", "her2")
    tifffile.imwrite(tmp_path / "sp_dapi.tiff", CYX[0])
    with pytest.raises(ValueError, match="already has a dapi file"):
        find_images(tmp_path)


def test_group_shape_mismatch_names_the_file(tmp_path):
    write_group(tmp_path, "m", channels=("DAPI", "HER2"))
    tifffile.imwrite(tmp_path / "m_CEP17.tif", CYX[2, :20])
    (source,) = find_images(tmp_path)
    with pytest.raises(ValueError, match="differs from") as info:
        read_image(source, spacing_um=0.1)
    assert str(info.value).startswith(str(tmp_path / "m_CEP17.tif"))


def test_group_of_tinted_rgb_files_takes_the_colour(tmp_path):
    for index, (suffix, colour) in enumerate([("DAPI", 2), ("HER2", 0), ("CEP17", 1)]):
        rgb = np.zeros((24, 32, 3), np.uint8)
        rgb[..., colour] = CYX[index] >> 4
        iio.imwrite(tmp_path / f"t_{suffix}.png", rgb)
    (source,) = find_images(tmp_path)
    image = read_image(source, spacing_um=0.1)
    np.testing.assert_array_equal(image.cep17, CYX[2] >> 4)


# --------------------------------------------------------------------------- lazy reading


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_lazy_read_matches_eager(tmp_path, compression):
    path = tmp_path / "big.ome.tif"
    meta = {"axes": "ZCYX", "Channel": {"Name": list(NAMES)}, "PhysicalSizeX": 0.1}
    meta["PhysicalSizeZ"] = 0.5
    tile = (16, 16) if compression else None
    tifffile.imwrite(
        path, CZYX.transpose(1, 0, 2, 3), metadata=meta, compression=compression, tile=tile
    )
    eager = read_image(path, lazy=False)
    lazy = read_image(path, lazy=True)
    assert isinstance(lazy.her2, da.Array)
    assert lazy.metadata["lazy"] is True
    assert lazy.spacing_um == eager.spacing_um == (0.5, 0.1, 0.1)
    for channel in ("dapi", "her2", "cep17"):
        np.testing.assert_array_equal(lazy.channel(channel).compute(), eager.channel(channel))


def test_lazy_by_size_threshold(tmp_path, monkeypatch):
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, CYX, imagej=True, metadata={"axes": "CYX", "Labels": list(NAMES)})
    monkeypatch.setattr(io, "LAZY_THRESHOLD_BYTES", 100)
    image = read_image(path, spacing_um=0.1)
    assert isinstance(image.dapi, da.Array)
    np.testing.assert_array_equal(image.cep17.compute(), CYX[2])


# --------------------------------------------------------------------------- broken inputs


def test_corrupt_and_empty_files_name_the_file(tmp_path):
    cases = {
        "garbage.tif": b"II*\x00" + b"\x13" * 200,
        "text.tif": b"not a tiff at all",
        "empty.tif": b"",
        "bad.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        "bad.jpg": b"\xff\xd8\xff" + b"\x00" * 40,
    }
    for filename, content in cases.items():
        path = tmp_path / filename
        path.write_bytes(content)
        with pytest.raises(ValueError, match=r"empty|corrupt|cannot decode") as info:
            read_image(path, channels={"dapi": 0, "her2": 1}, spacing_um=0.1)
        assert str(info.value).startswith(str(path)), info.value
    with pytest.raises(ValueError, match="empty"):
        read_image(tmp_path / "empty.tif")
    with pytest.raises(ValueError, match="no such file"):
        read_image(tmp_path / "missing.tif")
    (tmp_path / "x.bmp").write_bytes(b"BM")
    with pytest.raises(ValueError, match=r"unsupported file type '\.bmp'"):
        read_image(tmp_path / "x.bmp")


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_truncated_tiff_is_detected(tmp_path, compression):
    whole = tmp_path / "whole.tif"
    tifffile.imwrite(
        whole, CZYX, photometric="minisblack", metadata={"axes": "CZYX"}, compression=compression
    )
    data = whole.read_bytes()
    for keep in (len(data) - 100, len(data) // 2):
        path = tmp_path / f"cut{keep}.tif"
        path.write_bytes(data[:keep])
        for lazy in (False, True):
            with pytest.raises(ValueError, match=r"truncated|damaged|corrupt") as info:
                read_image(path, channels={"dapi": 0, "her2": 1}, spacing_um=(1, 1, 1), lazy=lazy)
            assert str(info.value).startswith(str(path))


def test_truncated_png_and_jpeg_are_detected(tmp_path):
    data = imagecodecs.png_encode(np.ascontiguousarray(CYX.transpose(1, 2, 0)))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot decode") as info:
        read_image(path, spacing_um=0.1)
    assert str(info.value).startswith(str(path))
    iio.imwrite(tmp_path / "whole.jpg", RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = (tmp_path / "whole.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])  # libjpeg alone would fill the rest with grey
    with pytest.raises(ValueError, match="truncated JPEG") as info:
        read_image(path, spacing_um=0.1)
    assert str(info.value).startswith(str(path))


def test_nan_only_channel_is_rejected(tmp_path):
    path = tmp_path / "nan.ome.tif"
    data = CYX.astype(np.float32)
    data[1] = np.nan
    meta = {"axes": "CYX", "Channel": {"Name": list(NAMES)}, "PhysicalSizeX": 0.1}
    tifffile.imwrite(path, data, metadata=meta)
    with pytest.raises(ValueError, match="'her2' \\(index 1\\) holds only NaN") as info:
        read_image(path)
    assert str(info.value).startswith(str(path))


def test_bad_arguments_raise_type_and_value_errors(tmp_path):
    path = tmp_path / "f.ome.tif"
    tifffile.imwrite(path, CYX, metadata={"axes": "CYX", "Channel": {"Name": list(NAMES)}})
    with pytest.raises(TypeError, match="source"):
        read_image(3)
    with pytest.raises(ValueError, match="spacing_um"):
        read_image(path, spacing_um=(0.1, -1))
    with pytest.raises(ValueError, match="spacing_um"):
        read_image(path, spacing_um=(1, 0.1, 0.1, 0.1))
    with pytest.raises(TypeError, match="default_spacing_um"):
        read_image(path, default_spacing_um="fine")
    assert read_image(path, spacing_um=(1, 0.2, 0.1)).spacing_um == (0.2, 0.1)  # z dropped
    with pytest.raises(ValueError, match="'red'"):
        read_image(path, channels={"dapi": 0, "red": 1}, spacing_um=0.1)
    with pytest.raises(ValueError, match="twice"):
        read_image(path, channels={"dapi": 0, "her2": 0}, spacing_um=0.1)
    with pytest.raises(TypeError, match="lazy"):
        read_image(path, spacing_um=0.1, lazy="yes")


def test_reading_never_touches_inputs(tmp_path):
    tifffile.imwrite(
        tmp_path / "a.ome.tif", CYX, metadata={"axes": "CYX", "Channel": {"Name": NAMES}}
    )
    tifffile.imwrite(tmp_path / "b.tif", CYX.transpose(1, 2, 0).astype(np.uint8), photometric="rgb")
    iio.imwrite(tmp_path / "c.jpg", CYX.transpose(1, 2, 0).astype(np.uint8))
    write_group(tmp_path, "d")
    before = {p.name: (p.stat().st_mtime_ns, sha256_file(p)) for p in tmp_path.iterdir()}
    for source in find_images(tmp_path):
        for lazy in (False, True):
            image = read_image(source, spacing_um=0.1, lazy=lazy)
            np.asarray(image.dapi)
    after = {p.name: (p.stat().st_mtime_ns, sha256_file(p)) for p in tmp_path.iterdir()}
    assert after == before


# --------------------------------------------------------------------------- small parsers


def test_parse_channels():
    assert parse_channels("dapi=0,her2=1,cep17=2") == {"dapi": 0, "her2": 1, "cep17": 2}
    assert parse_channels(" HER2 = 1 , DAPI=0 ") == {"her2": 1, "dapi": 0}
    for bad, message in [
        ("dapi=0,her2", "cannot read 'her2'"),
        ("dapi=0,her2=x", "cannot read"),
        ("dapi=0,her2=-1", "cannot read"),
        ("dapi=0,dapi=1,her2=2", "twice"),
        ("dapi=0,her2=0", "twice"),
        ("dapi=0,fitc=1", "include 'dapi' and 'her2'"),
        ("", "cannot read"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_channels(bad)
    with pytest.raises(TypeError, match="channels"):
        parse_channels({"dapi": 0})


def test_parse_spacing_um():
    assert parse_spacing_um("0.1") == 0.1
    assert parse_spacing_um("0.1,0.2") == (0.1, 0.2)
    for bad in ["", "a", "0", "-1", "1,2,3,4", "nan"]:
        with pytest.raises(ValueError, match="pixel size"):
            parse_spacing_um(bad)


def test_match_channel_names_aliases_and_ambiguity():
    assert match_channel_names(["ERBB2", "CEN17", "blue"]) == {"her2": 0, "cep17": 1, "dapi": 2}
    assert match_channel_names(["Cy3", "Alexa Fluor 488", "DAPI"]) == {
        "her2": 0,
        "cep17": 1,
        "dapi": 2,
    }
    assert match_channel_names(["DAPI+FITC", "HER2"]) == {"her2": 1}  # first name ambiguous
    assert match_channel_names(["DAPI", "DAPI", "HER2"]) == {"her2": 2}  # dapi claimed twice


def test_pathvysion_dye_names_map_to_their_probes():
    # Abbott PathVysion: LSI HER-2/neu SpectrumOrange, CEP 17 SpectrumAqua
    assert match_channel_names(["SpectrumAqua", "DAPI", "SpectrumOrange"]) == {
        "cep17": 0,
        "dapi": 1,
        "her2": 2,
    }


def test_unrecognised_metadata_names_ask_for_mapping(tmp_path):
    path = tmp_path / "odd.ome.tif"
    meta = {"axes": "CYX", "Channel": {"Name": ["DAPI", "HER2", "Cy5"]}, "PhysicalSizeX": 0.1}
    tifffile.imwrite(path, CYX, metadata=meta)
    with pytest.raises(ValueError, match=r"channel names found: \['DAPI', 'HER2', 'Cy5'\]"):
        read_image(path)
    assert read_image(path, channels={"dapi": 0, "her2": 1}).cep17 is None


# --------------------------------------------------------------------------- writers


def test_atomic_write_failure_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "cells.csv"
    target.write_text("old")

    def failing(tmp):
        tmp.write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["cells.csv"]
    atomic_write(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["cells.csv"]
    with pytest.raises(ValueError, match="does not exist"):
        atomic_write(tmp_path / "nope" / "x.csv", lambda tmp: None)


def test_atomic_write_gives_normal_permissions(tmp_path):
    target = atomic_write(tmp_path / "x.txt", lambda tmp: tmp.write_text("x"))
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_table_round_trips_floats_exactly(tmp_path):
    table = pd.DataFrame(
        {
            "label": np.arange(50),
            "value": RNG.normal(size=50) * 10.0 ** RNG.integers(-8, 8, size=50),
            "name": ["a,b", 'q"uote'] * 25,
        }
    )
    table.loc[3, "value"] = np.nan
    path = write_table(table, tmp_path / "t.csv")
    back = pd.read_csv(path)
    pd.testing.assert_frame_equal(back, table)
    with pytest.raises(TypeError, match="DataFrame"):
        write_table({"a": [1]}, tmp_path / "u.csv")


def test_write_json_converts_numpy_and_nan(tmp_path):
    obj = {"n": np.int64(3), "r": np.float32(0.5), "a": np.arange(3), "p": tmp_path, "x": np.inf}
    path = write_json(obj, tmp_path / "r.json")
    assert json.loads(path.read_text()) == {
        "n": 3,
        "r": 0.5,
        "a": [0, 1, 2],
        "p": str(tmp_path),
        "x": None,
    }
    with pytest.raises(TypeError, match="set"):
        write_json({"s": {1, 2}}, tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()


def test_write_labels_round_trip(tmp_path):
    labels = RNG.integers(0, 70000, size=(3, 16, 16))
    path = write_labels(labels, tmp_path / "f.labels.ome.tif", spacing_um=(0.5, 0.1, 0.1))
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        back = tif.asarray()
    assert back.dtype == np.uint32
    np.testing.assert_array_equal(back, labels)
    with pytest.raises(TypeError, match="integer"):
        write_labels(np.zeros((4, 4)), tmp_path / "x.tif")
    with pytest.raises(ValueError, match="range -1"):
        write_labels(np.full((4, 4), -1), tmp_path / "x.tif")
    with pytest.raises(ValueError, match="spacing_um"):
        write_labels(np.zeros((4, 4), int), tmp_path / "x.tif", spacing_um=(1, 0))
    assert not (tmp_path / "x.tif").exists()


def test_sha256_file(tmp_path):
    path = tmp_path / "b.bin"
    content = RNG.bytes(3 * 2**20 + 5)
    path.write_bytes(content)
    assert sha256_file(path) == hashlib.sha256(content).hexdigest()
    with pytest.raises(ValueError, match="no such file"):
        sha256_file(tmp_path / "none")


def test_unlabelled_pages_ask_for_axes(tmp_path):
    path = tmp_path / "pages.tif"
    yxc = CYX.transpose(1, 2, 0)
    tifffile.imwrite(path, yxc, photometric="minisblack")  # stored as 24 pages of (32, 3)
    with pytest.raises(ValueError, match="do not say which axis holds the channels") as info:
        read_image(path, spacing_um=0.1)
    assert str(info.value).startswith(str(path))
    image = read_image(path, spacing_um=0.1, axes="YXC", channels={"dapi": 1, "her2": 0})
    np.testing.assert_array_equal(image.dapi, CYX[1])


def test_planar_rgb_tiff_is_a_channel_stack_not_a_composite(tmp_path):
    # tifffile stores a (3, Y, X) stack as planar RGB by default; microscope RGB exports are
    # interleaved. A planar stack is not assumed to follow the colour convention.
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, CYX, photometric="rgb", planarconfig="separate")
    with pytest.raises(ValueError, match="--channels dapi=0,her2=1,cep17=2"):
        read_image(path, spacing_um=0.1)
    image = read_image(path, spacing_um=0.1, channels={"dapi": 0, "her2": 1, "cep17": 2})
    assert_channels(image, CYX, {"dapi": 0, "her2": 1, "cep17": 2})


def test_defaults_apply_only_where_metadata_is_silent(tmp_path):
    named = tmp_path / "named.ome.tif"
    meta = {"axes": "CZYX", "Channel": {"Name": ["HER2", "DAPI", "CEP17"]}, "PhysicalSizeX": 0.1}
    tifffile.imwrite(named, CZYX, metadata=meta)
    defaults = {"default_channels": {"dapi": 0, "her2": 1}, "default_spacing_um": (0.7, 0.3, 0.3)}
    image = read_image(named, **defaults)
    assert image.metadata["channel_mapping"] == {"her2": 0, "dapi": 1, "cep17": 2}
    assert image.spacing_um == (0.7, 0.1, 0.1)
    assert image.metadata["spacing_source"] == {
        "z": "default",
        "y": "OME metadata",
        "x": "OME metadata",
    }
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, CZYX, photometric="minisblack", metadata={"axes": "CZYX"})
    image = read_image(plain, spacing_um=(0.5, 0.2, 0.2), **defaults)
    assert image.metadata["channel_mapping_source"] == "default"
    assert image.spacing_um == (0.5, 0.2, 0.2)
    assert image.cep17 is None
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, CYX.transpose(1, 2, 0).astype(np.uint8), photometric="rgb")
    image = read_image(rgb, **defaults)
    assert image.metadata["channel_mapping"] == io.RGB_CHANNELS  # colour convention wins
    assert image.spacing_um == (0.3, 0.3)
    with pytest.raises(ValueError, match="index 3, but the file has 3"):
        read_image(plain, default_channels={"dapi": 0, "her2": 3}, spacing_um=(1, 1, 1))
