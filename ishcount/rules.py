"""Guideline rule sets for HER2 in-situ hybridization results.

Pure, table-driven and stdlib-only. The source of every rule is
``her2-ish-rules.md`` (ASCO/CAP 2018 focused update, Wolff et al.,
J Clin Oncol 2018;36:2105-2122, affirmed by the 2023 update).
"""

from __future__ import annotations

import math


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
