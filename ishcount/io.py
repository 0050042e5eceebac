"""Reading FISH images into :class:`~ishcount.image.FishImage` and writing results atomically.

Readers
-------
:func:`read_image` reads one field of view from

* OME-TIFF and ImageJ hyperstacks, taking channel names and pixel size from their metadata;
* plain multi-channel TIFF (``CYX``, ``YXC``, ``CZYX``, ``ZCYX`` ...);
* one file per channel (``field_DAPI.tif``, ``field_HER2.tif``, ``field_CEP17.tif``),
  grouped by :func:`find_images`;
* RGB composites exported by microscope software (PNG, JPEG, RGB TIFF), read with
  the convention blue = DAPI, red/orange = HER2, green = CEP17;
* Zeiss CZI files (ZEN), with channel names and pixel size from their metadata, through the
  optional ``pylibCZIrw`` package (``pip install 'ishcount[czi]'``);
* OME-Zarr folders (NGFF 0.4 and 0.5, as bioformats2raw and ome-zarr write them): the full
  resolution level, channel labels and pixel size, through the optional ``zarr`` package
  (``pip install 'ishcount[zarr]'``).

Channel mapping and pixel size come from the file's metadata where present, else from the
caller (pipeline file or command line). When neither says, the error says exactly what to
pass. Large TIFF files are read lazily as Dask arrays, one TIFF page per chunk.

Every error about a file is a :class:`ValueError` whose message starts with the file path.
Input files are opened read-only and nothing is ever written next to them by the readers.

Writers
-------
:func:`atomic_write` writes through a temporary file in the destination folder, flushes it to
disk and renames it over the destination, so a reader never sees a half-written file and a
failed write leaves the previous file untouched. :func:`write_table`, :func:`write_json` and
:func:`write_labels` build on it; :func:`sha256_file` fingerprints inputs for provenance.

Examples
--------
>>> import numpy as np, tifffile, tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> data = np.zeros((3, 8, 8), np.uint16)
>>> meta = {"axes": "CYX", "Channel": {"Name": ["DAPI", "HER2", "CEP17"]},
...         "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.1}
>>> tifffile.imwrite(folder / "field.ome.tif", data, metadata=meta)
>>> image = read_image(folder / "field.ome.tif")
>>> image.name, image.shape, image.spacing_um, image.channel_names
('field', (8, 8), (0.1, 0.1), ('dapi', 'her2', 'cep17'))
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pickle
import re
import secrets
import threading
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile
from numpy.lib import format as npy_format

from ishcount.image import CHANNELS, FishImage

__all__ = [
    "CELLPOSE_SEG_SUFFIX",
    "CHANNEL_ALIASES",
    "DEFAULT_CHANNEL_PATTERNS",
    "IMAGE_SUFFIXES",
    "LAZY_THRESHOLD_BYTES",
    "MASK_NAME_PARTS",
    "MASK_SUFFIXES",
    "RGB_CHANNELS",
    "ImageSource",
    "atomic_write",
    "field_masks",
    "find_images",
    "is_image_file",
    "match_channel_names",
    "parse_channels",
    "parse_spacing_um",
    "read_image",
    "read_mask",
    "sha256_file",
    "write_json",
    "write_labels",
    "write_table",
]

#: File name endings :func:`find_images` and :func:`read_image` accept (case-insensitive).
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".ome.tiff",
    ".ome.tif",
    ".tiff",
    ".tif",
    ".png",
    ".jpeg",
    ".jpg",
    ".czi",
    ".ome.zarr",
    ".zarr",
)
#: Image "files" that are folders (a Zarr store).
_FOLDER_SUFFIXES = (".zarr",)
_TIFF_SUFFIXES = (".tif", ".tiff")
_RASTER_CODECS = {".png": "png", ".jpg": "jpeg8", ".jpeg": "jpeg8"}

#: Names (lower case, letters and digits only) that identify each channel in file metadata.
#: A metadata name matches a channel when it contains one of its aliases, for example
#: ``"SpectrumOrange"`` or ``"HER2 (Texas Red)"`` -> ``her2``.
CHANNEL_ALIASES: dict[str, tuple[str, ...]] = {
    "dapi": ("dapi", "hoechst", "blue"),
    "her2": (
        "her2",
        "erbb2",
        "orange",
        "spor",  # SpectrumOrange as Zeiss ZEN abbreviates it
        "red",
        "texasred",
        "cy3",
        "tritc",
        "alexa555",
        "alexa568",
        "alexa594",
        "af568",
        "af594",
    ),
    "cep17": (
        "cep17",
        "cen17",
        "chr17",
        "green",
        "spgr",  # SpectrumGreen
        "aqua",  # SpectrumAqua: CEP 17 in Abbott's PathVysion kit
        "fitc",
        "alexa488",
        "af488",
        "gfp",
        "fluorescein",
    ),
}

#: File-name patterns of one-file-per-channel fields: a suffix before the extension
#: (``"_DAPI"`` matches ``field1_DAPI.tif``) or a glob whose ``*`` is the field name
#: (``"*_DAPI.tif"``, ``"DAPI_*.png"``). Matching is case-insensitive.
DEFAULT_CHANNEL_PATTERNS: dict[str, str] = {"dapi": "_DAPI", "her2": "_HER2", "cep17": "_CEP17"}

#: Sample index of each channel in an RGB composite (red = HER2, green = CEP17, blue = DAPI).
RGB_CHANNELS: dict[str, int] = {"dapi": 2, "her2": 0, "cep17": 1}

#: TIFF files larger than this are read lazily when ``lazy=None``.
LAZY_THRESHOLD_BYTES: int = 256 * 2**20

#: Name fragments of files that are never inputs: synthetic ground truth and ishcount outputs.
_IGNORED_NAME_PARTS = (".truth_", ".labels.", ".ishcount.")

#: Name fragments of the masks that go with a field, between its name and the extension:
#: nucleus labels made elsewhere (``f1.nuclei.tif``; Cellpose saves ``f1_cp_masks.png``, and
#: its GUI ``f1_seg.npy``: :data:`CELLPOSE_SEG_SUFFIX`)
#: and the region to score (``f1.roi.tif``, e.g. the invasive tumour a pathologist drew).
MASK_NAME_PARTS: dict[str, tuple[str, ...]] = {"nuclei": (".nuclei", "_cp_masks"), "roi": (".roi",)}
#: File name endings of masks: images, GeoJSON polygons (QuPath's export) and NumPy arrays.
MASK_SUFFIXES: tuple[str, ...] = (*IMAGE_SUFFIXES, ".geojson", ".npy")
#: The file Cellpose's GUI saves a field's masks in (with their outlines and flows).
CELLPOSE_SEG_SUFFIX = "_seg.npy"
_MAX_UNLABELLED_CHANNELS = 4
_UNKNOWN_AXES = "QI"
_UNIT_TO_UM = {
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "\\u00b5m": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "pm": 1e-6,
    "å": 1e-4,
    "angstrom": 1e-4,
    "mm": 1e3,
    "millimeter": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "m": 1e6,
    "meter": 1e6,
}


@dataclass(frozen=True)
class ImageSource:
    """One field of view on disk: a single file or a group of one-file-per-channel files.

    Parameters
    ----------
    name : str
        Field name (file stem without ``.ome``, or the common part of a channel group).
    path : pathlib.Path or None
        The file, for a single-file field.
    channel_paths : tuple of (str, pathlib.Path)
        ``(channel, file)`` pairs, for a one-file-per-channel field.
    missing_channels : tuple of str
        Channels other fields of the folder have but this group lacks; reading it fails.
    masks : tuple of (str, pathlib.Path)
        ``(kind, file)`` pairs of the field's masks (:data:`MASK_NAME_PARTS`): ``"nuclei"``
        (labels used instead of segmenting) and ``"roi"`` (the region to score); read
        with :func:`read_mask`.
    scene : int or None
        The scene (0-based) of a CZI file that holds several (a ZEN experiment over several
        positions): each scene is a field, named ``<file>_s01``, ``<file>_s02``, ...

    Examples
    --------
    >>> source = ImageSource("f1", channel_paths=(("dapi", Path("f1_DAPI.tif")),))
    >>> [path.name for path in source.paths]
    ['f1_DAPI.tif']
    """

    name: str
    path: Path | None = None
    channel_paths: tuple[tuple[str, Path], ...] = ()
    missing_channels: tuple[str, ...] = field(default=())
    masks: tuple[tuple[str, Path], ...] = ()
    scene: int | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (not self.channel_paths):
            raise ValueError(
                f"ImageSource {self.name!r} needs exactly one of path or channel_paths, "
                f"got path={self.path!r}, channel_paths={self.channel_paths!r}"
            )

    @property
    def paths(self) -> tuple[Path, ...]:
        """All files of this field."""
        return (self.path,) if self.path is not None else tuple(p for _, p in self.channel_paths)

    def mask(self, kind: str) -> Path | None:
        """The field's mask file of ``kind`` (``"nuclei"`` or ``"roi"``), if it has one."""
        return dict(self.masks).get(kind)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> ImageSource:
        """Return the source of a single file, named after its stem."""
        path = Path(path)
        return cls(name=_field_name(path.name), path=path)


def file_sources(path: str | os.PathLike[str]) -> list[ImageSource]:
    """The fields in one image file: the file itself, or each scene of a CZI file that
    holds several (``<file>_s01``, ``<file>_s02``, ...; an unreadable file is one field,
    which fails when it is read).

    Examples
    --------
    >>> [source.name for source in file_sources("slide 3/field_07.ome.tif")]
    ['field_07']
    """
    source = ImageSource.from_path(path)
    n_scenes = _czi_scenes(source.path) if source.path.name.lower().endswith(".czi") else 1
    if n_scenes < 2:
        return [source]
    width = max(2, len(str(n_scenes)))
    return [
        dataclasses.replace(source, name=f"{source.name}_s{k + 1:0{width}d}", scene=k)
        for k in range(n_scenes)
    ]


@dataclass
class _Raw:
    """What a reader found: channel-first planes plus metadata hints."""

    planes: list[Any]  # one (Y, X) or (Z, Y, X) array per channel
    axes: str  # axes as stored in the file
    format: str
    names: list[str] | None = None  # channel names from metadata
    spacing: dict[str, float] = field(default_factory=dict)  # 'z', 'y', 'x' in um
    spacing_source: str = ""
    is_rgb: bool = False
    lazy: bool = False
    lossy: str = ""  # how the file was compressed with loss ("" when it was not)


# --------------------------------------------------------------------------- parsing helpers


def parse_channels(text: str) -> dict[str, int]:
    """Parse a command-line channel mapping such as ``"dapi=0,her2=1,cep17=2"``.

    Parameters
    ----------
    text : str
        Comma-separated ``name=index`` pairs; names are ``dapi``, ``her2`` and ``cep17``
        (case-insensitive), indices are zero-based channel positions in the file.

    Returns
    -------
    dict of str to int
        Channel name to index; ``cep17`` may be absent (single-probe assay).

    Raises
    ------
    TypeError
        If ``text`` is not a string.
    ValueError
        If a pair is malformed, a name unknown or repeated, an index not a non-negative
        integer or used twice, or ``dapi``/``her2`` is missing.

    Examples
    --------
    >>> parse_channels("DAPI=2, her2=0, cep17=1")
    {'dapi': 2, 'her2': 0, 'cep17': 1}
    """
    if not isinstance(text, str):
        raise TypeError(f"channels must be a string like 'dapi=0,her2=1,cep17=2', got {text!r}")
    mapping: dict[str, int] = {}
    for part in text.split(","):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not key or not re.fullmatch(r"\d+", value):
            raise ValueError(
                f"channels={text!r}: cannot read {part.strip()!r}; expected name=index pairs "
                "like 'dapi=0,her2=1,cep17=2'"
            )
        if key.lower() in mapping:
            raise ValueError(f"channels={text!r}: {key!r} is given twice")
        mapping[key.lower()] = int(value)
    _check_mapping(mapping, "channels")
    return mapping


def parse_spacing_um(text: str) -> float | tuple[float, ...]:
    """Parse a command-line pixel size: ``"0.1"``, ``"0.1,0.1"`` (y, x) or ``"0.3,0.1,0.1"``.

    Parameters
    ----------
    text : str
        One lateral size, or comma-separated sizes in array order, in micrometres.

    Returns
    -------
    float or tuple of float
        A float for a single value (lateral size), else the tuple; accepted by
        ``read_image(spacing_um=...)``.

    Raises
    ------
    ValueError
        If a value is not a positive finite number or there are more than three.

    Examples
    --------
    >>> parse_spacing_um("0.3, 0.1, 0.1")
    (0.3, 0.1, 0.1)
    >>> parse_spacing_um("0.065")
    0.065
    """
    try:
        values = tuple(float(s) for s in str(text).split(","))
    except ValueError:
        values = ()
    if not 1 <= len(values) <= 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(
            f"pixel size must be 1 to 3 positive numbers in micrometres like '0.1' or "
            f"'0.3,0.1,0.1' (z,y,x), got {text!r}"
        )
    return values[0] if len(values) == 1 else values


def match_channel_names(names: Sequence[str]) -> dict[str, int]:
    """Map metadata channel names to ``dapi``/``her2``/``cep17`` by their aliases.

    Parameters
    ----------
    names : sequence of str
        Channel names in file order, e.g. from OME ``Channel/@Name`` or ImageJ labels.

    Returns
    -------
    dict of str to int
        Each channel that exactly one name identifies, mapped to that name's index. Names
        that match no channel or several channels (``"DAPI+FITC"``) are left out.

    Notes
    -----
    Names are lower-cased and stripped of everything but letters and digits, then matched
    against :data:`CHANNEL_ALIASES` by containment (``"SpectrumOrange"`` contains
    ``"orange"``); ``"Alexa Fluor 488"`` is read as ``"alexa488"``.

    Examples
    --------
    >>> match_channel_names(["Hoechst 33342", "SpectrumOrange", "Spectrum Green"])
    {'dapi': 0, 'her2': 1, 'cep17': 2}
    >>> match_channel_names(["Ch1", "Ch2"])
    {}
    """
    hits: dict[str, list[int]] = {name: [] for name in CHANNELS}
    for index, label in enumerate(names):
        key = re.sub(r"[^a-z0-9]", "", str(label).lower()).replace("alexafluor", "alexa")
        matched = [ch for ch, aliases in CHANNEL_ALIASES.items() if any(a in key for a in aliases)]
        if len(matched) == 1:
            hits[matched[0]].append(index)
    return {ch: found[0] for ch, found in hits.items() if len(found) == 1}


def _check_mapping(mapping: Any, what: str, n_channels: int | None = None, label: str = "") -> None:
    """Validate a channel-name -> index mapping (keys, required channels, indices)."""
    prefix = f"{label}: " if label else ""
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{prefix}{what} must map channel names to indices, got {mapping!r}")
    unknown = [k for k in mapping if k not in CHANNELS]
    missing = [k for k in ("dapi", "her2") if k not in mapping]
    if unknown or missing:
        raise ValueError(
            f"{prefix}{what}={dict(mapping)!r}: names must be among {CHANNELS} and include "
            f"'dapi' and 'her2' (unknown: {unknown}, missing: {missing})"
        )
    for key, index in mapping.items():
        if isinstance(index, bool) or not isinstance(index, int | np.integer) or index < 0:
            raise ValueError(f"{prefix}{what}[{key!r}] must be a non-negative index, got {index!r}")
    if len(set(mapping.values())) != len(mapping):
        raise ValueError(f"{prefix}{what}={dict(mapping)!r} uses one channel index twice")
    if n_channels is not None and max(mapping.values()) >= n_channels:
        raise ValueError(
            f"{prefix}{what}={dict(mapping)!r} asks for channel index {max(mapping.values())}, "
            f"but the file has {n_channels} channel(s) (indices 0-{n_channels - 1})"
        )


# --------------------------------------------------------------------------- finding fields


def find_images(
    folder: str | os.PathLike[str], *, channel_patterns: Mapping[str, str] | None = None
) -> list[ImageSource]:
    """List the fields of view in a case folder, in a stable sorted order.

    Parameters
    ----------
    folder : path
        Case folder; only its direct entries are listed (subfolders, e.g. outputs, are not).
    channel_patterns : mapping of str to str, optional
        Channel name to file-name pattern for one-file-per-channel fields; defaults to
        :data:`DEFAULT_CHANNEL_PATTERNS`. A pattern is either a suffix before the extension
        (``"_DAPI"``) or a glob whose ``*`` stands for the field name (``"*_DAPI.tif"``).

    Returns
    -------
    list of ImageSource
        Single files (:data:`IMAGE_SUFFIXES`) and per-channel groups, sorted by name.
        A group lacking a channel that other groups of the folder have records it in
        ``missing_channels`` (reading it then fails).

    Raises
    ------
    ValueError
        If ``folder`` is not a directory, a pattern is invalid, or two files claim the
        same channel of the same field.

    Notes
    -----
    Hidden files (including the temporary files of :func:`atomic_write`), synthetic
    ground truth (names containing ``.truth_``) and ishcount outputs (``.labels.``,
    ``.ishcount.``) are ignored. Masks named after a field (:data:`MASK_NAME_PARTS`, e.g.
    ``b.nuclei.tif``, ``b_cp_masks.png``, ``b.roi.png``) are attached to it; a mask with
    no field of its name is left out with a warning.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> for n in ["b_DAPI.tif", "b_her2.tif", "a.ome.tif", "a.truth_labels.tif", ".x.tif"]:
    ...     _ = (folder / n).write_bytes(b"")
    >>> [(s.name, [p.name for p in s.paths]) for s in find_images(folder)]
    [('a', ['a.ome.tif']), ('b', ['b_DAPI.tif', 'b_her2.tif'])]
    >>> _ = (folder / "a.roi.png").write_bytes(b"")
    >>> find_images(folder)[0].mask("roi").name
    'a.roi.png'
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"folder must be an existing directory, got {str(folder)!r}")
    patterns = _compile_patterns(channel_patterns)
    singles: list[ImageSource] = []
    groups: dict[str, dict[str, Path]] = {}
    names: dict[str, str] = {}
    masks: dict[str, dict[str, Path]] = {}
    for path in sorted(root.iterdir(), key=lambda p: p.name):
        kind, stem = _mask_of(path.name)
        if not _is_candidate(path, MASK_SUFFIXES if kind else IMAGE_SUFFIXES):
            continue
        if kind is not None:
            _add_mask(masks.setdefault(stem.casefold(), {}), kind, stem, path)
            continue
        channel, stem = _match_channel_file(path.name, patterns)
        if channel is None:
            singles.extend(file_sources(path))
            continue
        group = groups.setdefault(stem.casefold(), {})
        names.setdefault(stem.casefold(), stem)
        if channel in group:
            raise ValueError(
                f"{path}: field {stem!r} already has a {channel} file ({group[channel].name})"
            )
        group[channel] = path
    expected = {"dapi", "her2"}.union(*(g.keys() for g in groups.values()))
    for key, group in groups.items():
        missing = tuple(ch for ch in CHANNELS if ch in expected and ch not in group)
        pairs = tuple((ch, group[ch]) for ch in CHANNELS if ch in group)
        singles.append(ImageSource(names[key], channel_paths=pairs, missing_channels=missing))
    singles = [_with_masks(source, masks) for source in singles]
    for found in masks.values():  # what no field took
        for path in found.values():
            warnings.warn(f"{path}: no field of this name in {root}; mask ignored", stacklevel=2)
    return sorted(singles, key=lambda s: (s.name.casefold(), s.name, s.path is None))


def field_masks(
    image_path: str | os.PathLike[str], name: str | None = None
) -> tuple[tuple[str, Path], ...]:
    """The masks named after the field of one image file, in its folder (as :func:`find_images`
    attaches them), as ``(kind, path)`` pairs; ``name``: the field's name when it is not the
    file's (a scene of a CZI file, :func:`file_sources`).

    Raises
    ------
    ValueError
        If the field has two masks of one kind.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> for n in ["s1.ome.tif", "s1.roi.geojson", "s2.nuclei.tif"]:
    ...     _ = (folder / n).write_bytes(b"")
    >>> [(kind, path.name) for kind, path in field_masks(folder / "s1.ome.tif")]
    [('roi', 's1.roi.geojson')]
    """
    path = Path(image_path)
    name = (_field_name(path.name) if name is None else name).casefold()
    found: dict[str, Path] = {}
    for other in sorted(path.parent.iterdir(), key=lambda p: p.name):
        kind, stem = _mask_of(other.name)
        if kind is None or stem.casefold() != name or not _is_candidate(other, MASK_SUFFIXES):
            continue
        _add_mask(found, kind, stem, other)
    return tuple(sorted(found.items()))


def _add_mask(found: dict[str, Path], kind: str, stem: str, path: Path) -> None:
    """Note ``path`` as the field ``stem``'s mask of ``kind``; a second one is an error."""
    if kind in found:
        raise ValueError(f"{path}: field {stem!r} already has a {kind} mask ({found[kind].name})")
    found[kind] = path


def _mask_of(filename: str) -> tuple[str | None, str]:
    """``(kind, field name)`` when ``filename`` is a mask (:data:`MASK_NAME_PARTS`, or
    Cellpose's :data:`CELLPOSE_SEG_SUFFIX`)."""
    lower = filename.lower()
    if lower.endswith(CELLPOSE_SEG_SUFFIX) and len(lower) > len(CELLPOSE_SEG_SUFFIX):
        return "nuclei", filename[: -len(CELLPOSE_SEG_SUFFIX)]
    suffix = next((s for s in MASK_SUFFIXES if lower.endswith(s)), "")
    end = len(filename) - len(suffix)
    for kind, parts in MASK_NAME_PARTS.items():
        for part in parts:
            if suffix and lower[:end].endswith(part) and end > len(part):
                return kind, filename[: end - len(part)]
    return None, ""


def _with_masks(source: ImageSource, masks: dict[str, dict[str, Path]]) -> ImageSource:
    """``source`` with the masks named after it (removed from ``masks``)."""
    found = masks.pop(source.name.casefold(), None)
    if not found:
        return source
    return dataclasses.replace(source, masks=tuple(sorted(found.items())))


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True for a path :func:`read_image` takes as one image: a file of an
    :data:`IMAGE_SUFFIXES` type, or an OME-Zarr folder; not hidden files, ground truth or
    ishcount's own outputs.

    Examples
    --------
    >>> is_image_file("no/such/field.ome.tif")
    False
    """
    return _is_candidate(Path(path))


def _is_candidate(path: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> bool:
    name = path.name.lower()
    return (
        not name.startswith(".")
        and name.endswith(suffixes)
        and not any(part in name for part in _IGNORED_NAME_PARTS)
        and (path.is_dir() if name.endswith(_FOLDER_SUFFIXES) else path.is_file())
    )


def _compile_patterns(patterns: Mapping[str, str] | None) -> dict[str, re.Pattern[str]]:
    patterns = DEFAULT_CHANNEL_PATTERNS if patterns is None else patterns
    if not isinstance(patterns, Mapping) or not patterns:
        raise ValueError(f"channel_patterns must map channel names to patterns, got {patterns!r}")
    ext = "|".join(re.escape(s) for s in IMAGE_SUFFIXES)
    compiled = {}
    for channel, pattern in patterns.items():
        if channel not in CHANNELS or not isinstance(pattern, str) or not pattern.strip("*"):
            raise ValueError(
                f"channel_patterns[{channel!r}]={pattern!r}: keys must be among {CHANNELS} "
                "and patterns non-empty strings like '_DAPI' or '*_DAPI.tif'"
            )
        if "*" in pattern:
            if pattern.count("*") != 1:
                raise ValueError(f"channel_patterns[{channel!r}]={pattern!r} needs exactly one *")
            head, tail = (re.escape(p) for p in pattern.split("*"))
            regex = f"{head}(?P<stem>.+?){tail}"
        else:
            regex = f"(?P<stem>.+?){re.escape(pattern)}(?:{ext})"
        compiled[channel] = re.compile(regex, re.IGNORECASE)
    return compiled


def _match_channel_file(
    filename: str, patterns: Mapping[str, re.Pattern[str]]
) -> tuple[str | None, str]:
    for channel, regex in patterns.items():
        match = regex.fullmatch(filename)
        if match:
            return channel, match.group("stem")
    return None, ""


def _field_name(filename: str) -> str:
    lower = filename.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return filename[: -len(suffix)]
    return Path(filename).stem


# --------------------------------------------------------------------------- reading


def read_image(
    source: str | os.PathLike[str] | ImageSource,
    *,
    channels: Mapping[str, int] | None = None,
    spacing_um: float | Sequence[float] | None = None,
    default_channels: Mapping[str, int] | None = None,
    default_spacing_um: float | Sequence[float] | None = None,
    lazy: bool | None = None,
    axes: str | None = None,
    name: str | None = None,
) -> FishImage:
    """Read one field of view into a :class:`~ishcount.image.FishImage`.

    Parameters
    ----------
    source : path or ImageSource
        A TIFF/OME-TIFF/ImageJ/PNG/JPEG/CZI file, or a source from :func:`find_images`
        (a one-file-per-channel group reads into one image; a scene of a CZI file).
    channels : mapping of str to int, optional
        Channel index of ``dapi``, ``her2`` and (dual probe) ``cep17`` in the file, e.g. from
        :func:`parse_channels`. Overrides metadata names and the RGB convention. Not used for
        per-channel groups, whose file names say the channel.
    spacing_um : float or sequence of float, optional
        Pixel size in micrometres: one lateral size, ``(y, x)`` or ``(z, y, x)`` (the z step
        is dropped for a single plane). Overrides the metadata axis by axis; a z-stack takes
        its z step from the metadata when only lateral sizes are given.
    default_channels : mapping of str to int, optional
        Like ``channels`` but used only when the metadata names no channels and the file is
        not an RGB composite (the pipeline file's ``image.channels``).
    default_spacing_um : float or sequence of float, optional
        Like ``spacing_um`` but used only for axes the metadata leaves unsized (the
        pipeline file's ``image.pixel_size_um``).
    lazy : bool, optional
        Return Dask arrays read page by page. ``None``: lazy for TIFF files larger than
        :data:`LAZY_THRESHOLD_BYTES`. PNG/JPEG are always decoded whole.
    axes : str, optional
        Axis letters of a plain TIFF whose layout the file does not say, e.g. ``"ZCYX"``
        (``C`` channels, ``Z`` planes, ``Y``, ``X``); one letter per stored dimension.
    name : str, optional
        Field name; defaults to the source name.

    Returns
    -------
    FishImage
        Channels of shape ``(Y, X)`` or ``(Z, Y, X)`` in the stored dtype, with ``metadata``
        holding ``source`` (list of file paths), ``format``, ``axes`` (as stored),
        ``channel_names`` (from metadata), ``channel_mapping`` and ``channel_mapping_source``,
        ``spacing_source`` (axis letter to where its size came from), ``lazy``, ``lossy``
        (how the file lost detail, "" when it did not) and ``scene`` (None but for a scene
        of a CZI file).

    Raises
    ------
    ValueError
        Message starting with the file path, for a missing, empty, corrupt, truncated or
        unsupported file; a wrong number of channels; a missing channel file; an all-NaN
        channel; or when channel mapping or pixel size are not in the metadata and were not
        passed (the message says what to pass).
    TypeError
        If ``source`` or an argument has the wrong type.

    Notes
    -----
    Channel mapping, in order of precedence: ``channels``; channel names in OME or ImageJ
    metadata matched by :func:`match_channel_names`; the RGB convention
    (:data:`RGB_CHANNELS`) for interleaved RGB TIFF, PNG and JPEG; ``default_channels``.
    Pixel size, per axis: ``spacing_um``; OME ``PhysicalSizeX/Y/Z`` (converted from their
    units) or ImageJ ``XResolution`` / ``YResolution`` and ``spacing`` with a length
    ``unit``; ``default_spacing_um``. Resolution tags of plain TIFF files are ignored: most
    software writes a meaningless default (72 dpi) there.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "stack.tif"
    >>> tifffile.imwrite(path, np.ones((2, 3, 8, 8), np.uint8), photometric="minisblack",
    ...                  metadata={"axes": "ZCYX"})
    >>> image = read_image(path, channels={"dapi": 2, "her2": 0}, spacing_um=(0.5, 0.1, 0.1))
    >>> image.shape, image.channel_names, image.metadata["channel_mapping_source"]
    ((2, 8, 8), ('dapi', 'her2'), 'argument')
    """
    src = _as_source(source)
    if axes is not None and not isinstance(axes, str):
        raise TypeError(f"axes must be a string like 'ZCYX', got {axes!r}")
    if lazy is not None and not isinstance(lazy, bool):
        raise TypeError(f"lazy must be True, False or None, got {lazy!r}")
    label = str(src.path) if src.path is not None else str(src.paths[0].parent / src.name)
    if src.path is not None:
        raw = _read_file(src.path, lazy=lazy, axes=axes, single_channel=False, scene=src.scene)
        mapping, mapping_source = _resolve_channels(raw, channels, default_channels, label)
    else:
        raw = _read_channel_group(src, lazy=lazy, axes=axes)
        mapping = {ch: i for i, (ch, _) in enumerate(src.channel_paths)}
        mapping_source = "file names"
    spacing, spacing_source = _resolve_spacing(raw, spacing_um, default_spacing_um, label)
    arrays = {ch: raw.planes[i] for ch, i in mapping.items()}
    _check_values(arrays, mapping, label)
    metadata = {
        "source": [str(p) for p in src.paths],
        "format": raw.format,
        "axes": raw.axes,
        "channel_names": raw.names,
        "channel_mapping": dict(mapping),
        "channel_mapping_source": mapping_source,
        "spacing_source": spacing_source,
        "lazy": raw.lazy,
        "lossy": raw.lossy,
        "scene": src.scene,
    }
    return FishImage(
        dapi=arrays["dapi"],
        her2=arrays["her2"],
        cep17=arrays.get("cep17"),
        spacing_um=spacing,
        name=src.name if name is None else str(name),
        metadata=metadata,
    )


def read_mask(path: str | os.PathLike[str], *, kind: str, shape: Sequence[int]) -> np.ndarray:
    """Read a field's nucleus labels or region of interest from a mask file.

    Parameters
    ----------
    path : path
        TIFF or PNG holding one 2D plane (singleton axes are dropped), GeoJSON polygons
        in pixel coordinates (QuPath's export of annotations or detections), a NumPy
        ``.npy`` array, or the ``masks`` of a Cellpose ``_seg.npy`` file (its pickled dict
        read without running code: only NumPy arrays, numbers, text, lists and dicts).
    kind : {"nuclei", "roi"}
        ``"nuclei"``: labels, 0 background and one whole number per nucleus (Cellpose,
        StarDist, QuPath or hand-drawn), or a two-valued mask (0/1, 0/255) whose connected
        objects are the nuclei, or one polygon per nucleus. ``"roi"``: any number, non-zero
        inside the region, or polygons (holes cut out).
    shape : sequence of int
        ``(Y, X)`` of the field the mask belongs to.

    Returns
    -------
    numpy.ndarray
        Sequential int32 labels (:func:`ishcount.segment.prepare_labels`, no size limit
        yet), or a boolean mask (a region, or nuclei as connected objects), of ``shape``.

    Raises
    ------
    ValueError
        Naming the file: unreadable, not one plane, another size than the field, or (for
        labels) values that are negative or not whole numbers.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "f.roi.tif"
    >>> tifffile.imwrite(path, np.array([[0, 255], [0, 0]], np.uint8))
    >>> read_mask(path, kind="roi", shape=(2, 2)).tolist()
    [[False, True], [False, False]]
    >>> read_mask(path, kind="roi", shape=(3, 2))
    Traceback (most recent call last):
    ...
    ValueError: ...f.roi.tif: the roi mask is 2x2 pixels, its field 3x2
    """
    if kind not in MASK_NAME_PARTS:
        raise ValueError(f"kind must be one of {tuple(MASK_NAME_PARTS)}, got {kind!r}")
    path = Path(path)
    if path.name.lower().endswith(".geojson"):
        return _rasterise_geojson(path, kind, tuple(int(n) for n in shape))
    if path.name.lower().endswith(".npy"):
        data = _read_npy(path)
    else:
        data = np.asarray(_read_data(path, _check_file(path), lazy=False)[1])
    if data.ndim > 2:  # a plane stored with singleton axes (1, Y, X) or (Y, X, 1)
        data = data.reshape([n for n in data.shape if n != 1])
    if data.ndim != 2:
        raise ValueError(
            f"{path}: a {kind} mask must be one 2D plane, got shape {data.shape} "
            "(save it as a single-channel image)"
        )
    if data.shape != tuple(shape):
        raise ValueError(
            f"{path}: the {kind} mask is {data.shape[0]}x{data.shape[1]} pixels, its field "
            f"{shape[0]}x{shape[1]}"
        )
    if data.dtype == bool:
        return data
    if not np.issubdtype(data.dtype, np.number):
        raise ValueError(f"{path}: a {kind} mask must hold numbers, got {data.dtype}")
    if kind == "roi":
        return data != 0
    inside = data != 0
    values = data[inside]
    if values.size and values.min() == values.max() > 0:  # a 0/255 mask: its objects are nuclei
        return inside
    from ishcount.segment import prepare_labels  # checked where every label image is

    try:
        return prepare_labels(data, shape=data.shape, min_area_um2=None)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


#: What a pickled NumPy file may make while it is read: arrays, dtypes and scalars (in plain
#: lists and dicts, which need nothing named). Anything else, such as a function called
#: while unpickling, is refused, so a mask file cannot run code.
_PICKLED_NUMPY = frozenset(
    (module, name)
    for package in ("numpy.core", "numpy._core")
    for module, name in (
        (f"{package}.multiarray", "_reconstruct"),
        (f"{package}.multiarray", "scalar"),
        (f"{package}.numeric", "_frombuffer"),
    )
) | {("numpy", "ndarray"), ("numpy", "dtype")}


class _NumpyUnpickler(pickle.Unpickler):
    """An unpickler that makes NumPy arrays and plain containers only."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLED_NUMPY:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it would load {module}.{name}, which a mask never needs")


def _read_npy(path: Path) -> np.ndarray:
    """A NumPy file's array, or the ``masks`` of a Cellpose ``_seg.npy`` (a pickled dict,
    read with :class:`_NumpyUnpickler`)."""
    headers = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
    try:
        with open(path, "rb") as file:
            version = npy_format.read_magic(file)
            if version not in headers:
                raise ValueError(f"NumPy file format version {version} is not read")
            dtype = headers[version](file)[2]
            if not dtype.hasobject:
                file.seek(0)
                return np.load(file, allow_pickle=False)
            content = _NumpyUnpickler(file).load()
    except Exception as exc:  # a damaged pickle raises any of a dozen types
        raise ValueError(f"{path}: cannot read as a NumPy mask file: {exc}") from exc
    if isinstance(content, np.ndarray) and content.dtype.hasobject and content.shape == ():
        content = content.item()  # np.save of a dict, as Cellpose saves its _seg.npy
    if isinstance(content, dict) and isinstance(content.get("masks"), np.ndarray):
        return content["masks"]
    raise ValueError(f"{path}: holds no 'masks' array (as a Cellpose _seg.npy file does)")


def _rasterise_geojson(path: Path, kind: str, shape: tuple[int, int]) -> np.ndarray:
    """Polygons of a GeoJSON file (pixel coordinates ``[x, y]`` from the image's top-left
    corner, as QuPath exports them) as a region (``"roi"``: their union, holes cut out)
    or as nucleus labels (``"nuclei"``: one label per feature, later ones on top; a QuPath
    cell's ``nucleusGeometry`` rather than its cell outline)."""
    from skimage.draw import polygon

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable GeoJSON file: {exc}") from exc
    if isinstance(document, list):  # QuPath writes a bare list of features
        features = document
    elif isinstance(document, dict) and document.get("type") == "FeatureCollection":
        features = document.get("features") or []
    else:
        features = [document]
    region = np.zeros(shape, bool)
    labels = np.zeros(shape, np.int32)
    drawn = 0
    for feature in features:
        geometry = None
        if isinstance(feature, dict):  # a QuPath cell carries its nucleus apart
            nucleus = kind == "nuclei" and feature.get("nucleusGeometry")
            geometry = nucleus or feature.get("geometry", feature)
        kind_of = geometry.get("type") if isinstance(geometry, dict) else None
        if kind_of not in ("Polygon", "MultiPolygon"):
            continue  # points and lines enclose nothing
        polygons = geometry["coordinates"]
        pixels = np.empty(0, np.intp)
        try:
            for rings in [polygons] if kind_of == "Polygon" else polygons:
                inside = []  # flat pixel indices: the outline's, then each hole's
                for ring in rings:
                    xy = np.asarray(ring, dtype=float).reshape(-1, 2) - 0.5  # to pixel centres
                    rows, cols = polygon(xy[:, 1], xy[:, 0], shape)
                    inside.append(np.ravel_multi_index((rows, cols), shape))
                if inside:  # the first ring is the outline, the others are holes
                    kept = np.setdiff1d(inside[0], np.concatenate([pixels[:0], *inside[1:]]))
                    pixels = np.union1d(pixels, kept)
        except (TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"{path}: a {kind_of} with unusable coordinates: {exc}") from exc
        drawn += 1
        region.flat[pixels] = True
        labels.flat[pixels] = drawn
    if drawn == 0:
        raise ValueError(f"{path}: no Polygon or MultiPolygon in this GeoJSON file")
    return region if kind == "roi" else labels


def _as_source(source: Any) -> ImageSource:
    if isinstance(source, ImageSource):
        return source
    if isinstance(source, str | os.PathLike):
        return ImageSource.from_path(source)
    raise TypeError(f"source must be a path or an ImageSource, got {source!r}")


def _check_file(path: Path) -> str:
    """Check that ``path`` is a non-empty file of a supported type; return its suffix."""
    lower = path.name.lower()
    suffix = next((s for s in IMAGE_SUFFIXES if lower.endswith(s)), path.suffix.lower())
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported file type {suffix!r}; expected one of {IMAGE_SUFFIXES}"
        )
    if suffix in _FOLDER_SUFFIXES or suffix == ".ome.zarr":
        if not path.is_dir():
            raise ValueError(f"{path}: no such Zarr folder")
        return ".zarr"
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: file is empty (0 bytes)")
    return suffix


def _read_data(
    path: Path, suffix: str, *, lazy: bool | None, scene: int | None = None
) -> tuple[_Raw, Any, str]:
    """The reader of a file type: what it found, the stored array and its axis letters."""
    if suffix in _RASTER_CODECS:
        return _read_raster(path, _RASTER_CODECS[suffix], lazy=bool(lazy))
    if suffix == ".czi":
        return _read_czi(path, scene)
    if suffix == ".zarr":
        return _read_ome_zarr(path, lazy=lazy)
    if lazy is None:
        lazy = path.stat().st_size > LAZY_THRESHOLD_BYTES
    return _read_tiff(path, lazy=lazy)


def _read_file(
    path: Path,
    *,
    lazy: bool | None,
    axes: str | None,
    single_channel: bool,
    scene: int | None = None,
) -> _Raw:
    suffix = _check_file(path)
    if scene is not None and suffix != ".czi":
        raise ValueError(f"{path}: scene={scene} given, but only CZI files hold scenes")
    raw, data, stored = _read_data(path, suffix, lazy=lazy, scene=scene)
    if axes is not None:
        stored = _check_axes_override(axes, data.shape, path)
    raw.planes = _split_channels(data, stored, path, single_channel=single_channel)
    raw.axes = stored
    return raw


def _read_raster(path: Path, codec: str, *, lazy: bool) -> tuple[_Raw, Any, str]:
    import imagecodecs

    encoded = path.read_bytes()
    if codec == "jpeg8" and not encoded.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        # libjpeg only warns about a missing end and fills the rest with grey
        raise ValueError(f"{path}: truncated JPEG file (no end-of-image marker)")
    try:
        data = imagecodecs.imread(encoded, codec=codec)
    except Exception as exc:  # the codec libraries raise many types
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(
            f"{path}: cannot decode as {codec.rstrip('8')} (corrupt or truncated?): {detail}"
        ) from exc
    data = np.asarray(data)
    stored = "YX" if data.ndim == 2 else "YXS"
    if lazy:
        import dask.array as da

        data = da.from_array(data, chunks=data.shape)
    fmt = "png" if codec == "png" else "jpeg"
    lossy = describe_jpeg(encoded) if fmt == "jpeg" else ""
    return _Raw([], stored, fmt, is_rgb=data.ndim == 3, lazy=lazy, lossy=lossy), data, stored


#: Sum of the JPEG standard's luminance quantization table (ITU-T T.81 Annex K, table K.1),
#: which the common encoders (IJG libjpeg and its descendants) scale by quality.
_STANDARD_LUMINANCE_SUM = 3688


def describe_jpeg(encoded: bytes) -> str:
    """Describe a JPEG stream's lossy compression: estimated quality and chroma subsampling.

    Parameters
    ----------
    encoded : bytes
        The JPEG file's content.

    Returns
    -------
    str
        For example ``"JPEG, quality about 85, chroma subsampled 4:2:0"``; ``"JPEG"`` when the
        headers cannot be read.

    Notes
    -----
    The quality is that of the IJG scaling (``scale = 5000 / q`` below 50, ``200 - 2 q``
    above) that makes the first luminance table's sum, within rounding; encoders with their
    own tables get a nominal figure. Chroma is subsampled when the first component's
    sampling factors exceed the others' (4:2:0 halves the colour resolution both ways: the
    HER2 and CEP17 signals of an RGB composite are carried mostly by colour).

    Examples
    --------
    >>> import imagecodecs
    >>> rgb = np.zeros((16, 16, 3), np.uint8)
    >>> describe_jpeg(imagecodecs.jpeg8_encode(rgb, level=85, subsampling="420"))
    'JPEG, quality about 85, chroma subsampled 4:2:0'
    """
    luminance, sampling = None, []
    at = 2 if encoded[:2] == b"\xff\xd8" else len(encoded)
    while at + 4 <= len(encoded) and encoded[at] == 0xFF:
        marker = encoded[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        length = int.from_bytes(encoded[at + 2 : at + 4], "big")
        body = encoded[at + 4 : at + 2 + length]
        if marker == 0xDB:  # quantization tables: (precision << 4 | id, 64 entries) ...
            pos = 0
            while pos < len(body):
                wide, table_id = body[pos] >> 4, body[pos] & 15
                size = 128 if wide else 64
                values = body[pos + 1 : pos + 1 + size]
                if table_id == 0 and luminance is None:
                    step = 2 if wide else 1
                    luminance = sum(
                        int.from_bytes(values[i : i + step], "big")
                        for i in range(0, len(values), step)
                    )
                pos += 1 + size
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            count = min(body[5], (len(body) - 6) // 3) if len(body) > 5 else 0
            sampling = [(body[7 + 3 * i] >> 4, body[7 + 3 * i] & 15) for i in range(count)]
        elif marker == 0xDA:  # start of scan: the headers are over
            break
        at += 2 + length
    parts = ["JPEG"]
    if luminance:
        scale = 100.0 * luminance / _STANDARD_LUMINANCE_SUM
        quality = 100 - scale / 2 if scale <= 100 else 5000 / scale
        quality = 100 if luminance <= 64 else quality  # every step 1: the finest table
        parts.append(f"quality about {round(min(max(quality, 1), 100))}")
    if len(sampling) == 3 and sampling[0] != sampling[1]:
        (h0, v0), (h1, v1) = sampling[0], sampling[1]
        name = {(2, 2): "4:2:0", (2, 1): "4:2:2", (4, 1): "4:1:1"}.get(
            (h0 // max(h1, 1), v0 // max(v1, 1)), "reduced"
        )
        parts.append(f"chroma subsampled {name}")
    return ", ".join(parts)


class _TiffLogCapture(logging.Handler):
    """Collect error messages tifffile logs (instead of raising) in the current thread."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread and record.levelno >= logging.ERROR:
            self.messages.append(record.getMessage())


@contextmanager
def _tiff_errors(path: Path) -> Iterator[None]:
    """Turn tifffile exceptions and logged errors into ``ValueError`` naming ``path``."""
    logger = logging.getLogger("tifffile")
    capture = _TiffLogCapture()
    logger.addHandler(capture)
    try:
        yield
    except ValueError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(
            f"{path}: not a readable TIFF file (corrupt or truncated?): {exc}"
        ) from exc
    except (tifffile.TiffFileError, OSError, EOFError, KeyError, IndexError, RuntimeError) as exc:
        raise ValueError(
            f"{path}: not a readable TIFF file (corrupt or truncated?): {exc}"
        ) from exc
    finally:
        logger.removeHandler(capture)
    if capture.messages:
        raise ValueError(f"{path}: damaged TIFF file (truncated?): {capture.messages[0]}")


def _read_tiff(path: Path, *, lazy: bool) -> tuple[_Raw, Any, str]:
    with _tiff_errors(path), tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ValueError(f"{path}: TIFF file holds no image")
        series = tif.series[0]
        _check_complete(tif, series, path)
        raw = _tiff_metadata(tif, series)
        raw.lossy = _tiff_lossy(series.keyframe.compression)
        data = _lazy_series(path, tif, series) if lazy else series.asarray()
    raw.lazy = lazy
    return raw, data, series.axes


def _pylibczirw(path: Path) -> Any:
    """The pylibCZIrw reader module, or a ValueError naming ``path`` saying how to get it."""
    try:
        from pylibCZIrw import czi
    except ImportError:
        raise ValueError(
            f"{path}: reading Zeiss CZI files needs the pylibCZIrw package "
            "(pip install 'ishcount[czi]'), or export the field from ZEN as OME-TIFF"
        ) from None
    return czi


def _czi_scenes(path: Path) -> int:
    """Number of scenes in a CZI file (1 when it has none, or cannot be read here)."""
    try:
        with _pylibczirw(path).open_czi(str(path)) as document:
            return max(len(document.scenes_bounding_rectangle), 1)
    except Exception:  # read_image gives the reason when the field is read
        return 1


#: CZI sub-block compressions (raw codes) that lose detail, or may (JPEG XR can be lossless).
_CZI_LOSSY = {
    1: "CZI with JPEG compression",
    4: "CZI with JPEG XR compression (lossy unless saved lossless)",
}


def _read_czi(path: Path, scene: int | None = None) -> tuple[_Raw, np.ndarray, str]:
    """A Zeiss CZI file (or one ``scene`` of it, 0-based) at one time point, via pylibCZIrw.

    Returns the channels as ``CZYX`` (grey) or one ``YXS`` RGB plane (a colour camera's
    BGR turned to RGB), with channel names and pixel size from the file's XML metadata.
    """
    pyczi = _pylibczirw(path)
    try:
        with pyczi.open_czi(str(path)) as document:
            box = dict(document.total_bounding_box)
            scenes = sorted(document.scenes_bounding_rectangle)
            pixel_types = dict(document.pixel_types)
            xml = document.raw_metadata
            compressions: set[int] = set()

            def note_compression(_index: int, info: Any) -> bool:
                compressions.add(int(info.compressionModeRaw))
                return True  # go on to the next sub-block

            document.enumerate_subblocks(note_compression)
            extra = {a: hi - lo for a, (lo, hi) in box.items() if a not in "CZYX" and hi - lo > 1}
            n_scenes = max(len(scenes), 1)
            chosen = 0 if scene is None else scene
            data = None
            if not extra and 0 <= chosen < n_scenes and (scene is not None or n_scenes == 1):
                at = {"scene": scenes[chosen]} if scenes else {}
                first_time = box.get("T", (0, 1))[0]
                planes = [
                    [
                        document.read(plane={"C": c, "Z": z, "T": first_time}, **at)
                        for z in range(*box.get("Z", (0, 1)))
                    ]
                    for c in range(*box.get("C", (0, 1)))
                ]
                data = np.asarray(planes)
    except Exception as exc:  # pylibCZIrw raises RuntimeError and others on bad files
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: cannot read as a Zeiss CZI file (corrupt?): {detail}") from exc
    if scene is None and n_scenes > 1:
        raise ValueError(
            f"{path}: the CZI file holds {n_scenes} scenes; read one with "
            "ImageSource(name, path=..., scene=k), or give its folder to find_images or "
            "'ishcount run', which take each scene as a field"
        )
    if not 0 <= chosen < n_scenes:
        raise ValueError(f"{path}: no scene {scene} (the file holds {n_scenes}, from 0)")
    if extra:
        raise ValueError(
            f"{path}: cannot read CZI dimensions {extra}; ishcount reads one time point and "
            "one position: C, Z, Y, X"
        )
    names, spacing = _czi_metadata(xml)
    lossy = "; ".join(_CZI_LOSSY[code] for code in sorted(compressions) if code in _CZI_LOSSY)
    if set(pixel_types.values()) & {"Bgr24", "Bgr48", "Bgra32"}:
        if data.shape[:2] != (1, 1):
            raise ValueError(f"{path}: a colour CZI file must hold one colour plane")
        rgb = data[0, 0, ..., 2::-1]  # BGR(A) as stored, turned to RGB
        raw = _Raw([], "YXS", "czi", None, spacing, "CZI metadata", is_rgb=True, lossy=lossy)
        return raw, rgb, "YXS"
    data = data[..., 0]  # grey planes come as (Y, X, 1)
    return _Raw([], "CZYX", "czi", names, spacing, "CZI metadata", lossy=lossy), data, "CZYX"


def _czi_metadata(xml: str) -> tuple[list[str] | None, dict[str, float]]:
    """Channel names and pixel size in micrometres from a CZI file's XML metadata.

    A channel's name is its ``Name`` (ZEN's channel name, e.g. "DAPI" or "SpOr"), or its
    ``Fluor`` when the name is empty. ``Scaling/Items/Distance`` values are in metres.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, {}
    names = [
        channel.get("Name") or channel.findtext("Fluor") or ""
        for channel in root.iterfind(".//Information/Image/Dimensions/Channels/Channel")
    ]
    spacing = {}
    for distance in root.iterfind(".//Scaling/Items/Distance"):
        axis = (distance.get("Id") or "").lower()
        size = _length_in_um(distance.findtext("Value"), "m")
        if axis in ("x", "y", "z") and size is not None:
            spacing[axis] = size
    return (names if any(names) else None), spacing


#: OME-Zarr axis names and the axis letters ishcount reads.
_ZARR_AXES = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}


def _read_ome_zarr(path: Path, *, lazy: bool | None) -> tuple[_Raw, Any, str]:
    """The full-resolution level of an OME-Zarr image (NGFF 0.4 or 0.5), with its channel
    labels (``omero``) and the pixel size of its scale transformations and axis units."""
    try:
        import zarr
    except ImportError:
        raise ValueError(
            f"{path}: reading OME-Zarr needs the zarr package (pip install 'ishcount[zarr]')"
        ) from None
    try:
        group = zarr.open_group(str(path), mode="r")
        attributes = dict(group.attrs)
        ome = attributes.get("ome", attributes)  # NGFF 0.5 nests its metadata under "ome"
        if "bioformats2raw.layout" in ome and "multiscales" not in ome:
            # bioformats2raw's layout: one image group per series, "0", "1", ...
            series = sorted(name for name in group.group_keys() if name.isdigit())
            if len(series) != 1:
                raise ValueError(f"{len(series)} series; ishcount reads one image per folder")
            group = group[series[0]]
            attributes = dict(group.attrs)
            ome = attributes.get("ome", attributes)
        multiscale = (ome.get("multiscales") or [None])[0]
        if not isinstance(multiscale, dict) or not multiscale.get("datasets"):
            raise ValueError("no OME-Zarr 'multiscales' metadata (is it an image group?)")
        dataset = multiscale["datasets"][0]
        array = group[dataset["path"]]
        axes = [a if isinstance(a, str) else a.get("name", "") for a in multiscale["axes"]]
        units = [None if isinstance(a, str) else a.get("unit") for a in multiscale["axes"]]
        stored = "".join(_ZARR_AXES.get(name.lower(), "?") for name in axes)
        if "?" in stored or len(stored) != array.ndim:
            raise ValueError(f"axes {axes} for an array of shape {array.shape}")
        scale = np.ones(len(axes))
        for transforms in (
            dataset.get("coordinateTransformations"),
            multiscale.get("coordinateTransformations"),
        ):
            for transform in transforms or []:
                if transform.get("type") == "scale":
                    scale = scale * np.asarray(transform["scale"], dtype=float)
        channels = (ome.get("omero") or {}).get("channels") or []
        names = [str(channel.get("label", "")) for channel in channels]
        if lazy is None:
            lazy = array.nbytes > LAZY_THRESHOLD_BYTES
        if lazy:
            import dask.array as da

            data = da.from_zarr(array)
        else:
            data = np.asarray(array[...])
    except Exception as exc:  # zarr raises many types on a store it cannot read
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: cannot read as OME-Zarr: {detail}") from exc
    spacing = {}
    for letter, size, unit in zip(stored, scale, units, strict=True):
        value = _length_in_um(size, unit or "micrometer") if letter in "ZYX" else None
        if value is not None:
            spacing[letter.lower()] = value
    n_channels = data.shape[stored.index("C")] if "C" in stored else 1
    names = names if any(names) and len(names) == n_channels else None
    raw = _Raw([], stored, "ome-zarr", names, spacing, "OME-Zarr metadata", lazy=bool(lazy))
    return raw, data, stored


#: TIFF compressions that lose detail (the JPEG family), and those that may (their tag does
#: not say whether they were written lossless).
_LOSSY_TIFF = {"OJPEG", "JPEG", "JPEG_99", "ALT_JPEG", "JPEG_LOSSY", "JPEG_2000_LOSSY"}
_MAYBE_LOSSY_TIFF = {"JPEG2000", "JPEGXR", "JPEGXR_NDPI", "JPEGXL", "WEBP", "LERC"}


def _tiff_lossy(compression: Any) -> str:
    """How a TIFF page's compression loses detail ("" when it does not)."""
    name = getattr(compression, "name", str(compression))
    if name in _LOSSY_TIFF:
        return f"TIFF with {name} compression"
    if name in _MAYBE_LOSSY_TIFF:
        return f"TIFF with {name} compression (lossy unless written lossless)"
    return ""


def _check_complete(tif: tifffile.TiffFile, series: Any, path: Path) -> None:
    """Raise if the image data of ``series`` reaches beyond the end of the file."""
    size = tif.filehandle.size
    if series.dataoffset is not None:
        end = series.dataoffset + series.nbytes
    else:
        ends = [
            max((o + c for o, c in zip(p.dataoffsets, p.databytecounts, strict=True)), default=0)
            for p in series.pages
            if p is not None
        ]
        end = max(ends, default=0)
    if end > size:
        raise ValueError(
            f"{path}: truncated TIFF file: image data ends at byte {end}, file has {size} bytes"
        )
    if math.prod(series.shape) == 0:
        raise ValueError(f"{path}: empty image of shape {tuple(series.shape)}")


def _tiff_metadata(tif: tifffile.TiffFile, series: Any) -> _Raw:
    page = series.keyframe
    is_rgb = (
        page.photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
        and page.planarconfig == tifffile.PLANARCONFIG.CONTIG
        and series.axes.endswith("S")
    )
    if tif.is_ome and tif.ome_metadata:
        names, spacing = _ome_names_and_spacing(tif.ome_metadata)
        return _Raw([], series.axes, "ome-tiff", names, spacing, "OME metadata", is_rgb)
    if tif.is_imagej and tif.imagej_metadata:
        names, spacing = _imagej_names_and_spacing(tif.imagej_metadata, page, series)
        return _Raw([], series.axes, "imagej-tiff", names, spacing, "ImageJ metadata", is_rgb)
    return _Raw([], series.axes, "rgb-tiff" if is_rgb else "tiff", is_rgb=is_rgb)


def _length_in_um(value: Any, unit: Any) -> float | None:
    """Convert ``value`` in ``unit`` to micrometres; None if unknown or not positive."""
    try:
        size = float(value)
    except (TypeError, ValueError):
        return None
    factor = _UNIT_TO_UM.get(str(unit).strip().lower())
    if factor is None or not (math.isfinite(size) and size > 0):
        return None
    return size * factor


def _ome_names_and_spacing(xml: str) -> tuple[list[str] | None, dict[str, float]]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, {}
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None, {}
    spacing = {}
    for axis in "zyx":
        key = f"PhysicalSize{axis.upper()}"
        if key in pixels.attrib:
            size = _length_in_um(pixels.attrib[key], pixels.attrib.get(f"{key}Unit", "µm"))
            if size is not None:
                spacing[axis] = size
    channels = [e for e in pixels if e.tag.rsplit("}", 1)[-1] == "Channel"]
    names = [c.attrib.get("Name", "") for c in channels]
    return (names if any(names) else None), spacing


def _imagej_names_and_spacing(
    meta: Mapping[str, Any], page: Any, series: Any
) -> tuple[list[str] | None, dict[str, float]]:
    unit = meta.get("unit", "")
    spacing = {}
    for axis, tag in (("x", "XResolution"), ("y", "YResolution")):
        if tag in page.tags:
            numerator, denominator = page.tags[tag].value
            if numerator > 0:
                size = _length_in_um(denominator / numerator, meta.get(f"{axis}unit", unit))
                if size is not None:
                    spacing[axis] = size
    if "spacing" in meta:
        z_step = _length_in_um(meta["spacing"], meta.get("zunit", unit))
        if z_step is not None:
            spacing["z"] = z_step
    labels = meta.get("Labels")
    n_channels = int(meta.get("channels", 1))
    names = None
    if isinstance(labels, list | tuple) and n_channels > 1 and len(labels) >= n_channels:
        names = [str(s) for s in labels[:n_channels]]  # ImageJ stores C fastest
    return names, spacing


def _lazy_series(path: Path, tif: tifffile.TiffFile, series: Any) -> Any:
    """Dask array of ``series`` with one chunk per TIFF page, each read on demand."""
    import dask
    import dask.array as da

    page_shape = tuple(series.keyframe.shape)
    n_pages = math.prod(series.shape) // max(math.prod(page_shape), 1)
    if n_pages * math.prod(page_shape) != math.prod(series.shape):
        page_shape, n_pages = tuple(series.shape), 1
    dtype = np.dtype(series.dtype)
    if series.dataoffset is not None:  # uncompressed and contiguous: read bytes directly
        dtype = dtype.newbyteorder(tif.byteorder)
        reader = dask.delayed(_read_contiguous_page, pure=True)
        args = [(str(path), series.dataoffset, page_shape, dtype, k) for k in range(n_pages)]
    else:
        reader = dask.delayed(_read_tiff_page, pure=True)
        args = [(str(path), k) for k in range(n_pages)]
    pages = [da.from_delayed(reader(*a), shape=page_shape, dtype=dtype) for a in args]
    return da.stack(pages).reshape(tuple(series.shape))


def _read_contiguous_page(
    path: str, offset: int, shape: tuple[int, ...], dtype: np.dtype, index: int
) -> np.ndarray:
    count = math.prod(shape)
    with open(path, "rb") as fh:
        fh.seek(offset + index * count * dtype.itemsize)
        data = np.fromfile(fh, dtype=dtype, count=count)
    if data.size != count:
        raise ValueError(f"{path}: truncated TIFF file: page {index} is incomplete")
    return data.reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def _read_tiff_page(path: str, index: int) -> np.ndarray:
    with _tiff_errors(Path(path)):
        return tifffile.imread(path, series=0, key=index)


def _check_axes_override(axes: str, shape: tuple[int, ...], path: Path) -> str:
    letters = axes.upper()
    if (
        len(letters) != len(shape)
        or set(letters) - set("CZYXST")
        or len(set(letters)) != len(letters)
        or not {"Y", "X"} <= set(letters)
    ):
        raise ValueError(
            f"{path}: axes={axes!r} must name each of the {len(shape)} stored dimensions "
            f"{tuple(shape)} once with letters C, Z, Y, X (S for colour samples, T for time)"
        )
    return letters


def _split_channels(data: Any, stored: str, path: Path, *, single_channel: bool) -> list[Any]:
    """Return one (Y, X) or (Z, Y, X) array per channel from ``data`` with axes ``stored``."""
    if 0 in data.shape:
        raise ValueError(f"{path}: empty image of shape {tuple(data.shape)}")
    axes, index = "", []
    for letter, size in zip(stored, data.shape, strict=True):
        keep = size > 1 or letter in "YX"
        if keep and letter in _UNKNOWN_AXES:  # unlabelled axes may repeat ('QQYX'): number them
            letter = str(sum(a.isdigit() for a in axes))
        axes += letter if keep else ""
        index.append(slice(None) if keep else 0)
    data = data[tuple(index)]
    sizes = dict(zip(axes, data.shape, strict=True))
    channel, z = _assign_axes(axes, sizes, path, single_channel=single_channel)
    order = [axes.index(a) for a in (channel, z, "Y", "X") if a]
    data = data.transpose(order)
    if not channel:
        return [data]
    if single_channel:  # a colour file holding one channel: grey, or tinted in one colour
        return [data[0] if sizes[channel] == 2 else data[:3].max(axis=0)]
    return [data[i] for i in range(sizes[channel])]


def _assign_axes(
    axes: str, sizes: Mapping[str, int], path: Path, *, single_channel: bool
) -> tuple[str, str]:
    """Decide which stored axis holds channels and which z-planes ('' when absent)."""
    shown = re.sub(r"\d", "Q", axes)  # as tifffile names unlabelled axes
    if not {"Y", "X"} <= set(axes):
        raise ValueError(f"{path}: no Y and X axes among stored axes {shown!r}")
    other = [a for a in axes if a not in "YX"]
    unsupported = [a for a in other if a not in "CSZ" and not a.isdigit()]
    if unsupported:
        raise ValueError(
            f"{path}: cannot read axes {unsupported} (sizes {[sizes[a] for a in unsupported]}); "
            "ishcount reads one time point and one position: C, Z, Y, X (and colour samples)"
        )
    known = [a for a in other if a in "CS"]
    unknown = [a for a in other if a.isdigit()]
    channel = known[0] if len(known) == 1 else ""
    if len(known) > 1:
        raise ValueError(f"{path}: both channel and colour axes in {shown!r}; pass axes=")
    if not channel and not single_channel:
        small = [a for a in unknown if sizes[a] <= _MAX_UNLABELLED_CHANNELS]
        if len(small) == 1 and len(unknown) <= 2:
            channel = small[0]
    if not channel and unknown and not single_channel:
        raise ValueError(
            f"{path}: stored axes {shown!r} of shape {tuple(sizes.values())} do not say which "
            "axis holds the channels; pass axes= in the stored order (e.g. 'CYX', 'YXC' or "
            "'ZCYX'), or save the field as OME-TIFF, ImageJ hyperstack or one file per channel"
        )
    z_axes = [a for a in other if a != channel]
    if len(z_axes) > 1 or (single_channel and channel == "C"):
        hint = "'ZYX'" if single_channel else "'CZYX' or 'ZCYX'"
        raise ValueError(
            f"{path}: cannot tell channels from z-planes in stored axes {shown!r} of shape "
            f"{tuple(sizes.values())}; pass axes= (e.g. {hint}) in the stored order, or save "
            "the field as OME-TIFF or ImageJ hyperstack"
        )
    return channel, (z_axes[0] if z_axes else "")


def _read_channel_group(src: ImageSource, *, lazy: bool | None, axes: str | None) -> _Raw:
    folder = src.paths[0].parent
    missing = list(src.missing_channels) + [
        ch for ch in ("dapi", "her2") if ch not in dict(src.channel_paths)
    ]
    if missing:
        found = ", ".join(p.name for p in src.paths)
        raise ValueError(
            f"{folder / src.name}: no {', '.join(sorted(set(missing)))} channel file for field "
            f"{src.name!r} (found: {found})"
        )
    parts = [_read_file(p, lazy=lazy, axes=axes, single_channel=True) for p in src.paths]
    first = parts[0]
    for (_, path), part in zip(src.channel_paths, parts, strict=True):
        if part.planes[0].shape != first.planes[0].shape:
            raise ValueError(
                f"{path}: image shape {part.planes[0].shape} differs from "
                f"{first.planes[0].shape} of {src.paths[0].name}"
            )
    meta = next((p for p in parts if p.spacing), first)
    return _Raw(
        [p.planes[0] for p in parts],
        first.axes,
        "channel-files",
        spacing=meta.spacing,
        spacing_source=meta.spacing_source,
        lazy=any(p.lazy for p in parts),
        lossy="; ".join(
            f"{path.name}: {part.lossy}"
            for path, part in zip(src.paths, parts, strict=True)
            if part.lossy
        ),
    )


def _resolve_channels(
    raw: _Raw,
    channels: Mapping[str, int] | None,
    default_channels: Mapping[str, int] | None,
    label: str,
) -> tuple[dict[str, int], str]:
    n = len(raw.planes)
    if channels is not None:
        _check_mapping(channels, "channels", n, label)
        return {k: int(v) for k, v in channels.items()}, "argument"
    if n < 2:
        raise ValueError(
            f"{label}: the file holds a single channel; a FISH field needs DAPI and HER2 "
            "(use a multi-channel file, or one file per channel named like "
            "field_DAPI.tif, field_HER2.tif, field_CEP17.tif)"
        )
    if raw.names is not None and len(raw.names) == n:
        found = match_channel_names(raw.names)
        unmatched = n - len(found)
        if {"dapi", "her2"} <= set(found) and ("cep17" in found or unmatched == 0):
            return found, "metadata channel names"
    if raw.is_rgb and n in (3, 4):
        return dict(RGB_CHANNELS), "RGB convention (red=HER2, green=CEP17, blue=DAPI)"
    if default_channels is not None:
        _check_mapping(default_channels, "default_channels", n, label)
        return {k: int(v) for k, v in default_channels.items()}, "default"
    names = f"channel names found: {raw.names}" if raw.names else "no channel names in metadata"
    example = "dapi=0,her2=1" + (",cep17=2" if n > 2 else "")
    as_dict = (
        "{" + ", ".join(f"'{p.split('=')[0]}': {p.split('=')[1]}" for p in example.split(",")) + "}"
    )
    raise ValueError(
        f"{label}: cannot tell which of its {n} channels is DAPI, HER2 and CEP17 ({names}); "
        f"pass channels={as_dict} (command line: --channels {example}; pipeline file: "
        f"image.channels) with this file's channel indices 0-{n - 1}"
    )


def _resolve_spacing(
    raw: _Raw, spacing_um: Any, default_spacing_um: Any, label: str
) -> tuple[tuple[float, ...], dict[str, str]]:
    """Pixel size per axis and where each came from: argument > metadata > default."""
    ndim = raw.planes[0].ndim
    found = dict(raw.spacing)
    if "x" in found and "y" not in found:
        found["y"] = found["x"]  # square pixels when only one lateral size is recorded
    merged: dict[str, float] = {}
    sources: dict[str, str] = {}
    for source, sizes in (
        ("default", _spacing_argument(default_spacing_um, ndim, "default_spacing_um")),
        (raw.spacing_source, found),
        ("argument", _spacing_argument(spacing_um, ndim, "spacing_um")),
    ):
        merged.update(sizes)
        sources.update(dict.fromkeys(sizes, source))
    if not {"y", "x"} <= set(merged):
        raise ValueError(
            f"{label}: no pixel size in the file's metadata; pass spacing_um=(y_um, x_um) or a "
            "single lateral size in micrometres (command line: --pixel-size-um 0.1; pipeline "
            "file: image.pixel_size_um)"
        )
    if ndim == 3 and "z" not in merged:
        raise ValueError(
            f"{label}: no z-step in the metadata of this {raw.planes[0].shape[0]}-plane stack; "
            "pass spacing_um=(z_um, y_um, x_um) in micrometres (command line: --pixel-size-um "
            "0.3,0.1,0.1; pipeline file: image.pixel_size_um)"
        )
    axes = "zyx"[3 - ndim :]
    return tuple(merged[a] for a in axes), {a: sources[a] for a in axes}


def _spacing_argument(spacing_um: Any, ndim: int, what: str = "spacing_um") -> dict[str, float]:
    """Sizes by axis letter from a lateral size, (y, x) or (z, y, x); z dropped for 2D."""
    if spacing_um is None:
        return {}
    values = (spacing_um,) if np.isscalar(spacing_um) else tuple(spacing_um)
    try:
        values = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be numbers in micrometres, got {spacing_um!r}") from None
    if not 1 <= len(values) <= 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(
            f"{what} must be a lateral size, (y, x) or (z, y, x): positive micrometres, "
            f"got {spacing_um!r}"
        )
    if len(values) == 1:
        return {"y": values[0], "x": values[0]}
    sizes = dict(zip("zyx"[3 - len(values) :], values, strict=True))
    return {axis: size for axis, size in sizes.items() if ndim == 3 or axis != "z"}


def _check_values(arrays: Mapping[str, Any], mapping: Mapping[str, int], label: str) -> None:
    for channel, array in arrays.items():
        if isinstance(array, np.ndarray) and array.dtype.kind == "f" and np.isnan(array).all():
            raise ValueError(
                f"{label}: channel {channel!r} (index {mapping[channel]}) holds only NaN values"
            )


# --------------------------------------------------------------------------- writing


def atomic_write(path: str | os.PathLike[str], writer: Callable[[Path], Any]) -> Path:
    """Write a file so that it appears complete or not at all.

    Parameters
    ----------
    path : path
        Destination; its folder must exist. An existing file is replaced only on success.
    writer : callable
        Called with a temporary path in the same folder (hidden, ending with the
        destination's name so format inference by suffix still works); must write the
        whole file there.

    Returns
    -------
    pathlib.Path
        The destination path.

    Raises
    ------
    ValueError
        If the destination folder does not exist or ``path`` is a directory.
    Exception
        Whatever ``writer`` raises; the temporary file is removed first.

    Notes
    -----
    The temporary file is flushed with ``fsync`` and moved with :func:`os.replace`, which is
    atomic on POSIX and Windows when both names are on one file system; the folder is then
    synced so the rename survives a crash (POSIX).

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "note.txt"
    >>> atomic_write(target, lambda tmp: tmp.write_text("done")).read_text()
    'done'
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise ValueError(f"{target}: folder {target.parent} does not exist")
    if target.is_dir():
        raise ValueError(f"{target}: is a directory, expected a file path")
    temporary = target.with_name(f".{secrets.token_hex(6)}.tmp.{target.name}")
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        writer(temporary)
        _fsync(temporary)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if os.name == "posix":
        _fsync(target.parent)
    return target


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_table(table: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a table as CSV atomically, with floats in their shortest exact form.

    Parameters
    ----------
    table : pandas.DataFrame
        Written without its index; NaN as an empty field.
    path : path
        Destination ``.csv`` file (``.csv.gz`` compresses).

    Returns
    -------
    pathlib.Path
        The destination path.

    Raises
    ------
    TypeError
        If ``table`` is not a DataFrame.

    Notes
    -----
    Floats are written with Python's shortest round-trip representation, so
    :func:`pandas.read_csv` (pandas >= 3 parses floats exactly) gives back the same values.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "t.csv"
    >>> print(write_table(pd.DataFrame({"a": [0.1, 1 / 3]}), path).read_text(), end="")
    a
    0.1
    0.3333333333333333
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    return atomic_write(path, lambda tmp: table.to_csv(tmp, index=False, lineterminator="\n"))


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as indented UTF-8 JSON atomically.

    Parameters
    ----------
    obj : object
        Dicts, lists, tuples, str, numbers, bool, None; NumPy scalars and arrays and paths
        are converted. NaN and infinities become ``null`` (JSON has no such numbers).
    path : path
        Destination file.

    Returns
    -------
    pathlib.Path
        The destination path.

    Raises
    ------
    TypeError
        If ``obj`` holds something JSON cannot represent.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "r.json"
    >>> json.loads(write_json({"ratio": np.float64(2.5), "ci": float("nan")}, path).read_text())
    {'ratio': 2.5, 'ci': None}
    """
    text = json.dumps(jsonable(obj), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def jsonable(obj: Any) -> Any:
    """Convert a value into plain JSON types (what :func:`write_json` writes).

    Objects with a ``to_dict()`` and dataclasses become dicts, tuples and arrays become
    lists, NumPy scalars Python numbers, NaN and infinities ``None``, paths strings. Sets
    are refused: their order, and so the file, would change from run to run.

    Raises
    ------
    TypeError
        For a value JSON cannot represent.

    Examples
    --------
    >>> jsonable({"a": (np.int64(1), np.float32(0.5)), "b": Path("x"), "c": float("nan")})
    {'a': [1, 0.5], 'b': 'x', 'c': None}
    """
    if hasattr(obj, "to_dict") and not isinstance(obj, pd.DataFrame):
        return jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    raise TypeError(f"cannot write {type(obj).__name__} value {obj!r} as JSON")


def write_labels(
    labels: Any, path: str | os.PathLike[str], *, spacing_um: Sequence[float] | None = None
) -> Path:
    """Write a label image as zlib-compressed OME-TIFF atomically.

    Parameters
    ----------
    labels : array_like of int, shape (Y, X) or (Z, Y, X)
        Non-negative labels, 0 = background.
    path : path
        Destination, e.g. ``field.labels.ome.tif`` (``.labels.`` keeps it out of
        :func:`find_images`).
    spacing_um : float or sequence of float, optional
        Pixel size in micrometres (lateral size, ``(y, x)`` or ``(z, y, x)``; z is dropped for
        2D labels), stored as OME ``PhysicalSize``.

    Returns
    -------
    pathlib.Path
        The destination path.

    Raises
    ------
    TypeError
        If ``labels`` is not an integer array.
    ValueError
        If it is not 2D/3D, holds negative labels or labels above 2**32 - 1, or
        ``spacing_um`` holds a size that is not positive.

    Notes
    -----
    Stored as ``uint16`` when the largest label fits, else ``uint32``.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "f.labels.ome.tif"
    >>> _ = write_labels(np.array([[0, 1], [2, 2]]), path, spacing_um=(0.1, 0.1))
    >>> tifffile.imread(path).dtype, tifffile.imread(path).tolist()
    (dtype('uint16'), [[0, 1], [2, 2]])
    """
    array = np.asarray(labels)
    if array.dtype.kind not in "iu":
        raise TypeError(f"labels must be an integer array, got dtype {array.dtype}")
    if array.ndim not in (2, 3):
        raise ValueError(f"labels must be 2D (Y, X) or 3D (Z, Y, X), got shape {array.shape}")
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    if low < 0 or high > np.iinfo(np.uint32).max:
        raise ValueError(f"labels must lie in 0..2**32-1, got range {low}..{high}")
    array = array.astype(np.uint16 if high <= np.iinfo(np.uint16).max else np.uint32)
    axes = "ZYX"[3 - array.ndim :]
    metadata: dict[str, Any] = {"axes": axes}
    if spacing_um is not None:
        spacing = _spacing_argument(spacing_um, array.ndim)
        metadata.update({f"PhysicalSize{a.upper()}": v for a, v in spacing.items()})
    return atomic_write(
        path,
        lambda tmp: tifffile.imwrite(tmp, array, ome=True, compression="zlib", metadata=metadata),
    )


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the SHA-256 hex digest of a file's bytes, read in 1 MiB blocks.

    Parameters
    ----------
    path : path
        An existing file, or a Zarr folder (the digest of its files' paths and bytes).

    Returns
    -------
    str
        64 hexadecimal characters.

    Raises
    ------
    ValueError
        If ``path`` is not a file.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "x.bin"
    >>> _ = path.write_bytes(b"abc")
    >>> sha256_file(path)[:16]
    'ba7816bf8f01cfea'
    """
    import hashlib

    target = Path(path)
    if target.is_dir() and target.name.lower().endswith(_FOLDER_SUFFIXES):
        files = sorted(p for p in target.rglob("*") if p.is_file())
    elif target.is_file():
        files = [target]
    else:
        raise ValueError(f"{target}: no such file")
    digest = hashlib.sha256()
    for file in files:
        if file != target:  # a Zarr folder: each file's place in it counts too
            digest.update(file.relative_to(target).as_posix().encode() + b"\0")
        with open(file, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(2**20), b""):
                digest.update(block)
    return digest.hexdigest()
