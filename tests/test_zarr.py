"""OME-Zarr folders: the full-resolution level, channel labels and pixel size (NGFF 0.4, 0.5)."""

import numpy as np
import pytest
import tifffile

from ishcount.analyze import analyze_image
from ishcount.io import find_images, read_image, sha256_file
from ishcount.pipeline import run_batch
from ishcount.synthetic import make_field

zarr = pytest.importorskip("zarr")

RNG = np.random.default_rng(5)
CZYX = RNG.integers(0, 4000, size=(3, 2, 24, 32), dtype=np.uint16)


def write_ome_zarr(path, stack, labels, scale, *, version="0.4", unit="micrometer"):
    """``stack`` with axes c(z)yx as an OME-Zarr image: level 0 and a 2x smaller level 1."""
    names = "czyx" if stack.ndim == 4 else "cyx"
    axes = [
        {
            "name": n,
            "type": "channel" if n == "c" else "space",
            **({} if n == "c" else {"unit": unit}),
        }
        for n in names
    ]
    half = stack[..., ::2, ::2]
    datasets = [
        {"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": factor}]}
        for level, factor in (
            (0, [1.0, *scale]),
            (1, [1.0, *scale[:-2], 2 * scale[-2], 2 * scale[-1]]),
        )
    ]
    metadata = {
        "multiscales": [{"version": version, "axes": axes, "datasets": datasets}],
        "omero": {"channels": [{"label": label} for label in labels]},
    }
    group = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    group.attrs.update(metadata if version == "0.4" else {"ome": {"version": version, **metadata}})
    for level, data in enumerate((stack, half)):
        group.create_array(str(level), shape=data.shape, dtype=data.dtype, chunks=data.shape)[
            ...
        ] = data
    return path


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_maps_channels_by_label_and_reads_the_full_resolution(tmp_path, version):
    path = write_ome_zarr(
        tmp_path / "field 2.ome.zarr",
        CZYX,
        ["SpGr", "DAPI", "SpOr"],
        [0.3, 0.1, 0.1],
        version=version,
    )
    image = read_image(path)
    assert image.name == "field 2"
    assert image.shape == (2, 24, 32), "level 0, not the smaller level"
    np.testing.assert_array_equal(image.cep17, CZYX[0])
    np.testing.assert_array_equal(image.dapi, CZYX[1])
    np.testing.assert_array_equal(image.her2, CZYX[2])
    assert image.spacing_um == pytest.approx((0.3, 0.1, 0.1))
    assert image.metadata["format"] == "ome-zarr"
    assert image.metadata["spacing_source"] == dict.fromkeys("zyx", "OME-Zarr metadata")
    lazy = read_image(path, lazy=True)
    np.testing.assert_array_equal(np.asarray(lazy.her2), CZYX[2])


def test_ome_zarr_units_are_converted(tmp_path):
    path = write_ome_zarr(
        tmp_path / "f.zarr", CZYX[:, 0], ["DAPI", "HER2", "CEP17"], [65, 65], unit="nanometer"
    )
    image = read_image(path)
    assert image.shape == (24, 32)
    assert image.spacing_um == pytest.approx((0.065, 0.065))


def test_an_ome_zarr_field_is_found_run_and_fingerprinted_like_a_file(tmp_path):
    field = make_field("group2", shape=(320, 320), rng=12)
    stack = np.stack([field.image.channel(c) for c in ("dapi", "her2", "cep17")])
    case = tmp_path / "case"
    path = write_ome_zarr(case / "f1.ome.zarr", stack, ["DAPI", "HER2", "CEP17"], [0.1, 0.1])
    assert [source.name for source in find_images(case)] == ["f1"]
    [outcome] = run_batch([case], tmp_path / "out", workers=1)
    direct = analyze_image(read_image(path)).cells
    ome = tmp_path / "f1.ome.tif"
    meta = {"axes": "CYX", "Channel": {"Name": ["DAPI", "HER2", "CEP17"]}, "PhysicalSizeX": 0.1}
    tifffile.imwrite(ome, stack, metadata=meta | {"PhysicalSizeY": 0.1})
    columns = ["label", "n_her2", "n_cep17", "is_scored"]
    assert direct[columns].equals(analyze_image(read_image(ome)).cells[columns])
    assert outcome.record["summary"]["counts"]["n_nuclei"] == int(direct["is_scored"].sum())
    before = sha256_file(path)
    seen = []
    run_batch([path], tmp_path / "out2", workers=1)  # the folder given alone is a case
    group = zarr.open_group(str(path), mode="r+")
    group["0"][0, 0, 0] = group["0"][0, 0, 0] + 1
    assert sha256_file(path) != before, "a changed chunk changes the fingerprint"
    run_batch([path], tmp_path / "out2", workers=1, on_field=seen.append)
    assert [record.status for record in seen] == ["done"], "and the field is analysed again"


def test_bioformats2raw_layout_reads_its_one_series(tmp_path):
    root = tmp_path / "converted.ome.zarr"
    group = zarr.open_group(str(root), mode="w", zarr_format=2)
    group.attrs["bioformats2raw.layout"] = 3
    write_ome_zarr(root / "0", CZYX[:, 0], ["DAPI", "HER2", "CEP17"], [0.1, 0.1])
    np.testing.assert_array_equal(read_image(root).her2, CZYX[1, 0])
    write_ome_zarr(root / "1", CZYX[:, 0], ["DAPI", "HER2", "CEP17"], [0.1, 0.1])
    with pytest.raises(ValueError, match=r"converted\.ome\.zarr: .*2 series"):
        read_image(root)


def test_a_folder_that_is_not_an_ome_zarr_image_fails_by_name(tmp_path):
    plain = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    plain.create_array("0", shape=(3, 8, 8), dtype="uint16")
    with pytest.raises(ValueError, match=r"plain\.zarr: cannot read as OME-Zarr: no OME-Zarr"):
        read_image(tmp_path / "plain.zarr")
    with pytest.raises(ValueError, match=r"gone\.zarr: no such Zarr folder"):
        read_image(tmp_path / "gone.zarr")


def test_napari_opens_an_ome_zarr_folder(tmp_path):
    from ishcount._napari._io import napari_get_reader, read_image_layers

    path = write_ome_zarr(
        tmp_path / "f.ome.zarr", CZYX[:, 0], ["DAPI", "HER2", "CEP17"], [0.1, 0.1]
    )
    assert napari_get_reader(str(path)) is read_image_layers
    layers = {kwargs["name"]: data for data, kwargs, _ in read_image_layers(str(path))}
    np.testing.assert_array_equal(layers["CEP17"], CZYX[2, 0])
    assert napari_get_reader(str(tmp_path)) is None, "a plain folder is no image"
