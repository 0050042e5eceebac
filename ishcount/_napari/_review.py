"""The review model behind the napari plugin, free of napari and Qt.

A :class:`ReviewSession` holds the analysed fields of one case (labels, spot
tables, cell tables), applies the reviewer's corrections (exclude or include a
nucleus, add, delete or move a signal, correct a cluster's copy estimate), keeps
an audit trail of every change and recomputes the case summary and its
classification through the public functions :func:`ishcount.assign.assign_spots`,
:func:`ishcount.assign.count_spots`, :func:`ishcount.score.score_case` and
:func:`ishcount.rules.classify`. The Qt widget is a thin view of it.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from ishcount.analyze import AnalysisParams, ImageResult, input_facts
from ishcount.assign import DEBRIS, CountParams, assign_spots, count_spots
from ishcount.image import FishImage
from ishcount.io import jsonable
from ishcount.rules import DEFAULT_RULE_SET, Classification, classify, get_rule_set, parse_ihc
from ishcount.score import CaseSummary, is_amplified, score_case
from ishcount.tables import CELL_SCHEMA, SPOT_SCHEMA, conform

#: ``exclusion_reason`` of a nucleus the reviewer excluded.
EXCLUDED_BY_REVIEWER = "excluded by reviewer"
#: Kinds of signal layer: single HER2 signals, single CEP17 signals, clusters (any channel).
SIGNAL_KINDS: tuple[str, ...] = ("her2", "cep17", "clusters")
#: Nucleus display states, in the order used by the nuclei layer colours.
NUCLEUS_STATES: tuple[str, ...] = ("scored", "amplified", "excluded")
#: Seed of the bootstrap, so that the same reviewed tables always give the same interval.
DEFAULT_SEED = 0


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ReviewEdit:
    """One manual change, as recorded in the audit trail of ``case.json``.

    Attributes
    ----------
    action : str
        ``"exclude nucleus"``, ``"include nucleus"``, ``"add signal"``,
        ``"delete signal"``, ``"move signal"`` or ``"set copies"``.
    image : str
        Field the change was made in.
    target : str
        What was changed, e.g. ``"nucleus 12"`` or ``"signal 40 (her2)"``.
    before, after : object
        JSON-ready state before and after the change (``None`` for none).
    reviewer : str
        Reviewer name, ``""`` if not given.
    time : str
        ISO 8601 UTC time of the change.

    Examples
    --------
    >>> edit = ReviewEdit("exclude nucleus", "f", "nucleus 3", True, False, "AB", "2026-01-01")
    >>> ReviewEdit.from_dict(edit.to_dict()) == edit
    True
    """

    action: str
    image: str
    target: str
    before: Any
    after: Any
    reviewer: str = ""
    time: str = field(default_factory=_now)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "action": self.action,
            "image": self.image,
            "target": self.target,
            "before": jsonable(self.before),
            "after": jsonable(self.after),
            "reviewer": self.reviewer,
            "time": self.time,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReviewEdit:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass
class ReviewField:
    """One analysed field inside a review session.

    Attributes
    ----------
    name : str
        Field name (the ``image`` column of the cell table).
    labels : ndarray of int32, shape (Y, X)
        Nucleus labels.
    spots : pandas.DataFrame
        Signals (:data:`ishcount.tables.SPOT_SCHEMA`).
    cells : pandas.DataFrame
        Nuclei (:data:`ishcount.tables.CELL_SCHEMA`).
    spacing_um : tuple of float
        Pixel size of the image, ``(y, x)`` or ``(z, y, x)``.
    image : FishImage or None
        The image, when available (its DAPI is used to re-check overlapping nuclei).
    roi : ndarray of bool, shape (Y, X), or None
        Region scored.
    masks : dict of str to str
        Mask files a batch run took for this field (``"nuclei"``, ``"roi"``: path), kept
        in the exported case record.
    lossy : str
        How the field's file was compressed with loss ("" when it was not).
    signal_sigma_um : tuple of float or None
        Signal size measured in each channel (um; None when unknown).
    probe_shift_px : dict of str to (int, int) or None
        Per probe channel, the shift against DAPI that the analysis undid (pixels).
    ridge_maxima : int
        Maxima on lines (autofluorescent fibres) the field's detection set aside.
    dapi_clipped : float
        Share of the field's nuclear area where DAPI reached the camera's maximum.
    """

    name: str
    labels: np.ndarray
    spots: pd.DataFrame
    cells: pd.DataFrame
    spacing_um: tuple[float, ...]
    image: FishImage | None = None
    roi: np.ndarray | None = None
    masks: dict[str, str] = field(default_factory=dict)
    lossy: str = ""
    signal_sigma_um: tuple[float | None, ...] = ()
    probe_shift_px: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    ridge_maxima: int = 0
    dapi_clipped: float = 0.0

    @property
    def ndim(self) -> int:
        """Dimensions of the image (2 or 3); signal positions have this many coordinates."""
        return len(self.spacing_um)


def _kind_mask(spots: pd.DataFrame, kind: str) -> np.ndarray:
    cluster = spots["is_cluster"].to_numpy(bool)
    if kind == "clusters":
        return cluster
    return (spots["channel"].to_numpy() == kind) & ~cluster


def _check_kind(kind: str) -> None:
    if kind not in SIGNAL_KINDS:
        raise ValueError(f"kind must be one of {SIGNAL_KINDS}, got {kind!r}")


def _check_copies(copies: Any) -> int:
    if isinstance(copies, bool) or int(copies) != copies or int(copies) < 1:
        raise ValueError(f"copies must be a whole number >= 1, got {copies!r}")
    return int(copies)


def field_facts(lossy: Any, facts: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`ReviewField` keywords ``lossy``, ``signal_sigma_um``, ``probe_shift_px``,
    ``ridge_maxima`` and ``dapi_clipped`` from :func:`ishcount.analyze.input_facts` and
    ``ImageResult.dapi_clipped`` (or a ``case.json`` image entry)."""
    shifts = facts.get("probe_shift_px") or {}
    return {
        "lossy": str(lossy or ""),
        "signal_sigma_um": tuple(facts.get("signal_sigma_um") or ()),
        "probe_shift_px": {c: None if v is None else tuple(v) for c, v in shifts.items()},
        "ridge_maxima": int(facts.get("ridge_maxima") or 0),
        "dapi_clipped": float(facts.get("dapi_clipped") or 0.0),
    }


class ReviewSession:
    """The reviewed state of one case: tables, manual corrections, audit trail, summary.

    Parameters
    ----------
    fields : sequence of ReviewField
        The analysed fields of the case (unique names).
    count_params : CountParams, optional
        Scorability rules used when nuclei are recounted after a signal edit.
    rule_set : str
        Guideline rule set for :func:`ishcount.score.score_case` and
        :func:`ishcount.rules.classify`.
    ihc : str or None
        Concurrent IHC score (``"0"``, ``"1+"``, ``"2+"``, ``"3+"``).
    reviewer : str
        Name written into each audit record.
    edits : sequence of ReviewEdit
        Audit trail of earlier changes (a reopened review); nucleus overrides are replayed from it.
    seed : int
        Bootstrap seed of the confidence intervals.

    Raises
    ------
    ValueError
        If ``fields`` is empty or names repeat, or for an unknown rule set or IHC score.

    Examples
    --------
    >>> from ishcount.synthetic import make_field
    >>> from ishcount.analyze import analyze_image
    >>> image = make_field("group1", shape=(256, 256), rng=1).image
    >>> session = ReviewSession.from_results([analyze_image(image)], images=[image])
    >>> label = int(session.cells.query("is_scored")["label"].iloc[0])
    >>> before = session.summary.n_nuclei
    >>> session.exclude_nucleus("field", label)
    True
    >>> session.summary.n_nuclei == before - 1, session.edits[-1].action
    (True, 'exclude nucleus')
    """

    def __init__(
        self,
        fields: Sequence[ReviewField],
        *,
        count_params: CountParams | None = None,
        rule_set: str = DEFAULT_RULE_SET,
        ihc: str | None = None,
        reviewer: str = "",
        edits: Sequence[ReviewEdit] = (),
        seed: int = DEFAULT_SEED,
    ) -> None:
        names = [f.name for f in fields]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"fields must be a non-empty sequence with unique names, got {names}")
        self.fields: dict[str, ReviewField] = {f.name: f for f in fields}
        self.count_params = count_params or CountParams()
        self.rule_set = get_rule_set(rule_set).name
        self.ihc = parse_ihc(ihc)
        self.reviewer = str(reviewer)
        self.seed = int(seed)
        self.edits: list[ReviewEdit] = list(edits)
        self.overrides: dict[tuple[str, int], bool] = {}
        for edit in self.edits:
            if edit.action in ("exclude nucleus", "include nucleus"):
                key = (edit.image, int(edit.target.split()[-1]))
                self.overrides[key] = edit.action == "include nucleus"
        self.dirty = False
        self._cache: tuple[CaseSummary, Classification] | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_results(
        cls,
        results: Sequence[ImageResult],
        *,
        images: Sequence[FishImage | None] | None = None,
        rois: Sequence[np.ndarray | None] | None = None,
        params: AnalysisParams | None = None,
        **kwargs: Any,
    ) -> ReviewSession:
        """Start a review from :func:`ishcount.analyze.analyze_image` results.

        Parameters
        ----------
        results : sequence of ImageResult
            One per field.
        images, rois : sequence, optional
            The images and ROI masks the results came from, in the same order.
        params : AnalysisParams, optional
            Parameters whose ``count`` rules are used for recounting; default: the first result's.
        **kwargs
            Passed to :class:`ReviewSession`.

        Returns
        -------
        ReviewSession
        """
        images = list(images) if images is not None else [None] * len(results)
        rois = list(rois) if rois is not None else [None] * len(results)
        fields = [
            ReviewField(
                r.name,
                r.labels,
                r.spots.copy(),
                r.cells.copy(),
                tuple(r.spacing_um),
                image,
                roi,
                **field_facts(
                    image.metadata.get("lossy") if image is not None else "",
                    {**input_facts(r.detection), "dapi_clipped": r.dapi_clipped},
                ),
            )
            for r, image, roi in zip(results, images, rois, strict=True)
        ]
        params = params or (results[0].params if results else None)
        count_params = params.count if params is not None else None
        if any(image is not None and image.cep17 is None for image in images) and count_params:
            count_params = replace(count_params, require_both_signals=False)
        return cls(fields, count_params=count_params, **kwargs)

    # ------------------------------------------------------------------ tables

    @property
    def cells(self) -> pd.DataFrame:
        """Cell table of all fields (:data:`ishcount.tables.CELL_SCHEMA`)."""
        return pd.concat([f.cells for f in self.fields.values()], ignore_index=True)

    @property
    def spots(self) -> pd.DataFrame:
        """Spot table of all fields, with an ``image`` column after the schema columns."""
        tables = [f.spots.assign(image=f.name) for f in self.fields.values()]
        return pd.concat(tables, ignore_index=True)

    def field(self, image: str) -> ReviewField:
        """Return the field called ``image``."""
        try:
            return self.fields[image]
        except KeyError:
            raise ValueError(f"image must be one of {list(self.fields)}, got {image!r}") from None

    def label_at(self, image: str, position: Sequence[float]) -> int:
        """Return the nucleus label under a position in pixels (last two coordinates y, x)."""
        labels = self.field(image).labels
        y, x = (round(float(c)) for c in tuple(position)[-2:])
        if 0 <= y < labels.shape[0] and 0 <= x < labels.shape[1]:
            return int(labels[y, x])
        return 0

    def nucleus_states(self, image: str) -> pd.DataFrame:
        """Return ``label`` and display ``state`` (see :data:`NUCLEUS_STATES`) of each nucleus.

        A scored nucleus is ``"amplified"`` when :func:`ishcount.score.is_amplified` says so.
        """
        cells = self.field(image).cells
        amplified = is_amplified(cells["n_her2"].to_numpy(), cells["n_cep17"].to_numpy())
        scored = cells["is_scored"].to_numpy(bool)
        state = np.where(scored, np.where(amplified, "amplified", "scored"), "excluded")
        return pd.DataFrame({"label": cells["label"].to_numpy(), "state": state})

    # ------------------------------------------------------------------ summary

    def _compute(self) -> tuple[CaseSummary, Classification]:
        if self._cache is None:
            spots = self.spots
            summary = score_case(
                self.cells,
                spots=spots,
                rng=self.seed,
                rule_set=self.rule_set,
                signal_sigma_um=[s for f in self.fields.values() for s in f.signal_sigma_um],
                lossy_inputs={name: f.lossy for name, f in self.fields.items()},
                ridge_maxima={name: f.ridge_maxima for name, f in self.fields.items()},
                dapi_clipped={name: f.dapi_clipped for name, f in self.fields.items()},
            )
            result = classify(summary, rule_set=self.rule_set, ihc=self.ihc)
            self._cache = (summary, result)
        return self._cache

    @property
    def summary(self) -> CaseSummary:
        """:func:`ishcount.score.score_case` of the reviewed tables."""
        return self._compute()[0]

    @property
    def classification(self) -> Classification:
        """:func:`ishcount.rules.classify` of :attr:`summary`."""
        return self._compute()[1]

    def set_ihc(self, ihc: str | int | None) -> None:
        """Change the IHC score used by the classification."""
        self.ihc = parse_ihc(ihc)
        self._cache = None

    # ------------------------------------------------------------------ edits

    def _record(self, action: str, image: str, target: str, before: Any, after: Any) -> None:
        self.edits.append(ReviewEdit(action, image, target, before, after, self.reviewer))
        self.dirty = True
        self._cache = None

    def _row(self, image: str, label: int) -> int:
        message = f"label {label!r} is not a nucleus of image {image!r}"
        return _first_row(self.field(image).cells, "label", label, message)

    def _apply_override(self, cells: pd.DataFrame, label: int, include: bool) -> None:
        row = np.flatnonzero(cells["label"].to_numpy() == label)
        if row.size:
            cells.loc[row[0], "is_scored"] = include
            cells.loc[row[0], "exclusion_reason"] = "" if include else EXCLUDED_BY_REVIEWER

    def set_nucleus_scored(self, image: str, label: int, scored: bool) -> bool:
        """Exclude (``scored=False``) or include a nucleus; return whether anything changed.

        Raises
        ------
        ValueError
            If ``label`` is not a nucleus of ``image``.
        """
        cells = self.field(image).cells
        row = self._row(image, label)
        before = bool(cells.loc[row, "is_scored"])
        if before == bool(scored):
            return False
        self.overrides[(image, int(label))] = bool(scored)
        self._apply_override(cells, int(label), bool(scored))
        action = "include nucleus" if scored else "exclude nucleus"
        self._record(action, image, f"nucleus {int(label)}", before, bool(scored))
        return True

    def exclude_nucleus(self, image: str, label: int) -> bool:
        """Exclude a nucleus from scoring (reason :data:`EXCLUDED_BY_REVIEWER`)."""
        return self.set_nucleus_scored(image, label, False)

    def include_nucleus(self, image: str, label: int) -> bool:
        """Score a nucleus the analysis excluded."""
        return self.set_nucleus_scored(image, label, True)

    def toggle_nucleus(self, image: str, label: int) -> bool:
        """Flip whether a nucleus is scored; return the new state."""
        scored = not bool(self.field(image).cells.loc[self._row(image, label), "is_scored"])
        self.set_nucleus_scored(image, label, scored)
        return scored

    def recount(self, image: str) -> None:
        """Re-assign the signals of a field to nuclei and recount them, keeping overrides."""
        fld = self.field(image)
        fld.spots = conform(
            assign_spots(fld.spots, fld.labels, spacing_um=fld.spacing_um), SPOT_SCHEMA
        )
        dapi = fld.image.dapi if fld.image is not None else None
        # Debris was recognised from signals the analysis then dropped; keep its verdict.
        under_debris = fld.cells.loc[fld.cells["exclusion_reason"] == DEBRIS, "label"]
        cells = count_spots(
            fld.spots,
            fld.labels,
            spacing_um=fld.spacing_um[-2:],
            image=image,
            dapi=dapi,
            roi=fld.roi,
            obscured=under_debris.to_numpy(np.int64),
            params=self.count_params,
        )
        for (name, label), include in self.overrides.items():
            if name == image:
                self._apply_override(cells, label, include)
        fld.cells = conform(cells, CELL_SCHEMA)
        self._cache = None

    def _spot_row(self, image: str, spot_id: int) -> int:
        message = f"spot_id {spot_id!r} is not a signal of image {image!r}"
        return _first_row(self.field(image).spots, "spot_id", spot_id, message)

    def _position(self, image: str, position: Sequence[float]) -> tuple[float, float, float]:
        coords = [float(c) for c in position]
        ndim = self.field(image).ndim
        if len(coords) not in (ndim, 2) or not all(np.isfinite(coords)):
            raise ValueError(
                f"position must hold {ndim} finite pixel coordinates, got {position!r}"
            )
        return (coords[0] if len(coords) == 3 else 0.0, coords[-2], coords[-1])

    def _insert_spot(self, image: str, kind: str, position: Sequence[float], copies: int) -> int:
        fld = self.field(image)
        z, y, x = self._position(image, position)
        spot_id = int(fld.spots["spot_id"].max()) + 1 if len(fld.spots) else 0
        row = dict.fromkeys(SPOT_SCHEMA, np.nan)
        row.update(spot_id=spot_id, channel="her2" if kind == "clusters" else kind, z=z, y=y, x=x)
        row.update(is_cluster=kind == "clusters", copies=copies, label=0)
        row.update(in_cytoplasm=False, saturated=False)
        new = pd.DataFrame([row]).astype(SPOT_SCHEMA)
        fld.spots = pd.concat([fld.spots, new], ignore_index=True) if len(fld.spots) else new
        target = f"signal {spot_id} ({kind})"
        self._record("add signal", image, target, None, {"z": z, "y": y, "x": x, "copies": copies})
        return spot_id

    def _remove_spot(self, image: str, spot_id: int) -> None:
        fld = self.field(image)
        row = fld.spots.iloc[self._spot_row(image, spot_id)]
        before = {k: jsonable(row[k]) for k in ("channel", "z", "y", "x", "copies")}
        fld.spots = fld.spots.drop(index=fld.spots.index[self._spot_row(image, spot_id)])
        fld.spots = fld.spots.reset_index(drop=True)
        self._record("delete signal", image, f"signal {int(spot_id)}", before, None)

    def add_signal(
        self, image: str, kind: str, position: Sequence[float], *, copies: int = 1
    ) -> int:
        """Add a signal the analysis missed and recount; return its new ``spot_id``.

        Parameters
        ----------
        image : str
            Field name.
        kind : {"her2", "cep17", "clusters"}
            Channel of a single signal, or ``"clusters"`` for a HER2 cluster.
        position : sequence of float
            ``(y, x)`` or ``(z, y, x)`` in pixels.
        copies : int
            Copies the signal stands for (estimated copies of a cluster).
        """
        _check_kind(kind)
        spot_id = self._insert_spot(image, kind, position, _check_copies(copies))
        self.recount(image)
        return spot_id

    def delete_signal(self, image: str, spot_id: int) -> None:
        """Delete a false signal and recount."""
        self._remove_spot(image, spot_id)
        self.recount(image)

    def set_copies(self, image: str, spot_id: int, copies: int) -> bool:
        """Correct the estimated copies of a signal (a cluster) and recount.

        Returns
        -------
        bool
            Whether the value changed.
        """
        copies = _check_copies(copies)
        spots = self.field(image).spots
        row = self._spot_row(image, spot_id)
        before = int(spots.loc[row, "copies"])
        if before == copies:
            return False
        spots.loc[row, "copies"] = copies
        self._record("set copies", image, f"signal {int(spot_id)}", before, copies)
        self.recount(image)
        return True

    def sync_signals(
        self,
        image: str,
        kind: str,
        positions: np.ndarray,
        spot_ids: np.ndarray,
        copies: np.ndarray | None = None,
    ) -> np.ndarray:
        """Bring one kind of signal in line with an edited points layer, then recount once.

        Signals of ``kind`` whose ids are missing from ``spot_ids`` are deleted; rows with a
        negative id are added; rows whose position changed are moved. Every change is recorded.

        Parameters
        ----------
        image : str
            Field name.
        kind : {"her2", "cep17", "clusters"}
            Which signals the layer shows.
        positions : ndarray, shape (n, 2) or (n, 3)
            Pixel coordinates of the layer's points.
        spot_ids : ndarray of int, shape (n,)
            ``spot_id`` of each point, negative for points the reviewer added.
        copies : ndarray of int, shape (n,), optional
            Copies of added points (default 1).

        Returns
        -------
        ndarray of int64, shape (n,)
            The spot id of every row (new ids for the added rows).
        """
        _check_kind(kind)
        positions = np.asarray(positions, dtype=float).reshape(len(spot_ids), -1)
        ids = np.asarray(spot_ids, dtype=np.int64).copy()
        copies = np.ones(len(ids), np.int64) if copies is None else np.asarray(copies, np.int64)
        fld = self.field(image)
        current = fld.spots[_kind_mask(fld.spots, kind)]
        for spot_id in sorted(set(current["spot_id"].tolist()) - set(ids.tolist())):
            self._remove_spot(image, int(spot_id))
        for row in np.flatnonzero(ids >= 0):
            self._move_if_changed(image, int(ids[row]), positions[row])
        for row in np.flatnonzero(ids < 0):
            ids[row] = self._insert_spot(image, kind, positions[row], _check_copies(copies[row]))
        self.recount(image)
        return ids

    def _move_if_changed(self, image: str, spot_id: int, position: np.ndarray) -> None:
        spots = self.field(image).spots
        row = self._spot_row(image, spot_id)
        z, y, x = self._position(image, position)
        old = spots.loc[row, ["z", "y", "x"]].to_numpy(float)
        if np.allclose(old, (z, y, x), atol=1e-6):
            return
        spots.loc[row, ["z", "y", "x"]] = (z, y, x)
        before = dict(zip("zyx", old.tolist(), strict=True))
        self._record("move signal", image, f"signal {spot_id}", before, {"z": z, "y": y, "x": x})

    def mark_saved(self) -> None:
        """Record that the current state has been written."""
        self.dirty = False


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def summary_rows(summary: CaseSummary, result: Classification) -> list[tuple[str, str]]:
    """Return the live summary panel as ``(name, value)`` rows of plain text.

    Parameters
    ----------
    summary : CaseSummary
        From :func:`ishcount.score.score_case`.
    result : Classification
        From :func:`ishcount.rules.classify`.

    Returns
    -------
    list of (str, str)

    Examples
    --------
    >>> cells = pd.DataFrame({"image": ["a", "b"] * 10, "label": range(20),
    ...                       "n_her2": [9, 7] * 10, "n_cep17": [2] * 20, "is_scored": True})
    >>> summary = score_case(cells, rng=0)
    >>> dict(summary_rows(summary, classify(summary)))["Ratio HER2/CEP17"][:4]
    '4.00'
    """
    ci = summary.ratio_ci
    ratio = _fmt(summary.ratio)
    if ci is not None:
        ratio += f" ({summary.ci_level:.0%} CI {ci[0]:.2f}-{ci[1]:.2f})"
    tripped = [flag.message for flag in summary.quality_flags if flag.tripped]
    return [
        ("Nuclei scored", f"{summary.n_nuclei} (excluded {summary.n_excluded})"),
        ("Mean HER2", _fmt(summary.mean_her2)),
        ("Mean CEP17", _fmt(summary.mean_cep17)),
        ("Ratio HER2/CEP17", ratio),
        ("Group", "n/a" if result.group is None else str(result.group)),
        ("Call", result.call),
        ("Comment", result.comment or "-"),
        ("Quality flags", "; ".join(tripped) if tripped else "none tripped"),
    ]


def _first_row(table: pd.DataFrame, column: str, value: int, message: str) -> int:
    """Position of the first row whose ``column`` equals ``value``; ValueError(message) if none."""
    rows = np.flatnonzero(table[column].to_numpy() == int(value))
    if rows.size == 0:
        raise ValueError(message)
    return int(rows[0])
