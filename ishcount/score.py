"""Case-level aggregation of per-nucleus counts.

:func:`score_case` turns a cell table (:data:`ishcount.tables.CELL_SCHEMA`) into a
:class:`CaseSummary`: nuclei and fields scored, totals, means, the HER2/CEP17 ratio of
sums, bootstrap confidence intervals, the chance that the result band would change on a
recount, heterogeneity (a separate amplified population) and the quality flags that
image analysis can measure. :func:`ishcount.rules.classify` turns the summary into a call.

Examples
--------
>>> import pandas as pd
>>> cells = pd.DataFrame({"image": ["a"] * 10 + ["b"] * 10, "label": range(1, 21),
...                       "n_her2": [3, 2] * 10, "n_cep17": [2] * 20, "is_scored": True})
>>> summary = score_case(cells, rng=0)
>>> summary.n_nuclei, summary.n_fields, summary.ratio
(20, 2, 1.25)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ishcount.assign import TOO_LARGE, TOO_SMALL
from ishcount.rules import DEFAULT_RULE_SET, Counts, QualityFlag, RuleSet, get_rule_set

#: Columns :func:`score_case` needs in the cell table.
REQUIRED_CELL_COLUMNS: tuple[str, ...] = ("image", "label", "n_her2", "n_cep17", "is_scored")

#: A signal with ``snr`` (amplitude / noise sd) below this is "weak": the Rose criterion,
#: below which a spot is not reliably told from noise by eye (Rose A, J Opt Soc Am 1948;38:196).
WEAK_SNR = 5.0
#: Guideline limits (ASCO/CAP 2018; kit instructions): the test is rejected above these shares.
MAX_OUTSIDE_FRACTION = 0.10
MAX_WEAK_FRACTION = 0.25
#: Project convention (not a guideline figure): fewer scorable nuclei than this share of the
#: nuclei that do not touch the image edge suggests poor nuclear resolution or hybridisation.
MIN_SCORABLE_FRACTION = 0.5
#: Project convention: above this share of the signal copies in and near nuclei lying in
#: signals that reach the camera's maximum, the counts may be several percent low.
MAX_SATURATED_FRACTION = 0.10
#: Project convention: above this share of the nuclei away from the image edge excluded for
#: their size, a note asks to check the pixel size. On synthetic fields 0-2 % are, and
#: 27-30 % when the pixel size is stated 1.5-1.6 times too small.
MAX_SIZE_EXCLUDED_FRACTION = 0.20
#: The narrowest signal a light microscope can image: a widefield PSF's Gaussian sigma is
#: about 0.21 lambda / NA (Zhang B et al., Appl Opt 2007;46:1819), 0.073 um for green
#: emission (520 nm) at NA 1.49. Signals measured narrower mean the pixel size is wrong.
MIN_SIGNAL_SIGMA_UM = 0.073
#: A field whose detection set aside this many maxima on lines in a channel shows
#: autofluorescent fibres (synthetic presets: 0-3 per 2048 field; 25 fibres: 515-1886).
MIN_RIDGE_MAXIMA = 50
#: A field whose DAPI reached the camera's maximum over this share of its nuclear area is
#: over-exposed (a group2 field with half of it clipped: ratio 4.0% to 9.0% off, the DAPI
#: bleed-through measured 3.5 times too high; with a fifth clipped, 3.8%).
MAX_CLIPPED_DAPI = 0.2
#: Share of scored nuclei with a CEP17 cluster above which, with fewer HER2 clusters, the
#: probe channels are probably swapped: amplified genes cluster, centromeres rarely do
#: (synthetic presets: CEP17 clusters in 0-0.4% of nuclei; group1 and heterogeneous fields
#: with the channels swapped: 86% and 32%).
MAX_CEP17_CLUSTER_SHARE = 0.1
#: What lossy compression did to the counts in ``benchmarks/composites.py`` (quoted in notes).
LOSSY_EFFECT = (
    "On synthetic 8-bit composites (10 fields) JPEG at quality 85 with 4:2:0 chroma moved the "
    "ratio by 6.9% on average (up to 17%) and at quality 75 by 14% (up to 34%; one group of "
    "ten wrong), against 1.9% (up to 3.5%) for the same composites as PNG."
)
#: A nucleus is "individually amplified" with at least this many HER2 copies ...
AMPLIFIED_MIN_HER2 = 6
#: ... or with at least AMPLIFIED_RATIO_MIN_HER2 copies and HER2/CEP17 >= AMPLIFIED_MIN_RATIO.
AMPLIFIED_RATIO_MIN_HER2 = 4
AMPLIFIED_MIN_RATIO = 2.0
#: A second population is considered when amplified nuclei exceed this share (guideline 10%).
HETEROGENEITY_FRACTION = 0.10


@dataclass(frozen=True)
class CaseSummary:
    """Case-level figures over the scored nuclei of one case (or one population of it).

    Attributes
    ----------
    counts : Counts
        Nuclei, totals and fields; ``mean_her2``, ``ratio`` etc. are read through it.
    rule_set : str
        Rule set whose bands define ``band`` and ``recount_change_probability``.
    band : str or None
        Band of the pooled counts under ``rule_set`` (``None`` if undefined).
    n_excluded : int
        Nuclei in the table that were not scored.
    exclusion_reasons : tuple of (str, int)
        How many nuclei were skipped for each reason, most frequent first.
    ci_level : float
        Confidence level of the intervals, e.g. 0.95.
    ratio_ci, mean_her2_ci : tuple of float or None
        Percentile bootstrap intervals over nuclei (``None`` with fewer than 2 nuclei).
    recount_change_probability : float or None
        Share of bootstrap resamples of the same size whose band differs from ``band``.
    amplified_fraction : float or None
        Share of scored nuclei that are individually amplified (see :func:`is_amplified`).
    has_separate_population : bool
        True when amplified nuclei are more than 10% and less than 90% of scored nuclei.
    amplified_population, rest_population : CaseSummary or None
        Separate summaries of both populations when ``has_separate_population``.
    quality_flags : tuple of QualityFlag
        Measured quality checks, tripped or not.
    notes : tuple of str
        Plain sentences for the report; :func:`ishcount.rules.classify` copies them.
    """

    counts: Counts
    rule_set: str
    band: str | None
    n_excluded: int = 0
    exclusion_reasons: tuple[tuple[str, int], ...] = ()
    ci_level: float = 0.95
    ratio_ci: tuple[float, float] | None = None
    mean_her2_ci: tuple[float, float] | None = None
    recount_change_probability: float | None = None
    amplified_fraction: float | None = None
    has_separate_population: bool = False
    amplified_population: CaseSummary | None = None
    rest_population: CaseSummary | None = None
    quality_flags: tuple[QualityFlag, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def n_nuclei(self) -> int:
        """Number of scored nuclei."""
        return self.counts.n_nuclei

    @property
    def n_fields(self) -> int | None:
        """Number of fields (images) with at least one scored nucleus."""
        return self.counts.n_fields

    @property
    def total_her2(self) -> float:
        """Total HER2 copies over the scored nuclei."""
        return self.counts.total_her2

    @property
    def total_cep17(self) -> float | None:
        """Total CEP17 copies over the scored nuclei."""
        return self.counts.total_cep17

    @property
    def mean_her2(self) -> float | None:
        """Mean HER2 copies per scored nucleus."""
        return self.counts.mean_her2

    @property
    def mean_cep17(self) -> float | None:
        """Mean CEP17 copies per scored nucleus."""
        return self.counts.mean_cep17

    @property
    def ratio(self) -> float | None:
        """Total HER2 / total CEP17 (ratio of sums); ``None`` when total CEP17 is 0."""
        return self.counts.ratio


# --------------------------------------------------------------------------- building blocks


def is_amplified(n_her2: np.ndarray, n_cep17: np.ndarray) -> np.ndarray:
    """Return which nuclei are individually amplified.

    A nucleus is amplified when it has at least 6 HER2 copies, or at least 4 HER2 copies
    and a HER2/CEP17 ratio of at least 2.0 (a nucleus with no CEP17 counts as ratio
    infinity). This is the ASCO/CAP 2018 group 1 and 3 thresholds applied to one cell;
    the copy-number floor keeps a normal cell with 2 HER2 and 1 CEP17 out.

    Parameters
    ----------
    n_her2, n_cep17 : array_like of int, shape (n,)
        Copies per nucleus.

    Returns
    -------
    numpy.ndarray of bool, shape (n,)

    Examples
    --------
    >>> is_amplified([2, 4, 4, 7], [1, 2, 3, 4]).tolist()
    [False, True, False, True]
    """
    her2 = np.asarray(n_her2, dtype=float)
    cep17 = np.asarray(n_cep17, dtype=float)
    high_ratio = her2 >= AMPLIFIED_MIN_RATIO * cep17
    return (her2 >= AMPLIFIED_MIN_HER2) | ((her2 >= AMPLIFIED_RATIO_MIN_HER2) & high_ratio)


def bootstrap_totals(
    n_her2: np.ndarray, n_cep17: np.ndarray, *, n_resamples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Resample nuclei with replacement and return the HER2 and CEP17 totals of each resample.

    Parameters
    ----------
    n_her2, n_cep17 : numpy.ndarray, shape (n,)
        Copies per scored nucleus (``n >= 1``).
    n_resamples : int
        Number of resamples, each of size ``n``.
    rng : numpy.random.Generator

    Returns
    -------
    her2_totals, cep17_totals : numpy.ndarray of float, shape (n_resamples,)

    Notes
    -----
    Nuclei with the same pair of counts are interchangeable, so each resample draws how
    many times each distinct pair is taken (one multinomial draw over the pairs, with
    their frequencies as probabilities) instead of ``n`` nucleus indices: the same
    distribution at a cost that grows with the number of distinct pairs, not nuclei.

    Examples
    --------
    >>> h, c = bootstrap_totals(np.array([4, 4]), np.array([2, 2]), n_resamples=3,
    ...                         rng=np.random.default_rng(0))
    >>> h.tolist(), c.tolist()
    ([8.0, 8.0, 8.0], [4.0, 4.0, 4.0])
    """
    pairs = np.stack([np.asarray(n_her2, float), np.asarray(n_cep17, float)], axis=1)
    distinct, frequency = np.unique(pairs, axis=0, return_counts=True)
    n = int(frequency.sum())
    taken = rng.multinomial(n, frequency / n, size=n_resamples)  # (n_resamples, n_pairs)
    totals = taken @ distinct
    return totals[:, 0], totals[:, 1]


def band_indices(rules: RuleSet, ratio: np.ndarray, mean_her2: np.ndarray) -> np.ndarray:
    """Vectorised :meth:`RuleSet.band_for`: index of each pair's band, -1 where undefined.

    Examples
    --------
    >>> rules = get_rule_set("asco-cap-2018-breast-dual")
    >>> band_indices(rules, np.array([2.0, 1.9, np.nan]), np.array([4.0, 6.0, 3.0])).tolist()
    [0, 2, -1]
    """
    out = np.full(np.shape(mean_her2), -1)
    for index, band in enumerate(rules.bands):
        inside = np.isfinite(mean_her2) & ~np.isnan(ratio) if rules.uses_ratio else True
        for value, low, high in (
            (ratio, band.ratio_min, band.ratio_max),
            (mean_her2, band.mean_min, band.mean_max),
        ):
            if low is not None:
                inside = inside & (value >= low)
            if high is not None:
                inside = inside & (value < high)
        out[inside & (out < 0)] = index
    return out


def signal_quality_flags(
    spots: pd.DataFrame, *, weak_snr: float = WEAK_SNR
) -> tuple[QualityFlag, ...]:
    """Return the signal-level quality flags of a spot table.

    Parameters
    ----------
    spots : pandas.DataFrame
        Spot table (:data:`ishcount.tables.SPOT_SCHEMA`); needs ``label`` and ``snr``.
        Each row is one signal (a cluster counts once).
    weak_snr : float
        Signals with ``snr`` below this are weak.

    Returns
    -------
    tuple of QualityFlag
        ``signals_outside_nuclei`` (share with label 0; limit 10%) and ``weak_signals``
        (share with snr below ``weak_snr``; limit 25%); with a ``saturated`` column also
        ``saturated_signals`` (share of the copies in and near nuclei held by signals
        that reach the camera's maximum, whose counts are lower bounds; limit 10%).
        Empty for an empty table.

    Examples
    --------
    >>> spots = pd.DataFrame({"label": [1, 1, 0, 2], "snr": [9.0, 8.0, 7.0, 2.0]})
    >>> [(f.name, f.value, f.tripped) for f in signal_quality_flags(spots)]
    [('signals_outside_nuclei', 0.25, True), ('weak_signals', 0.25, False)]
    """
    missing = [c for c in ("label", "snr") if c not in spots.columns]
    if missing:
        raise ValueError(f"spots is missing column(s) {missing}")
    if len(spots) == 0:
        return ()
    if "in_cytoplasm" in spots.columns:  # over cytoplasm, among signals in or near nuclei
        over = spots["in_cytoplasm"].to_numpy(dtype=bool)
        near = over | (spots["label"].to_numpy() > 0)
        outside = float(over.sum() / near.sum()) if near.any() else 0.0
    else:
        near = np.ones(len(spots), dtype=bool)
        outside = float(np.mean(spots["label"].to_numpy() == 0))
    weak = float(np.mean(spots["snr"].to_numpy(dtype=float) < weak_snr))
    outside_text = "of signals in or near nuclei lie over cytoplasm"
    weak_text = f"of signals are weak (snr below {weak_snr:g})"
    flags = (
        _share_flag(
            "signals_outside_nuclei", outside, MAX_OUTSIDE_FRACTION, outside_text, above=True
        ),
        _share_flag("weak_signals", weak, MAX_WEAK_FRACTION, weak_text, above=True),
    )
    if "saturated" not in spots.columns:
        return flags
    copies = spots["copies"].to_numpy(float) if "copies" in spots.columns else np.ones(len(spots))
    clipped = spots["saturated"].eq(True).to_numpy() & near  # missing values: not clipped
    held = float(copies[clipped].sum() / copies[near].sum()) if near.any() else 0.0
    clipped_text = (
        "of signal copies in or near nuclei are in signals that reach the camera's maximum "
        "(their counts are lower bounds; a shorter exposure avoids it)"
    )
    return (
        *flags,
        _share_flag("saturated_signals", held, MAX_SATURATED_FRACTION, clipped_text, above=True),
    )


def _share_flag(name: str, value: float, limit: float, what: str, *, above: bool) -> QualityFlag:
    tripped = value > limit if above else value < limit
    bound = "at most" if above else "at least"
    message = f"{value:.1%} {what}; the limit is {bound} {limit:.0%}."
    return QualityFlag(name, value, limit, bool(tripped), message)


def _scorable_flag(cells: pd.DataFrame) -> tuple[QualityFlag, ...]:
    interior = cells[~cells["touches_border"].astype(bool)] if "touches_border" in cells else cells
    if len(interior) == 0:
        return ()
    share = float(interior["is_scored"].mean())
    what = "of nuclei away from the image edge are scorable"
    return (_share_flag("scorable_nuclei", share, MIN_SCORABLE_FRACTION, what, above=False),)


# --------------------------------------------------------------------------- validation


def _as_generator(rng: int | np.random.Generator | None) -> np.random.Generator:
    if rng is None or isinstance(rng, int | np.integer | np.random.Generator):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be None, an int or a numpy.random.Generator, got {rng!r}")


def _checked_cells(cells: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(cells, pd.DataFrame):
        raise TypeError(f"cells must be a pandas.DataFrame, got {type(cells).__name__}")
    missing = [c for c in REQUIRED_CELL_COLUMNS if c not in cells.columns]
    if missing:
        raise ValueError(
            f"cells is missing column(s) {missing}; needs {list(REQUIRED_CELL_COLUMNS)}"
        )
    for column in ("n_her2", "n_cep17"):
        values = pd.to_numeric(cells[column], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            raise ValueError(
                f"cells[{column!r}] must hold non-negative counts, "
                f"got {cells[column][bad].iloc[0]!r}"
            )
    if cells["is_scored"].isna().any() or not set(cells["is_scored"].unique()) <= {True, False}:
        raise ValueError(f"cells['is_scored'] must be bool, got dtype {cells['is_scored'].dtype}")
    return cells


# --------------------------------------------------------------------------- summaries


def _exclusions(cells: pd.DataFrame) -> tuple[tuple[str, int], ...]:
    excluded = cells[~cells["is_scored"].astype(bool)]
    if "exclusion_reason" in excluded:
        reasons = excluded["exclusion_reason"].fillna("").replace("", "unspecified")
    else:
        reasons = pd.Series("unspecified", index=excluded.index)
    return tuple((str(k), int(v)) for k, v in reasons.value_counts().items())


def _population(
    scored: pd.DataFrame, rules: RuleSet, rng: np.random.Generator, n_resamples: int, level: float
) -> CaseSummary:
    """Counts, band and bootstrap figures of one population of scored nuclei."""
    her2 = scored["n_her2"].to_numpy(dtype=float)
    cep17 = scored["n_cep17"].to_numpy(dtype=float)
    counts = Counts(
        n_nuclei=len(scored),
        total_her2=float(her2.sum()),
        total_cep17=float(cep17.sum()),
        n_fields=int(scored["image"].nunique()),
    )
    band = None
    if counts.mean_her2 is not None and (counts.ratio is not None or not rules.uses_ratio):
        band = rules.band_for(counts.ratio, counts.mean_her2).key
    summary = CaseSummary(counts=counts, rule_set=rules.name, band=band, ci_level=level)
    if len(scored) < 2:
        return summary
    her2_totals, cep17_totals = bootstrap_totals(her2, cep17, n_resamples=n_resamples, rng=rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(cep17_totals > 0, her2_totals / cep17_totals, np.nan)
    means = her2_totals / len(scored)
    tails = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    ratio_ci = None
    if np.isfinite(ratios).any():
        ratio_ci = tuple(float(v) for v in np.nanpercentile(ratios, tails))
    change = None
    if band is not None:
        observed = [b.key for b in rules.bands].index(band)
        change = float(np.mean(band_indices(rules, ratios, means) != observed))
    return CaseSummary(
        counts=counts,
        rule_set=rules.name,
        band=band,
        ci_level=level,
        ratio_ci=ratio_ci,
        mean_her2_ci=tuple(float(v) for v in np.percentile(means, tails)),
        recount_change_probability=change,
    )


def _heterogeneity(
    scored: pd.DataFrame, make: Callable[[pd.DataFrame], CaseSummary]
) -> tuple[float | None, bool, CaseSummary | None, CaseSummary | None]:
    if len(scored) == 0:
        return None, False, None, None
    amplified = is_amplified(scored["n_her2"].to_numpy(), scored["n_cep17"].to_numpy())
    fraction = float(amplified.mean())
    # Both populations must exceed the 10% share: in a uniformly amplified tumour the few
    # nuclei below the per-cell threshold are counting noise, not a second population.
    limit = HETEROGENEITY_FRACTION
    separate = limit < fraction < 1 - limit
    if not separate:
        return fraction, False, None, None
    return fraction, True, make(scored[amplified]), make(scored[~amplified])


def _notes(summary: CaseSummary) -> tuple[str, ...]:
    notes = []
    if summary.n_excluded:
        detail = ", ".join(f"{reason} {n}" for reason, n in summary.exclusion_reasons)
        notes.append(f"{summary.n_excluded} nuclei were not scored ({detail}).")
    pct = round(100 * summary.ci_level)
    if summary.ratio_ci is not None:
        lo, hi = summary.ratio_ci
        notes.append(f"Bootstrap {pct}% interval of the ratio over nuclei: {lo:.2f} to {hi:.2f}.")
    if summary.mean_her2_ci is not None:
        lo, hi = summary.mean_her2_ci
        notes.append(f"Bootstrap {pct}% interval of the mean HER2: {lo:.2f} to {hi:.2f}.")
    if summary.recount_change_probability is not None:
        notes.append(
            f"A recount of the same size would change the band ({summary.band}) with "
            f"probability {summary.recount_change_probability:.2f} (bootstrap estimate)."
        )
    if summary.has_separate_population:
        notes += _population_notes(summary)
    return tuple(notes)


def pixel_size_notes(
    cells: pd.DataFrame, *, signal_sigma_um: Sequence[float] = ()
) -> tuple[str, ...]:
    """Notes that ask to check the pixel size, from the sizes of nuclei and signals.

    Parameters
    ----------
    cells : pandas.DataFrame
        Cell table (:data:`ishcount.tables.CELL_SCHEMA`); the size check needs
        ``exclusion_reason`` (and reads ``touches_border`` and ``area_um2`` when present).
    signal_sigma_um : sequence of float
        Signal sizes (Gaussian sigma, um) measured in the case's fields and channels
        (``measured_spot_sigma_um`` of :func:`ishcount.detect_spots`); NaN ones are skipped.

    Returns
    -------
    tuple of str
        Empty when nothing points at a wrong pixel size.

    Notes
    -----
    Limits are in micrometres, so a pixel size stated wrong (a binned camera, another
    objective) excludes whole populations of nuclei while the counts of the rest look
    normal. Two checks: more than :data:`MAX_SIZE_EXCLUDED_FRACTION` of the nuclei away
    from the image edge excluded as too small or too large (lymphocytes are small too, so
    it is a note, not a quality flag), and signals narrower than any light microscope can
    image (:data:`MIN_SIGNAL_SIGMA_UM`) in at least half of the measurements,
    which catches a pixel size stated so small that segmentation finds no nucleus at all
    (a measurement far from the assumed size can stop short of it: at 2.5 times too small a
    pixel size, 0.088-0.137 um in 4 of 14 on the sample images, 0.058-0.073 um in the rest).

    Examples
    --------
    >>> cells = pd.DataFrame({"exclusion_reason": ["too small"] * 3 + [""] * 7})
    >>> pixel_size_notes(cells)[0][:44]
    '30% of nuclei away from the image edge are o'
    >>> pixel_size_notes(cells.iloc[3:], signal_sigma_um=[0.14, 0.15])
    ()
    """
    notes = []
    interior = cells
    if "touches_border" in cells:
        interior = cells[~cells["touches_border"].astype(bool)]
    if "exclusion_reason" in cells and len(interior):
        share = float(interior["exclusion_reason"].isin((TOO_SMALL, TOO_LARGE)).mean())
        if share > MAX_SIZE_EXCLUDED_FRACTION:
            median = (
                f" (median nucleus area {float(interior['area_um2'].median()):.0f} um2)"
                if "area_um2" in interior
                else ""
            )
            notes.append(
                f"{share:.0%} of nuclei away from the image edge are outside the size "
                f"limits{median}: unless they are lymphocytes or fragments, check the pixel size."
            )
    sigmas = np.asarray(signal_sigma_um, dtype=float)
    sigmas = sigmas[np.isfinite(sigmas)]
    typical = float(np.quantile(sigmas, 0.5, method="lower")) if len(sigmas) else np.nan
    if typical < MIN_SIGNAL_SIGMA_UM:
        notes.append(
            f"Signals measure {typical:.3f} um (sigma) at the stated pixel "
            f"size, narrower than a light microscope can image (about {MIN_SIGNAL_SIGMA_UM} um "
            "at best): the pixel size is probably stated too small."
        )
    return tuple(notes)


def lossy_input_notes(lossy_inputs: Mapping[str, str]) -> tuple[str, ...]:
    """A note naming the fields read from files compressed with loss.

    Parameters
    ----------
    lossy_inputs : mapping of str to str
        Field name to how its file was compressed (``FishImage.metadata["lossy"]``, from
        :func:`ishcount.io.read_image`); lossless fields may be left out or map to "".

    Returns
    -------
    tuple of str
        One note, or none when no field is lossy.

    Examples
    --------
    >>> lossy_input_notes({"f1": "JPEG, quality about 85", "f2": ""})[0].split(". ")[0]
    '1 field was read from a lossy file (f1: JPEG, quality about 85)'
    """
    lossy = {name: how for name, how in lossy_inputs.items() if how}
    if not lossy:
        return ()
    listed = "; ".join(f"{name}: {how}" for name, how in sorted(lossy.items()))
    counted = (
        "1 field was read from a lossy file"
        if len(lossy) == 1
        else f"{len(lossy)} fields were read from lossy files"
    )
    return (f"{counted} ({listed}). {LOSSY_EFFECT} Export TIFF or PNG where the software allows.",)


def fibre_notes(ridge_maxima: Mapping[str, int]) -> tuple[str, ...]:
    """A note naming the fields where detection met autofluorescent fibres.

    Parameters
    ----------
    ridge_maxima : mapping of str to int
        Field name to the maxima on lines a channel's detection set aside
        (``ridge_maxima`` of :func:`ishcount.analyze.input_facts`).

    Returns
    -------
    tuple of str
        One note, or none when no field reaches :data:`MIN_RIDGE_MAXIMA`.

    Notes
    -----
    Elastin fibres shine in both probe channels and pass the noise threshold at a row of
    maxima along their length; maxima on lines are not counted, but a fibre's ends,
    crossings and sharp bends still can be (synthetic 2048 fields with 25 fibres at half a
    signal's peak: ratio 6.4% off on average, up to 11.4%). Those fields set aside 515-1886
    maxima per channel before the line test (over 1000 with it), the synthetic presets without
    fibres 0-13.

    Examples
    --------
    >>> fibre_notes({"f1": 1077, "f2": 3})[0].split(":")[0]
    '1 field shows autofluorescent fibres (f1, 1077 maxima on lines set aside)'
    """
    fields = {
        name: f"{n} maxima on lines set aside"
        for name, n in ridge_maxima.items()
        if n >= MIN_RIDGE_MAXIMA
    }
    return _fields_note(
        fields,
        ("shows", "show"),
        "autofluorescent fibres",
        "dim fibres can still add false signals. Check these fields, or score others.",
    )


def _fields_note(
    fields: Mapping[str, str], verb: tuple[str, str], finding: str, advice: str
) -> tuple[str, ...]:
    """``"<n> field(s) <verb> <finding> (<name>, <detail>, ...): <advice>"``, or no note
    when ``fields`` (name to detail) is empty; ``verb`` is its singular and plural form."""
    if not fields:
        return ()
    listed = ", ".join(f"{name}, {detail}" for name, detail in sorted(fields.items()))
    counted = f"1 field {verb[0]}" if len(fields) == 1 else f"{len(fields)} fields {verb[1]}"
    return (f"{counted} {finding} ({listed}): {advice}",)


def swapped_probe_notes(cells: pd.DataFrame, spots: pd.DataFrame) -> tuple[str, ...]:
    """A note when CEP17 clusters where HER2 should: the channels may be swapped.

    Parameters
    ----------
    cells : pandas.DataFrame
        Cell table (``image``, ``label``, ``is_scored``).
    spots : pandas.DataFrame
        Spot table of the same images (``image`` when several, ``label``, ``channel``,
        ``is_cluster``).

    Returns
    -------
    tuple of str
        One note when more than :data:`MAX_CEP17_CLUSTER_SHARE` of the scored nuclei hold
        a CEP17 cluster and fewer hold a HER2 cluster; none otherwise.

    Examples
    --------
    >>> cells = pd.DataFrame({"label": [1, 2, 3], "is_scored": True})
    >>> spots = pd.DataFrame({"label": [1, 2, 3], "channel": "cep17", "is_cluster": True})
    >>> swapped_probe_notes(cells, spots)[0].split(":")[0]
    'CEP17 clusters in 100% of the scored nuclei, HER2 in 0%'
    """
    keys = ["image", "label"] if "image" in cells and "image" in spots else ["label"]
    scored = cells.loc[cells["is_scored"].astype(bool), keys].drop_duplicates()
    if scored.empty or not {"channel", "is_cluster"} <= set(spots.columns):
        return ()
    clusters = spots[spots["is_cluster"].astype(bool)]
    share = {}
    for channel in ("her2", "cep17"):
        held = clusters.loc[clusters["channel"] == channel, keys].drop_duplicates()
        share[channel] = len(scored.merge(held, on=keys)) / len(scored)
    if share["cep17"] <= MAX_CEP17_CLUSTER_SHARE or share["cep17"] <= share["her2"]:
        return ()
    return (
        f"CEP17 clusters in {share['cep17']:.0%} of the scored nuclei, HER2 in "
        f"{share['her2']:.0%}: amplified genes cluster, centromeres rarely do, so the HER2 "
        "and CEP17 channels may be swapped. Check which channel holds which probe (ZytoLight's "
        "SPEC ERBB2/CEN 17, for one, labels ERBB2 green and CEN 17 orange) and give the "
        "mapping with --channels or the pipeline file's image.channels.",
    )


def clipped_dapi_notes(dapi_clipped: Mapping[str, float]) -> tuple[str, ...]:
    """A note naming the fields whose DAPI is over-exposed.

    Parameters
    ----------
    dapi_clipped : mapping of str to float
        Field name to the share of its nuclear area where DAPI reached the camera's
        maximum (``ImageResult.dapi_clipped``).

    Returns
    -------
    tuple of str
        One note, or none when no field is over :data:`MAX_CLIPPED_DAPI`.

    Examples
    --------
    >>> clipped_dapi_notes({"f1": 0.46, "f2": 0.01})[0].split(":")[0]
    '1 field has over-exposed DAPI (f1, 46% of the nuclear area clipped)'
    """
    fields = {
        name: f"{share:.0%} of the nuclear area clipped"
        for name, share in dapi_clipped.items()
        if share > MAX_CLIPPED_DAPI
    }
    return _fields_note(
        fields,
        ("has", "have"),
        "over-exposed DAPI",
        "where DAPI is clipped its bleed-through into the probes cannot be measured, and "
        "false CEP17 and HER2 signals can follow. Acquire DAPI below the camera's maximum.",
    )


def _population_notes(summary: CaseSummary) -> list[str]:
    amp, rest = summary.amplified_population, summary.rest_population
    notes = [
        f"Heterogeneity: {summary.amplified_fraction:.0%} of scored nuclei are individually "
        "amplified (more than 10%) and form a separate population; report both populations."
    ]
    for name, population in (("Amplified", amp), ("Other", rest)):
        notes.append(
            f"{name} population: {population.n_nuclei} nuclei, mean HER2 "
            f"{population.mean_her2:.2f}, ratio "
            + ("undefined" if population.ratio is None else f"{population.ratio:.2f}")
            + f" ({population.band or 'band undefined'})."
        )
    if amp.n_nuclei < 20:
        notes.append(
            f"Count at least 20 nuclei of the amplified population separately "
            f"({amp.n_nuclei} so far)."
        )
    return notes


def score_case(
    cells: pd.DataFrame,
    *,
    spots: pd.DataFrame | None = None,
    rng: int | np.random.Generator | None = None,
    rule_set: str | RuleSet = DEFAULT_RULE_SET,
    n_resamples: int = 2000,
    ci_level: float = 0.95,
    weak_snr: float = WEAK_SNR,
    signal_sigma_um: Sequence[float] = (),
    lossy_inputs: Mapping[str, str] | None = None,
    ridge_maxima: Mapping[str, int] | None = None,
    dapi_clipped: Mapping[str, float] | None = None,
) -> CaseSummary:
    """Summarise the scored nuclei of one case.

    Parameters
    ----------
    cells : pandas.DataFrame
        Cell table with at least ``image, label, n_her2, n_cep17, is_scored``
        (:data:`ishcount.tables.CELL_SCHEMA`); all images of one case.
    spots : pandas.DataFrame, optional
        Spot table of the same images (needs ``label`` and ``snr``) for the signal flags.
    rng : None, int or numpy.random.Generator
        Seed of the bootstrap.
    rule_set : str or RuleSet
        Rule set whose bands define the recount-change probability.
    n_resamples : int
        Bootstrap resamples.
    ci_level : float
        Confidence level in (0, 1).
    weak_snr : float
        Signals with a lower ``snr`` are weak.
    signal_sigma_um : sequence of float
        Signal sizes measured in the case's fields, for :func:`pixel_size_notes`.
    lossy_inputs : mapping of str to str, optional
        How each field's file was compressed with loss, for :func:`lossy_input_notes`.
    ridge_maxima : mapping of str to int, optional
        Maxima on lines each field's detection set aside, for :func:`fibre_notes`.
    dapi_clipped : mapping of str to float, optional
        Each field's share of nuclear area with clipped DAPI, for :func:`clipped_dapi_notes`.

    Returns
    -------
    CaseSummary

    Raises
    ------
    TypeError
        If ``cells`` is not a DataFrame or ``rng`` is of the wrong type.
    ValueError
        If columns are missing, counts are negative or NaN, or an option is out of range.

    Notes
    -----
    The ratio is total HER2 / total CEP17 over the scored nuclei (a ratio of sums, never a
    mean of per-cell ratios). Intervals are percentile bootstrap intervals over nuclei
    (resampling nuclei with replacement, same size); the recount-change probability is the
    share of resamples whose band differs. Heterogeneity: when more than 10% of scored
    nuclei are individually amplified (:func:`is_amplified`) and the other nuclei are also
    more than 10% (so a uniformly amplified tumour is one population), the amplified nuclei
    form a separate population and both populations are summarised. Quality flags: signals
    outside nuclei (limit 10%), weak signals (limit 25%), copies in signals that reach the
    camera's maximum (limit 10%, a project convention), scorable nuclei among those away
    from the image edge (limit 50%, a project convention). Notes ask to check the pixel size
    when nuclei or signals do not fit it (:func:`pixel_size_notes`), and name the fields
    read from lossy files (:func:`lossy_input_notes`), those with autofluorescent fibres
    (:func:`fibre_notes`) and those with over-exposed DAPI (:func:`clipped_dapi_notes`); a
    note asks to check the channel mapping when CEP17 clusters and HER2 does not
    (:func:`swapped_probe_notes`).

    References
    ----------
    .. [1] Wolff AC et al. J Clin Oncol 2018;36:2105-2122.
    .. [2] Efron B, Tibshirani RJ. An Introduction to the Bootstrap. Chapman & Hall, 1993.

    Examples
    --------
    >>> cells = pd.DataFrame({"image": ["a", "b"] * 10, "label": range(20),
    ...                       "n_her2": [9, 7] * 10, "n_cep17": [2] * 20, "is_scored": True})
    >>> s = score_case(cells, rng=1)
    >>> s.band, s.mean_her2, s.ratio, s.amplified_fraction, s.has_separate_population
    ('group 1', 8.0, 4.0, 1.0, False)
    """
    cells = _checked_cells(cells)
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level must lie in (0, 1), got {ci_level!r}")
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples!r}")
    rules, generator = get_rule_set(rule_set), _as_generator(rng)
    scored = cells[cells["is_scored"].astype(bool)]

    def make(part: pd.DataFrame) -> CaseSummary:
        return _population(part, rules, generator, int(n_resamples), ci_level)

    pooled = make(scored)
    fraction, separate, amplified, rest = _heterogeneity(scored, make)
    flags = _scorable_flag(cells)
    if spots is not None:
        flags += signal_quality_flags(spots, weak_snr=weak_snr)
    summary = replace(
        pooled,
        n_excluded=int(len(cells) - len(scored)),
        exclusion_reasons=_exclusions(cells),
        amplified_fraction=fraction,
        has_separate_population=separate,
        amplified_population=amplified,
        rest_population=rest,
        quality_flags=flags,
    )
    notes = _notes(summary) + pixel_size_notes(cells, signal_sigma_um=signal_sigma_um)
    if spots is not None:
        notes += swapped_probe_notes(cells, spots)
    notes += lossy_input_notes(lossy_inputs or {}) + fibre_notes(ridge_maxima or {})
    notes += clipped_dapi_notes(dapi_clipped or {})
    return replace(summary, notes=notes)
