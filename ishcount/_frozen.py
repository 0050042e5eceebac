"""A read-only, picklable mapping for frozen parameter objects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn


class FrozenDict(dict):
    """A ``dict`` that refuses changes, pickles (unlike ``MappingProxyType``) and hashes.

    Examples
    --------
    >>> import pickle
    >>> d = FrozenDict({"a": 1})
    >>> pickle.loads(pickle.dumps(d)) == d, isinstance(d, Mapping)
    (True, True)
    >>> d["a"] = 2
    Traceback (most recent call last):
    ...
    TypeError: FrozenDict is read-only
    """

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("FrozenDict is read-only")

    __setitem__ = __delitem__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]
    __ior__ = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[type, tuple[dict[str, Any]]]:
        return (FrozenDict, (dict(self),))

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted((k, repr(v)) for k, v in self.items())))


def freeze(mapping: Mapping[str, Any] | None) -> FrozenDict:
    """Return a :class:`FrozenDict` copy of ``mapping`` (empty for None)."""
    return FrozenDict(dict(mapping or {}))
