"""ishcount: HER2/CEP17 dual-probe FISH image analysis.

Reads multi-channel fluorescence images, segments nuclei, detects HER2 and
CEP17 signals (estimating copies inside amplified clusters), counts them per
nucleus and classifies the case by the ASCO/CAP guideline rules.

For research use only: every result must be confirmed by a qualified
pathologist before it informs any clinical decision.

Examples
--------
>>> import ishcount
>>> ishcount.__version__
'0.1.0'
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

RESEARCH_USE_NOTICE = (
    "For research use only. Results must be confirmed by a qualified pathologist "
    "before they inform any clinical decision."
)

# Public names, imported on first use so that ``import ishcount`` stays fast and
# never pulls in a GUI toolkit. Each maps to the module that defines it.
_PUBLIC = {
    "FishImage": "ishcount.image",
    "read_image": "ishcount.io",
    "segment_nuclei": "ishcount.segment",
    "detect_spots": "ishcount.spots",
    "assign_spots": "ishcount.assign",
    "count_spots": "ishcount.assign",
    "analyze_image": "ishcount.analyze",
    "AnalysisParams": "ishcount.analyze",
    "ImageResult": "ishcount.analyze",
    "score_case": "ishcount.score",
    "CaseSummary": "ishcount.score",
    "classify": "ishcount.rules",
    "Classification": "ishcount.rules",
    "Counts": "ishcount.rules",
    "RULE_SETS": "ishcount.rules",
    "get_rule_set": "ishcount.rules",
}

__all__ = ["RESEARCH_USE_NOTICE", "__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    try:
        module = _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module 'ishcount' has no attribute {name!r}") from None
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
