"""Pipeline files: ``pipelines/*.yaml`` validated into frozen parameter objects.

A pipeline file names the assay's channels and pixel size (used when an image's
own metadata does not say), the parameters of every stage and the guideline
rule set. Unknown keys and wrong types are refused with an error that names the
key and the file, so a typo never silently falls back to a default.

Examples
--------
>>> config = load_pipeline("breast-dual-probe")
>>> config.rule_set
'asco-cap-2018-breast-dual'
>>> sorted(available_pipelines())[:2]
['breast-dual-probe', 'breast-dual-probe-zstack']
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ishcount._frozen import freeze
from ishcount.analyze import AnalysisParams
from ishcount.assign import CountParams
from ishcount.image import CHANNELS
from ishcount.rules import RULE_SETS
from ishcount.segment import segment_nuclei
from ishcount.spots import detect_spots

#: Where named pipelines live: the repository's ``pipelines/`` folder.
PIPELINE_DIR = Path(__file__).resolve().parent.parent / "pipelines"
DEFAULT_PIPELINE = "breast-dual-probe"

#: Stage keys filled in by the pipeline itself, never by a pipeline file.
_RESERVED = {
    "spacing_um",
    "roi",
    "channel",
    "mask",
    "saturated",
    "floor",
    "focus_stack",
    "companion",
}


@dataclass(frozen=True)
class PipelineConfig:
    """A validated pipeline file.

    Attributes
    ----------
    name : str
        Pipeline name.
    description : str
        One line for reports.
    rule_set : str
        Guideline rule set (see :data:`ishcount.rules.RULE_SETS`).
    channels : mapping of str to int, optional
        Channel indices to use when an image's metadata does not name its channels.
    pixel_size_um : tuple of float, optional
        Pixel size to use when an image's metadata has none, ``(y, x)`` or ``(z, y, x)``.
    channel_files : mapping of str to str
        Filename patterns that group one-file-per-channel images.
    analysis : AnalysisParams
        Parameters of the per-image stages.
    tile_size : int
        Images larger than this (pixels, per side) are processed in overlapping tiles.
    source : str
        The file it was read from.
    """

    name: str
    description: str = ""
    rule_set: str = "asco-cap-2018-breast-dual"
    channels: Mapping[str, int] | None = None
    pixel_size_um: tuple[float, ...] | None = None
    channel_files: Mapping[str, str] = field(default_factory=dict)
    analysis: AnalysisParams = field(default_factory=AnalysisParams)
    tile_size: int = 4096
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for provenance."""
        return {
            "name": self.name,
            "description": self.description,
            "rule_set": self.rule_set,
            "channels": dict(self.channels) if self.channels else None,
            "pixel_size_um": list(self.pixel_size_um) if self.pixel_size_um else None,
            "channel_files": dict(self.channel_files),
            "analysis": self.analysis.to_dict(),
            "tile_size": self.tile_size,
            "source": self.source,
        }


def available_pipelines() -> list[str]:
    """Names of the pipeline files shipped in ``pipelines/``."""
    return sorted(p.name.removesuffix(".yaml") for p in PIPELINE_DIR.glob("*.yaml"))


def resolve_pipeline(name_or_path: str | Path | None) -> Path:
    """Return the file of a pipeline given by name (``breast-dual-probe``) or path."""
    if name_or_path is None:
        name_or_path = DEFAULT_PIPELINE
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    named = PIPELINE_DIR / f"{name_or_path}.yaml"
    if named.is_file():
        return named
    raise ValueError(
        f"pipeline {str(name_or_path)!r} is neither a YAML file nor one of {available_pipelines()}"
    )


def load_pipeline(name_or_path: str | Path | None = None) -> PipelineConfig:
    """Read and validate a pipeline file.

    Parameters
    ----------
    name_or_path : str or Path, optional
        A name from :func:`available_pipelines` or a path to a YAML file;
        default ``breast-dual-probe``.

    Returns
    -------
    PipelineConfig

    Raises
    ------
    ValueError
        For unreadable YAML, unknown keys or values of the wrong type, naming the
        key and the file.
    """
    path = resolve_pipeline(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read pipeline file: {err}") from err
    return parse_pipeline(data, source=str(path))


def parse_pipeline(data: Any, *, source: str = "<memory>") -> PipelineConfig:
    """Validate an already loaded mapping into a :class:`PipelineConfig`.

    Examples
    --------
    >>> parse_pipeline({"name": "x", "count": {"min_area_um2": 30}}).analysis.count.min_area_um2
    30.0
    >>> parse_pipeline({"name": "x", "count": {"min_area": 30}})
    Traceback (most recent call last):
    ...
    ValueError: <memory>: unknown key 'count.min_area'; expected one of ...
    """
    where = _Where(source)
    mapping = where.mapping(data, "")
    where.known(
        mapping, "", {"name", "description", "rule_set", "image", "segment", "spots", "count"}
    )
    name = where.typed(mapping.get("name", Path(source).stem), "name", str)
    rule_set = where.typed(mapping.get("rule_set", "asco-cap-2018-breast-dual"), "rule_set", str)
    if rule_set not in RULE_SETS:
        where.fail("rule_set", f"unknown rule set {rule_set!r}; expected one of {list(RULE_SETS)}")
    image = where.mapping(mapping.get("image", {}), "image")
    where.known(image, "image", {"channels", "pixel_size_um", "channel_files", "tile_size"})
    spots = where.mapping(mapping.get("spots", {}), "spots")
    known = {*CHANNELS[1:], "project_z", "remove_crosstalk", "remove_debris", "register_channels"}
    where.known(spots, "spots", known)
    analysis = AnalysisParams(
        segment=where.kwargs(mapping.get("segment", {}), "segment", segment_nuclei),
        her2=where.kwargs(spots.get("her2", {}), "spots.her2", detect_spots),
        cep17=where.kwargs(spots.get("cep17", {}), "spots.cep17", detect_spots),
        count=where.dataclass(mapping.get("count", {}), "count", CountParams),
        project_z=where.typed(spots.get("project_z", True), "spots.project_z", bool),
        remove_crosstalk=where.typed(
            spots.get("remove_crosstalk", True), "spots.remove_crosstalk", bool
        ),
        remove_debris=where.typed(spots.get("remove_debris", True), "spots.remove_debris", bool),
        register_channels=where.typed(
            spots.get("register_channels", True), "spots.register_channels", bool
        ),
    )
    return PipelineConfig(
        name=name,
        description=where.typed(mapping.get("description", ""), "description", str),
        rule_set=rule_set,
        channels=where.channels(image.get("channels")),
        pixel_size_um=where.pixel_size(image.get("pixel_size_um")),
        channel_files=freeze(
            {
                key: where.typed(value, f"image.channel_files.{key}", str)
                for key, value in where.mapping(
                    image.get("channel_files", {}), "image.channel_files"
                ).items()
            }
        ),
        analysis=analysis,
        tile_size=where.typed(image.get("tile_size", 4096), "image.tile_size", int),
        source=source,
    )


@dataclass(frozen=True)
class _Where:
    """Validation helpers that name the file and the key in every error."""

    source: str

    def fail(self, key: str, problem: str) -> None:
        raise ValueError(f"{self.source}: {key}: {problem}")

    def mapping(self, value: Any, key: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(key or "top level", f"expected a mapping, got {value!r}")
        return value

    def known(self, mapping: Mapping[str, Any], key: str, allowed: set[str]) -> None:
        for name in mapping:
            if name not in allowed:
                full = f"{key}.{name}" if key else str(name)
                raise ValueError(
                    f"{self.source}: unknown key {full!r}; expected one of {sorted(allowed)}"
                )

    def typed(self, value: Any, key: str, kind: type) -> Any:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            self.fail(key, f"expected {kind.__name__}, got {value!r}")
        return value

    def check_default_type(self, value: Any, default: Any, key: str) -> Any:
        if default is None or default is inspect.Parameter.empty or value is None:
            return value
        kind = (
            float
            if isinstance(default, int | float) and not isinstance(default, bool)
            else type(default)
        )
        return self.typed(value, key, kind)

    def kwargs(self, value: Any, key: str, function: Callable[..., Any]) -> dict[str, Any]:
        mapping = self.mapping(value, key)
        parameters = {
            name: p
            for name, p in inspect.signature(function).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in _RESERVED
        }
        self.known(mapping, key, set(parameters))
        return {
            name: self.check_default_type(item, parameters[name].default, f"{key}.{name}")
            for name, item in mapping.items()
        }

    def dataclass(self, value: Any, key: str, cls: type) -> Any:
        mapping = self.mapping(value, key)
        defaults = {f.name: f.default for f in fields(cls)}
        self.known(mapping, key, set(defaults))
        checked = {
            name: self.check_default_type(item, defaults[name], f"{key}.{name}")
            for name, item in mapping.items()
        }
        return cls(**checked)

    def channels(self, value: Any) -> Mapping[str, int] | None:
        if value is None:
            return None
        mapping = self.mapping(value, "image.channels")
        self.known(mapping, "image.channels", set(CHANNELS))
        for name, index in mapping.items():
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                self.fail(f"image.channels.{name}", f"expected a channel index >= 0, got {index!r}")
        if "dapi" not in mapping or "her2" not in mapping:
            self.fail("image.channels", f"must give at least dapi and her2, got {dict(mapping)}")
        return freeze(dict(mapping))

    def pixel_size(self, value: Any) -> tuple[float, ...] | None:
        if value is None:
            return None
        values = [value, value] if isinstance(value, int | float) else value
        if (
            not isinstance(values, list | tuple)
            or len(values) not in (2, 3)
            or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in values
            )
        ):
            self.fail(
                "image.pixel_size_um",
                f"expected a positive number or [y, x] / [z, y, x] in micrometres, got {value!r}",
            )
        return tuple(float(v) for v in values)
