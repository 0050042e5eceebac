"""Guideline rule sets for HER2 in-situ hybridization results.

Pure, table-driven and stdlib-only (the synthetic generator imports it). The
source of every rule is ``her2-ish-rules.md`` (ASCO/CAP 2018 focused update,
Wolff et al., J Clin Oncol 2018;36:2105-2122, affirmed by the 2023 update).

Each rule set is a small immutable :class:`RuleSet`: a table of result bands
(:class:`Band`, one row per ISH group or category) and a table of work-up rows
(:class:`WorkupRule`, one per band and IHC score). :func:`classify` applies one
rule set to hand counts (:class:`Counts`) or to a case summary from
:func:`ishcount.score.score_case` and returns a :class:`Classification` that
carries the inputs, group, call, comment, remaining work-up and its reasons.

Examples
--------
>>> from ishcount.rules import Counts, classify
>>> result = classify(Counts(n_nuclei=20, total_her2=92, total_cep17=40, n_fields=2), ihc="2+")
>>> result.group, result.call, result.ihc_category
(1, 'positive', None)
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

# --------------------------------------------------------------------------- calls

POSITIVE = "positive"
NEGATIVE = "negative"
NEGATIVE_WITH_COMMENT = "negative with comment"
WORKUP_REQUIRED = "work-up required"
ADJUDICATION_REQUIRED = "adjudication required"
INDETERMINATE = "indeterminate"
INSUFFICIENT = "insufficient"

#: Every call a :class:`Classification` can carry.
CALLS: tuple[str, ...] = (
    POSITIVE,
    NEGATIVE,
    NEGATIVE_WITH_COMMENT,
    WORKUP_REQUIRED,
    ADJUDICATION_REQUIRED,
    INDETERMINATE,
    INSUFFICIENT,
)

#: Immunohistochemistry scores accepted as ``ihc`` (IHC 2+ is equivocal).
IHC_SCORES: tuple[str, ...] = ("0", "1+", "2+", "3+")

#: Relative half-width of the "near a cut-off" band: the kit's [1.80, 2.20] around 2.0,
#: applied by analogy to the mean HER2 cut-offs (4.0 -> [3.6, 4.4], 6.0 -> [5.4, 6.6]).
NEAR_CUTOFF_FRACTION = 0.10

HER2_LOW_SOURCE = (
    "Wolff AC et al., J Clin Oncol 2023;41:3867-3872 (ASCO/CAP update: distinguish IHC 0 from 1+)"
)

_RECOUNT_STEP = (
    "blinded recount of at least 20 more nuclei by a second observer in the IHC 2+ area, "
    "ISH and IHC slides reviewed together"
)
_IHC_STEP = "concurrent IHC on the same tissue, ISH and IHC slides reviewed together"
_ADJUDICATION_STEP = "adjudicate the two counts by the laboratory's own procedure"


# --------------------------------------------------------------------------- input records


def _check_count(name: str, value: Any, *, integer: bool) -> int | float:
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        noun = "an integer" if integer else "a number"
        raise TypeError(f"{name} must be {noun}, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite non-negative count, got {value!r}")
    return int(value) if integer or float(value).is_integer() else float(value)


@dataclass(frozen=True)
class Counts:
    """Signal counts over the scored nuclei of one tumour population.

    Parameters
    ----------
    n_nuclei : int
        Number of scored nuclei.
    total_her2 : int or float
        Total HER2 signals (copies, cluster estimates included) over those nuclei.
    total_cep17 : int or float or None
        Total CEP17 signals; ``None`` for a single-probe assay.
    n_fields : int or None
        Number of separate tumour areas (fields, images) that contributed. ``None`` for a
        count at the microscope where it was not recorded: the two-field rule is then
        reported as unchecked instead of refusing the count.

    Raises
    ------
    TypeError
        If a value is not a number (``n_nuclei`` and ``n_fields`` must be integers).
    ValueError
        If a value is negative, NaN or infinite, or signals are given for zero nuclei.

    Examples
    --------
    >>> counts = Counts(n_nuclei=20, total_her2=92, total_cep17=40)
    >>> counts.mean_her2, counts.mean_cep17, counts.ratio
    (4.6, 2.0, 2.3)
    """

    n_nuclei: int
    total_her2: int | float
    total_cep17: int | float | None
    n_fields: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_nuclei", _check_count("n_nuclei", self.n_nuclei, integer=True))
        her2 = _check_count("total_her2", self.total_her2, integer=False)
        object.__setattr__(self, "total_her2", her2)
        if self.total_cep17 is not None:
            cep17 = _check_count("total_cep17", self.total_cep17, integer=False)
            object.__setattr__(self, "total_cep17", cep17)
        if self.n_fields is not None:
            n_fields = _check_count("n_fields", self.n_fields, integer=True)
            object.__setattr__(self, "n_fields", n_fields)
        if self.n_nuclei == 0 and (her2 > 0 or (self.total_cep17 or 0) > 0):
            raise ValueError(
                f"n_nuclei is 0 but signals were given (total_her2={self.total_her2!r}, "
                f"total_cep17={self.total_cep17!r})"
            )

    @property
    def mean_her2(self) -> float | None:
        """Mean HER2 signals per scored nucleus (``None`` with no nuclei)."""
        return self.total_her2 / self.n_nuclei if self.n_nuclei else None

    @property
    def mean_cep17(self) -> float | None:
        """Mean CEP17 signals per scored nucleus (``None`` with no nuclei or no CEP17 probe)."""
        if not self.n_nuclei or self.total_cep17 is None:
            return None
        return self.total_cep17 / self.n_nuclei

    @property
    def ratio(self) -> float | None:
        """Total HER2 / total CEP17, a ratio of sums (``None`` when total CEP17 is 0 or absent)."""
        if not self.total_cep17:
            return None
        return self.total_her2 / self.total_cep17

    def to_dict(self) -> dict[str, Any]:
        """Return the four counts as a JSON-ready dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class QualityFlag:
    """One quality check that image analysis can measure, with its figure and limit.

    Parameters
    ----------
    name : str
        Short identifier, e.g. ``"signals_outside_nuclei"``.
    value : float
        The measured figure (a fraction for shares).
    limit : float
        The limit the figure is compared with.
    tripped : bool
        True when the figure breaks the limit; a tripped flag makes the result indeterminate.
    message : str
        One plain sentence giving the figure and the limit.

    Examples
    --------
    >>> QualityFlag("weak_signals", 0.3, 0.25, True, "30% of signals are weak (limit 25%).").tripped
    True
    """

    name: str
    value: float
    limit: float
    tripped: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        """Return the flag as a JSON-ready dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@runtime_checkable
class SupportsCounts(Protocol):
    """What :func:`classify` reads from a case summary (e.g. :class:`ishcount.score.CaseSummary`).

    ``counts`` are the pooled counts, ``quality_flags`` the measured checks and ``notes``
    plain sentences (heterogeneity, confidence intervals) copied into the reasons.
    """

    counts: Counts
    quality_flags: tuple[QualityFlag, ...]
    notes: tuple[str, ...]


# --------------------------------------------------------------------------- rule tables


def _in_range(value: float, low: float | None, high: float | None) -> bool:
    return (low is None or value >= low) and (high is None or value < high)


@dataclass(frozen=True)
class Band:
    """One row of a rule set's result table: a range of ratio and mean HER2 per cell.

    Lower bounds are inclusive and upper bounds exclusive (a boundary value belongs to
    the higher band); ``None`` means unbounded, and a rule set whose bands all leave the
    ratio unbounded ignores it.

    Parameters
    ----------
    key : str
        Name of the band, e.g. ``"group 4"`` or ``"equivocal"``.
    group : int or None
        ASCO/CAP 2018 dual-probe group number, ``None`` for other rule sets.
    ratio_min, ratio_max, mean_min, mean_max : float or None
        Bounds of the band.
    call : str
        The initial ISH call, one of :data:`CALLS`.
    comment : str
        The report comment for this band (empty when none is required).

    Examples
    --------
    >>> band = Band("group 1", 1, 2.0, None, 4.0, None, "positive")
    >>> band.contains(2.0, 4.0), band.contains(1.99, 4.0)
    (True, False)
    """

    key: str
    group: int | None
    ratio_min: float | None
    ratio_max: float | None
    mean_min: float | None
    mean_max: float | None
    call: str
    comment: str = ""

    def contains(self, ratio: float | None, mean_her2: float) -> bool:
        """Return True when ``(ratio, mean_her2)`` falls in this band."""
        uses_ratio = self.ratio_min is not None or self.ratio_max is not None
        if uses_ratio and (ratio is None or not _in_range(ratio, self.ratio_min, self.ratio_max)):
            return False
        return _in_range(mean_her2, self.mean_min, self.mean_max)


@dataclass(frozen=True)
class WorkupRule:
    """One row of a work-up table: what a concurrent IHC score decides for one band.

    Parameters
    ----------
    band : str
        Key of the :class:`Band` this row applies to.
    ihc : str
        IHC score, one of :data:`IHC_SCORES`.
    call : str
        The call once this row's conditions are met.
    needs_recount : bool
        True when ``call`` holds only after a blinded recount that stays in the same band.
    further_step : str
        Work-up that still remains (then ``call`` is :data:`WORKUP_REQUIRED`).

    Examples
    --------
    >>> WorkupRule("group 3", "2+", "positive", needs_recount=True).needs_recount
    True
    """

    band: str
    ihc: str
    call: str
    needs_recount: bool = False
    further_step: str = ""


@dataclass(frozen=True)
class RuleSet:
    """A versioned, immutable guideline rule set.

    Parameters
    ----------
    name : str
        Identifier used to select it, e.g. ``"asco-cap-2018-breast-dual"``.
    version : str
        Version of this encoding of the guideline.
    title : str
        Human-readable title.
    site : str
        ``"breast"`` or ``"gastroesophageal"``.
    probe : str
        ``"dual"`` (HER2 and CEP17) or ``"single"`` (HER2 only).
    sources : tuple of str
        Citations.
    bands : tuple of Band
        Result table; the bands cover every input exactly once.
    workup : tuple of WorkupRule
        What a concurrent IHC score decides for bands whose initial call is
        :data:`WORKUP_REQUIRED`.
    her2_low : bool
        Whether the HER2-low / HER2-0 annotation applies (breast rule sets).
    min_nuclei, min_fields, min_recount_nuclei : int
        Counting rules: at least 20 nuclei in at least two fields; recounts of at least 20.

    Examples
    --------
    >>> rules = RULE_SETS["asco-cap-2018-breast-dual"]
    >>> rules.band_for(2.0, 3.99).key, rules.near_cutoff_ranges("ratio")
    ('group 2', ((1.8, 2.2),))
    """

    name: str
    version: str
    title: str
    site: str
    probe: str
    sources: tuple[str, ...]
    bands: tuple[Band, ...]
    workup: tuple[WorkupRule, ...] = ()
    her2_low: bool = False
    min_nuclei: int = 20
    min_fields: int = 2
    min_recount_nuclei: int = 20

    @property
    def uses_ratio(self) -> bool:
        """True when the bands depend on the HER2/CEP17 ratio."""
        return any(b.ratio_min is not None or b.ratio_max is not None for b in self.bands)

    def band_for(self, ratio: float | None, mean_her2: float) -> Band:
        """Return the band holding ``(ratio, mean_her2)``.

        Parameters
        ----------
        ratio : float or None
            HER2/CEP17 ratio of sums; ignored (may be ``None``) for single-probe rule sets.
        mean_her2 : float
            Mean HER2 signals per nucleus.

        Returns
        -------
        Band

        Raises
        ------
        ValueError
            If a value is negative or NaN, or the ratio is missing for a ratio-based set.

        Examples
        --------
        >>> RULE_SETS["asco-cap-2018-breast-dual"].band_for(1.99, 6.0).group
        3
        """
        values = {"mean_her2": mean_her2}
        if self.uses_ratio:
            values["ratio"] = ratio
        for name, value in values.items():
            if not isinstance(value, numbers.Real) or math.isnan(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        matches = [band for band in self.bands if band.contains(ratio, mean_her2)]
        if len(matches) != 1:  # pragma: no cover - guarded by the rule-table tests
            raise RuntimeError(f"rule set {self.name!r} matched {len(matches)} bands")
        return matches[0]

    def workup_for(self, band: str, ihc: str) -> WorkupRule | None:
        """Return the work-up row for ``band`` and IHC score ``ihc``, or ``None``.

        Examples
        --------
        >>> RULE_SETS["asco-cap-2018-breast-dual"].workup_for("group 2", "3+").call
        'positive'
        """
        for rule in self.workup:
            if rule.band == band and rule.ihc == ihc:
                return rule
        return None

    def near_cutoff_ranges(self, quantity: str) -> tuple[tuple[float, float], ...]:
        """Return the closed ranges around each cut-off of ``quantity`` ("ratio" or "mean").

        Each cut-off ``c`` gives ``[c * (1 - f), c * (1 + f)]`` with
        ``f = NEAR_CUTOFF_FRACTION``; for the ratio cut-off 2.0 that is the kit's [1.80, 2.20].

        Examples
        --------
        >>> RULE_SETS["asco-cap-2018-breast-dual"].near_cutoff_ranges("mean")
        ((3.6, 4.4), (5.4, 6.6))
        """
        if quantity not in ("ratio", "mean"):
            raise ValueError(f"quantity must be 'ratio' or 'mean', got {quantity!r}")
        bounds = {
            value
            for band in self.bands
            for value in (getattr(band, f"{quantity}_min"), getattr(band, f"{quantity}_max"))
            if value is not None
        }
        f = NEAR_CUTOFF_FRACTION
        return tuple((round(c * (1 - f), 12), round(c * (1 + f), 12)) for c in sorted(bounds))

    def describe(self) -> str:
        """Return a one-line description: name, version and title."""
        return f"{self.name} (version {self.version}): {self.title}"


# --------------------------------------------------------------------------- the rule sets

_COMMENT_GROUP_2 = (
    "The ratio is 2.0 or more but the mean is fewer than 4.0 HER2 signals per cell. Evidence "
    "that HER2-targeted therapy helps in this small subset is limited, and the early adjuvant "
    "trastuzumab trials showed no clear benefit in it. HER2 status should be decided by "
    "concurrent IHC; unless IHC is 3+, the specimen should be considered HER2 negative."
)
_COMMENT_GROUP_3 = (
    "The ratio is below 2.0 with a mean of 6.0 or more HER2 signals per cell. Patients with "
    "such results were not eligible for the first adjuvant trastuzumab trials and the data "
    "on benefit are insufficient. With concurrent IHC 0 or 1+, the specimen should be "
    "considered HER2 negative."
)
_COMMENT_GROUP_4 = (
    "The ratio is below 2.0 with a mean of 4.0 to fewer than 6.0 HER2 signals per cell. "
    "Whether HER2-targeted therapy helps without protein overexpression is uncertain, and "
    "results this close to the ratio cut-off are more likely to change on repeat testing by "
    "chance alone. Unless IHC is 3+, the specimen should be considered HER2 negative without "
    "further testing of this specimen."
)

_SOURCES_2018 = (
    "Wolff AC et al., J Clin Oncol 2018;36:2105-2122 (ASCO/CAP focused update, Figures 2-6)",
    "Wolff AC et al., J Clin Oncol 2023;41:3867-3872 (affirms 2018; no ISH rule changed)",
)


def _workup_2018_dual() -> tuple[WorkupRule, ...]:
    rows = []
    for group, after_recount in (
        (2, NEGATIVE_WITH_COMMENT),
        (3, POSITIVE),
        (4, NEGATIVE_WITH_COMMENT),
    ):
        band = f"group {group}"
        rows += [
            WorkupRule(band, "3+", POSITIVE),
            WorkupRule(band, "2+", after_recount, needs_recount=True),
            WorkupRule(band, "1+", NEGATIVE_WITH_COMMENT),
            WorkupRule(band, "0", NEGATIVE_WITH_COMMENT),
        ]
    return tuple(rows)


def _ihc_decides(band: str, on_2plus: str) -> tuple[WorkupRule, ...]:
    return (
        WorkupRule(band, "3+", POSITIVE),
        WorkupRule(band, "2+", WORKUP_REQUIRED, further_step=on_2plus),
        WorkupRule(band, "1+", NEGATIVE),
        WorkupRule(band, "0", NEGATIVE),
    )


BREAST_DUAL_2018 = RuleSet(
    name="asco-cap-2018-breast-dual",
    version="2018.1",
    title="ASCO/CAP 2018 breast, dual-probe ISH (groups 1-5; affirmed unchanged in 2023)",
    site="breast",
    probe="dual",
    sources=_SOURCES_2018,
    bands=(
        Band("group 1", 1, 2.0, None, 4.0, None, POSITIVE),
        Band("group 2", 2, 2.0, None, None, 4.0, WORKUP_REQUIRED, _COMMENT_GROUP_2),
        Band("group 3", 3, None, 2.0, 6.0, None, WORKUP_REQUIRED, _COMMENT_GROUP_3),
        Band("group 4", 4, None, 2.0, 4.0, 6.0, WORKUP_REQUIRED, _COMMENT_GROUP_4),
        Band("group 5", 5, None, 2.0, None, 4.0, NEGATIVE),
    ),
    workup=_workup_2018_dual(),
    her2_low=True,
)

BREAST_SINGLE_2018 = RuleSet(
    name="asco-cap-2018-breast-single",
    version="2018.1",
    title="ASCO/CAP 2018 breast, single-probe ISH (mean HER2 per cell only)",
    site="breast",
    probe="single",
    sources=_SOURCES_2018,
    bands=(
        Band("mean >= 6.0", None, None, None, 6.0, None, POSITIVE),
        Band("4.0 <= mean < 6.0", None, None, None, 4.0, 6.0, WORKUP_REQUIRED),
        Band("mean < 4.0", None, None, None, None, 4.0, NEGATIVE),
    ),
    workup=_ihc_decides("4.0 <= mean < 6.0", "dual-probe ISH on the same specimen decides"),
    her2_low=True,
)

GASTROESOPHAGEAL_2016 = RuleSet(
    name="cap-ascp-asco-2016-gastroesophageal",
    version="2016.1",
    title="CAP/ASCP/ASCO 2016 gastroesophageal adenocarcinoma (ratio >= 2.0 positive)",
    site="gastroesophageal",
    probe="dual",
    sources=(
        "Bartley AN et al., Arch Pathol Lab Med 2016;140:1345-1363 (CAP/ASCP/ASCO)",
        "Bang YJ et al., Lancet 2010;376:687-697 (ToGA trial definition)",
    ),
    bands=(
        Band("ratio >= 2.0", None, 2.0, None, None, None, POSITIVE),
        Band("ratio < 2.0", None, None, 2.0, None, None, NEGATIVE),
    ),
)

BREAST_DUAL_2013 = RuleSet(
    name="asco-cap-2013-breast-dual",
    version="2013.1",
    title="ASCO/CAP 2013 breast, dual-probe ISH (legacy: has an equivocal category)",
    site="breast",
    probe="dual",
    sources=("Wolff AC et al., J Clin Oncol 2013;31:3997-4013 (ASCO/CAP update)",),
    bands=(
        Band("positive (ratio >= 2.0)", None, 2.0, None, None, None, POSITIVE),
        Band("positive (mean >= 6.0)", None, None, 2.0, 6.0, None, POSITIVE),
        Band("equivocal", None, None, 2.0, 4.0, 6.0, WORKUP_REQUIRED),
        Band("negative", None, None, 2.0, None, 4.0, NEGATIVE),
    ),
    workup=_ihc_decides(
        "equivocal",
        "reflex test: alternative ISH (alternative chromosome 17 probe) or a new specimen",
    ),
)

#: Rule sets by name (read-only).
RULE_SETS: Mapping[str, RuleSet] = MappingProxyType(
    {
        rules.name: rules
        for rules in (BREAST_DUAL_2018, BREAST_SINGLE_2018, GASTROESOPHAGEAL_2016, BREAST_DUAL_2013)
    }
)

#: The default rule set (the 2023 update changed no ISH rule).
DEFAULT_RULE_SET = BREAST_DUAL_2018.name


def get_rule_set(rule_set: str | RuleSet) -> RuleSet:
    """Return a rule set by name (a :class:`RuleSet` is returned unchanged).

    Raises
    ------
    ValueError
        If the name is unknown, listing the known names.

    Examples
    --------
    >>> get_rule_set("cap-ascp-asco-2016-gastroesophageal").version
    '2016.1'
    """
    if isinstance(rule_set, RuleSet):
        return rule_set
    try:
        return RULE_SETS[rule_set]
    except (KeyError, TypeError):
        raise ValueError(f"rule_set must be one of {sorted(RULE_SETS)}, got {rule_set!r}") from None


def dual_probe_group(ratio: float, mean_her2: float) -> int:
    """Return the ASCO/CAP 2018 dual-probe ISH group (1-5) for a breast case.

    Parameters
    ----------
    ratio : float
        Total HER2 signals / total CEP17 signals over the scored nuclei (a ratio of sums).
    mean_her2 : float
        Mean HER2 signals per scored nucleus.

    Returns
    -------
    int
        Group 1 (ratio >= 2.0, mean >= 4.0), 2 (ratio >= 2.0, mean < 4.0),
        3 (ratio < 2.0, mean >= 6.0), 4 (ratio < 2.0, 4.0 <= mean < 6.0) or
        5 (ratio < 2.0, mean < 4.0). Boundaries belong to the higher band and
        unrounded values are compared.

    Raises
    ------
    ValueError
        If either value is negative or NaN.

    Examples
    --------
    >>> dual_probe_group(2.0, 4.0), dual_probe_group(1.99, 6.0), dual_probe_group(1.2, 2.1)
    (1, 3, 5)
    """
    for name, value in (("ratio", ratio), ("mean_her2", mean_her2)):
        if not (isinstance(value, int | float) and not math.isnan(value) and value >= 0):
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    if ratio >= 2.0:
        return 1 if mean_her2 >= 4.0 else 2
    if mean_her2 >= 6.0:
        return 3
    return 4 if mean_her2 >= 4.0 else 5


def parse_ihc(ihc: str | int | None) -> str | None:
    """Return the canonical IHC score (``"0"``, ``"1+"``, ``"2+"``, ``"3+"``) or ``None``.

    Accepts those strings (surrounding spaces ignored) and the integers 0-3.

    Raises
    ------
    ValueError
        If the score is not one of them, e.g. ``"4+"``.

    Examples
    --------
    >>> parse_ihc(" 2+ "), parse_ihc(3), parse_ihc(None)
    ('2+', '3+', None)
    """
    if ihc is None:
        return None
    if isinstance(ihc, numbers.Integral) and not isinstance(ihc, bool) and 0 <= ihc <= 3:
        return IHC_SCORES[int(ihc)]
    if isinstance(ihc, str) and ihc.strip() in IHC_SCORES:
        return ihc.strip()
    raise ValueError(f"ihc must be one of {IHC_SCORES} (or None), got {ihc!r}")


# --------------------------------------------------------------------------- the result


def _tuple_of(values: Any, kind: type | None = None) -> tuple[Any, ...]:
    if kind is None:
        return tuple(values)
    return tuple(v if isinstance(v, kind) else kind(**v) for v in values)


@dataclass(frozen=True)
class Classification:
    """The result of applying one rule set to one case.

    Attributes
    ----------
    rule_set, rule_set_version : str
        Which rules were applied.
    call : str
        One of :data:`CALLS`.
    group : int or None
        ASCO/CAP 2018 dual-probe group (``None`` for other rule sets or an undefined ratio).
    band : str or None
        Key of the result band (``"group 4"``, ``"equivocal"``, ...); ``None`` if undefined.
    comment : str
        The report comment required for this result (empty when none).
    workup : tuple of str
        Work-up that is still required before the result is final.
    recommendations : tuple of str
        Advice that does not block the result (e.g. count 20 more nuclei near a cut-off).
    reasons : tuple of str
        Plain sentences explaining the result, inputs first.
    annotations : tuple of str
        Annotations beside the ASCO/CAP result (HER2-low, HER2-0), with their source.
    ihc : str or None
        The IHC score supplied.
    ihc_category : str or None
        ``"HER2-low"`` or ``"HER2-0"`` when the annotation applies.
    counts, recount : Counts or None
        The counts classified, and the blinded recount if one was supplied.
    recount_band : str or None
        Band of the recount on its own.
    ratio, mean_her2, mean_cep17 : float or None
        Unrounded derived values of ``counts``.
    quality_flags : tuple of QualityFlag
        All measured checks, tripped or not.

    Examples
    --------
    >>> result = classify(Counts(20, 70, 40, n_fields=2))
    >>> Classification.from_json(result.to_json()) == result
    True
    """

    rule_set: str
    rule_set_version: str
    call: str
    group: int | None
    band: str | None
    comment: str
    workup: tuple[str, ...]
    recommendations: tuple[str, ...]
    reasons: tuple[str, ...]
    annotations: tuple[str, ...]
    ihc: str | None
    ihc_category: str | None
    counts: Counts
    recount: Counts | None
    recount_band: str | None
    ratio: float | None
    mean_her2: float | None
    mean_cep17: float | None
    quality_flags: tuple[QualityFlag, ...] = ()

    @property
    def is_final(self) -> bool:
        """True for a positive or negative call with nothing left to do."""
        return self.call in (POSITIVE, NEGATIVE, NEGATIVE_WITH_COMMENT)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (tuples become lists, records become dicts)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Counts | QualityFlag):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = [v.to_dict() if isinstance(v, QualityFlag) else v for v in value]
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Classification:
        """Rebuild a classification from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            If keys are missing or unknown.
        """
        names = {f.name for f in fields(cls)}
        if set(data) != names:
            raise ValueError(
                f"data keys do not match Classification: missing {sorted(names - set(data))}, "
                f"unknown {sorted(set(data) - names)}"
            )
        values = dict(data)
        values["counts"] = Counts(**values["counts"])
        values["recount"] = Counts(**values["recount"]) if values["recount"] else None
        values["quality_flags"] = _tuple_of(values["quality_flags"], QualityFlag)
        for name in ("workup", "recommendations", "reasons", "annotations"):
            values[name] = _tuple_of(values[name])
        return cls(**values)

    def to_json(self, **kwargs: Any) -> str:
        """Return :meth:`to_dict` as a JSON string (``kwargs`` go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    @classmethod
    def from_json(cls, text: str) -> Classification:
        """Rebuild a classification from :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))


# --------------------------------------------------------------------------- classify


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.2f}"


def _describe_counts(counts: Counts, what: str = "Counted") -> str:
    fields_text = (
        "fields not recorded" if counts.n_fields is None else f"{counts.n_fields} field(s)"
    )
    text = f"{what}: {counts.n_nuclei} nuclei ({fields_text}), {counts.total_her2:g} HER2"
    if counts.total_cep17 is None:
        return f"{text} signals; mean HER2 {_fmt(counts.mean_her2)} per cell."
    return (
        f"{text} and {counts.total_cep17:g} CEP17 signals; mean HER2 {_fmt(counts.mean_her2)}, "
        f"mean CEP17 {_fmt(counts.mean_cep17)} per cell, HER2/CEP17 ratio "
        f"{_fmt(counts.ratio)} (ratio of sums)."
    )


@dataclass
class _Draft:
    """Mutable working state of one classification (private)."""

    rules: RuleSet
    counts: Counts
    ihc: str | None
    recount: Counts | None
    flags: tuple[QualityFlag, ...]
    band: Band | None = None
    recount_band: Band | None = None
    call: str = INDETERMINATE
    comment: str = ""
    workup: list[str] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    annotations: list[str] = field(default_factory=list)
    ihc_category: str | None = None

    def finish(self) -> Classification:
        return Classification(
            rule_set=self.rules.name,
            rule_set_version=self.rules.version,
            call=self.call,
            group=self.band.group if self.band else None,
            band=self.band.key if self.band else None,
            comment=self.comment,
            workup=tuple(self.workup),
            recommendations=tuple(self.recommendations),
            reasons=tuple(self.reasons),
            annotations=tuple(self.annotations),
            ihc=self.ihc,
            ihc_category=self.ihc_category,
            counts=self.counts,
            recount=self.recount,
            recount_band=self.recount_band.key if self.recount_band else None,
            ratio=self.counts.ratio,
            mean_her2=self.counts.mean_her2,
            mean_cep17=self.counts.mean_cep17,
            quality_flags=self.flags,
        )


def _band_of(rules: RuleSet, counts: Counts) -> Band | None:
    """Band of ``counts``, or None when it is undefined (no nuclei, or no CEP17 for a ratio)."""
    if counts.mean_her2 is None or (rules.uses_ratio and counts.ratio is None):
        return None
    return rules.band_for(counts.ratio, counts.mean_her2)


def _unpack(summary_or_counts: Any) -> tuple[Counts, tuple[QualityFlag, ...], tuple[str, ...]]:
    if isinstance(summary_or_counts, Counts):
        return summary_or_counts, (), ()
    if isinstance(summary_or_counts, SupportsCounts) and isinstance(
        summary_or_counts.counts, Counts
    ):
        flags = tuple(summary_or_counts.quality_flags)
        return summary_or_counts.counts, flags, tuple(summary_or_counts.notes)
    raise TypeError(
        "summary_or_counts must be a Counts or a CaseSummary (with counts, quality_flags and "
        f"notes), got {type(summary_or_counts).__name__}"
    )


def _check_probe(rules: RuleSet, counts: Counts, name: str) -> None:
    if rules.probe == "dual" and counts.total_cep17 is None:
        raise ValueError(
            f"rule set {rules.name!r} is dual-probe and needs {name}.total_cep17, got None"
        )


def _gate(draft: _Draft) -> bool:
    """Apply the quality and counting rules; return True when the count may be classified."""
    counts, rules = draft.counts, draft.rules
    tripped = [flag for flag in draft.flags if flag.tripped]
    if rules.uses_ratio and counts.n_nuclei and not counts.total_cep17:
        draft.call = INDETERMINATE
        draft.reasons.append(
            f"No CEP17 signal was counted in {counts.n_nuclei} nuclei, so the HER2/CEP17 ratio "
            "is undefined; check the CEP17 hybridisation and controls."
        )
        return False
    if tripped:
        draft.call = INDETERMINATE
        draft.reasons += [f"Quality check failed: {flag.message}" for flag in tripped]
        _say_provisional(draft)
        return False
    missing_nuclei = max(rules.min_nuclei - counts.n_nuclei, 0)
    missing_fields = max(rules.min_fields - (counts.n_fields or 0), 0) * (
        counts.n_fields is not None
    )
    if missing_nuclei:
        draft.workup.append(f"score at least {missing_nuclei} more nuclei")
        draft.reasons.append(
            f"Only {counts.n_nuclei} nuclei were scored; at least {rules.min_nuclei} are needed "
            f"({missing_nuclei} more)."
        )
    if missing_fields:
        draft.workup.append(f"score at least {missing_fields} more separate field(s)")
        draft.reasons.append(
            f"Only {counts.n_fields} field(s) contributed; at least {rules.min_fields} separate "
            f"tumour areas are needed ({missing_fields} more)."
        )
    if counts.n_fields is None:
        draft.reasons.append(
            f"The number of fields was not given (a count at the microscope), so the rule of at "
            f"least {rules.min_fields} separate tumour areas was not checked."
        )
    if missing_nuclei or missing_fields:
        draft.call = INSUFFICIENT
        _say_provisional(draft)
        return False
    return True


def _say_provisional(draft: _Draft) -> None:
    if draft.band is not None:
        draft.reasons.append(
            f"The provisional band ({draft.band.key}) is shown for review only, not as a result."
        )


def _resolve(
    rules: RuleSet, band: Band, ihc: str | None, recount_confirms: bool
) -> tuple[str, str, tuple[str, ...]]:
    """Return the call, comment and remaining work-up of one band (pure)."""
    if band.call != WORKUP_REQUIRED:
        return band.call, band.comment, ()
    if ihc is None:
        return WORKUP_REQUIRED, band.comment, (_IHC_STEP,)
    rule = rules.workup_for(band.key, ihc)
    if rule.needs_recount and not recount_confirms:
        return WORKUP_REQUIRED, band.comment, (_RECOUNT_STEP,)
    steps = (rule.further_step,) if rule.further_step else ()
    comment = band.comment if rule.call in (NEGATIVE_WITH_COMMENT, WORKUP_REQUIRED) else ""
    return rule.call, comment, steps


def _needs_recount(rules: RuleSet, band: Band, ihc: str | None) -> bool:
    rule = rules.workup_for(band.key, ihc) if ihc is not None else None
    return rule is not None and rule.needs_recount


def _usable_recount_band(draft: _Draft) -> Band | None:
    """Band of the supplied recount, or None when there is none or it cannot be used."""
    recount, rules = draft.recount, draft.rules
    if recount is None:
        return None
    draft.reasons.append(_describe_counts(recount, "Blinded recount"))
    if recount.n_nuclei < rules.min_recount_nuclei:
        draft.reasons.append(
            f"The recount has {recount.n_nuclei} nuclei; at least {rules.min_recount_nuclei} are "
            "needed, so it was not used."
        )
        return None
    draft.recount_band = _band_of(rules, recount)
    if draft.recount_band is None:
        draft.reasons.append("The recount has no CEP17 signal (ratio undefined); it was not used.")
    return draft.recount_band


def _apply_rules(draft: _Draft) -> None:
    """Set call, comment and work-up from the band, the IHC score and the recount."""
    rules, band, ihc = draft.rules, draft.band, draft.ihc
    draft.reasons.append(f"{band.key.capitalize()}: initial ISH call {band.call}.")
    recount_band = _usable_recount_band(draft)
    confirms = recount_band is not None and recount_band.key == band.key
    call, comment, steps = _resolve(rules, band, ihc, confirms)
    if recount_band is not None and not confirms:
        recount_call = _resolve(rules, recount_band, ihc, False)[0]
        if _needs_recount(rules, band, ihc) or recount_call != call:
            draft.call, draft.comment = ADJUDICATION_REQUIRED, band.comment
            draft.workup.append(_ADJUDICATION_STEP)
            draft.reasons.append(
                f"The recount lands in {recount_band.key}, not {band.key}: both counts are "
                "reported and neither is picked."
            )
            return
        draft.reasons.append(
            f"The recount lands in {recount_band.key}, which leads to the same call ({call})."
        )
    elif confirms:
        draft.reasons.append(f"The recount confirms {band.key}.")
    if band.call == WORKUP_REQUIRED:
        ihc_text = f"concurrent IHC {ihc}" if ihc else "no concurrent IHC result"
        draft.reasons.append(f"With {ihc_text}, the {rules.name} work-up gives: {call}.")
    if steps:
        draft.reasons.append(f"Still required: {'; '.join(steps)}.")
    draft.call, draft.comment = call, comment
    draft.workup += steps


def _recommend(draft: _Draft) -> None:
    counts, rules = draft.counts, draft.rules
    checks = [("mean", counts.mean_her2, "mean HER2")]
    if rules.uses_ratio:
        checks.insert(0, ("ratio", counts.ratio, "ratio"))
    for quantity, value, label in checks:
        for low, high in rules.near_cutoff_ranges(quantity):
            if value is not None and low <= value <= high:
                draft.recommendations.append(
                    f"The {label} {value:.2f} lies in [{low:.2f}, {high:.2f}] near a cut-off: "
                    "count 20 more nuclei and recompute."
                )


def _annotate_her2_low(draft: _Draft) -> None:
    """Annotate HER2-low / HER2-0 beside (never instead of) the ASCO/CAP call."""
    if draft.ihc is None or not draft.rules.her2_low:
        return
    ish_negative = draft.call in (NEGATIVE, NEGATIVE_WITH_COMMENT)
    if draft.ihc == "0":
        draft.ihc_category = "HER2-0"
        text = "IHC 0: HER2-0 (distinguished from IHC 1+ because it decides eligibility"
        text += " for trastuzumab deruxtecan)"
    elif draft.ihc == "1+" or (draft.ihc == "2+" and ish_negative):
        draft.ihc_category = "HER2-low"
        text = f"IHC {draft.ihc}" + (" with ISH not amplified" if draft.ihc == "2+" else "")
        text += ": HER2-low"
    else:
        if draft.ihc == "2+" and draft.call != POSITIVE:
            draft.reasons.append("HER2-low status waits for a final ISH result.")
        return
    draft.annotations.append(
        f"{text}; an annotation beside the ASCO/CAP result ({HER2_LOW_SOURCE})."
    )


def classify(
    summary_or_counts: Counts | SupportsCounts,
    *,
    rule_set: str | RuleSet = DEFAULT_RULE_SET,
    ihc: str | int | None = None,
    recount: Counts | None = None,
) -> Classification:
    """Classify a case by a guideline rule set.

    Parameters
    ----------
    summary_or_counts : Counts or CaseSummary
        Hand counts, or a summary from :func:`ishcount.score.score_case` (its quality flags
        and notes are used too).
    rule_set : str or RuleSet
        Name in :data:`RULE_SETS`; default ``"asco-cap-2018-breast-dual"``.
    ihc : {"0", "1+", "2+", "3+"} or int or None
        Concurrent IHC score on the same tissue, if known.
    recount : Counts or None
        Blinded recount of at least 20 more nuclei by a second observer.

    Returns
    -------
    Classification

    Raises
    ------
    ValueError
        For an unknown rule set, an invalid IHC score, or missing CEP17 for a dual-probe set.
    TypeError
        If ``summary_or_counts`` or ``recount`` is of the wrong type.

    Notes
    -----
    Order of the rules: an undefined ratio (no CEP17 signal) or a tripped quality flag gives
    ``indeterminate``; fewer than 20 nuclei or fewer than two fields gives ``insufficient``
    (a count without fields is accepted, with a reason). Otherwise the band gives the initial
    call; a recount landing in another band gives ``adjudication required``; bands that need
    work-up are resolved by the IHC score (IHC 2+ needs the recount for ASCO/CAP 2018 groups
    2-4). Values are compared unrounded. A ratio in [1.80, 2.20] or a mean HER2 within 10% of
    4.0 or 6.0 adds the recommendation to count 20 more nuclei.

    References
    ----------
    .. [1] Wolff AC et al. J Clin Oncol 2018;36:2105-2122.
    .. [2] Wolff AC et al. J Clin Oncol 2023;41:3867-3872.
    .. [3] Bartley AN et al. Arch Pathol Lab Med 2016;140:1345-1363.

    Examples
    --------
    >>> counts = Counts(n_nuclei=20, total_her2=100, total_cep17=60, n_fields=2)
    >>> result = classify(counts, ihc="1+")
    >>> result.group, result.call, result.ihc_category
    (4, 'negative with comment', 'HER2-low')
    """
    rules = get_rule_set(rule_set)
    counts, flags, notes = _unpack(summary_or_counts)
    if recount is not None and not isinstance(recount, Counts):
        raise TypeError(f"recount must be a Counts or None, got {type(recount).__name__}")
    _check_probe(rules, counts, "summary_or_counts")
    if recount is not None:
        _check_probe(rules, recount, "recount")
    draft = _Draft(rules, counts, parse_ihc(ihc), recount, flags)
    draft.reasons.append(_describe_counts(counts))
    draft.band = _band_of(rules, counts)
    if _gate(draft):
        _apply_rules(draft)
        _recommend(draft)
    elif recount is not None:
        draft.reasons.append("The recount was not used because the first count is not usable.")
    draft.reasons += notes
    _annotate_her2_low(draft)
    return draft.finish()
