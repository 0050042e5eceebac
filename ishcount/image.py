"""The in-memory form of one multi-channel FISH field.

Channels travel by name (``dapi``, ``her2``, ``cep17``), never by index. Each
channel is a single-channel array ``(Y, X)`` or ``(Z, Y, X)``; all channels of
one image share a shape and a pixel spacing in micrometres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CHANNELS: tuple[str, ...] = ("dapi", "her2", "cep17")


def max_projection(array: Any) -> np.ndarray:
    """A 2D channel as it is; a z-stack ``(Z, Y, X)`` as its maximum-intensity projection.

    Examples
    --------
    >>> max_projection(np.arange(8).reshape(2, 2, 2)).tolist()
    [[4, 5], [6, 7]]
    """
    array = np.asarray(array)
    return array if array.ndim == 2 else array.max(axis=0)


@dataclass(frozen=True, eq=False)
class FishImage:
    """One FISH field: DAPI plus the HER2 and (for dual-probe assays) CEP17 channel.

    Parameters
    ----------
    dapi : array_like, shape (Y, X) or (Z, Y, X)
        Nuclear counterstain. Any real dtype; stages convert to float32 once.
    her2 : array_like or None
        HER2 (ERBB2) probe channel, same shape as ``dapi``.
    cep17 : array_like or None
        Chromosome 17 centromere probe, same shape; ``None`` for single-probe assays.
    spacing_um : tuple of float
        Pixel size in micrometres for each axis of a channel, ``(y, x)`` or ``(z, y, x)``.
    name : str
        Field name used in tables and outputs.
    metadata : dict
        Free-form provenance (source file, channel mapping, ...).

    Raises
    ------
    ValueError
        If the channels differ in shape, are not 2D or 3D, or the spacing does not fit.

    Examples
    --------
    >>> import numpy as np
    >>> img = FishImage(np.zeros((4, 5)), np.zeros((4, 5)), None, spacing_um=(0.1, 0.1))
    >>> img.shape, img.ndim, img.channel_names
    ((4, 5), 2, ('dapi', 'her2'))
    """

    dapi: Any
    her2: Any
    cep17: Any
    spacing_um: tuple[float, ...]
    name: str = "image"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = tuple(np.shape(self.dapi))
        if len(shape) not in (2, 3):
            raise ValueError(f"dapi must be 2D (Y, X) or 3D (Z, Y, X), got shape {shape}")
        for name in ("her2", "cep17"):
            array = getattr(self, name)
            if array is not None and tuple(np.shape(array)) != shape:
                raise ValueError(
                    f"{name} has shape {tuple(np.shape(array))}, but dapi has shape {shape}"
                )
        if self.her2 is None:
            raise ValueError("her2 channel is required (got None)")
        spacing = tuple(float(s) for s in self.spacing_um)
        if len(spacing) != len(shape) or not all(math.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(
                f"spacing_um must hold {len(shape)} positive sizes in micrometres "
                f"for an image of shape {shape}, got {self.spacing_um!r}"
            )
        object.__setattr__(self, "spacing_um", spacing)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one channel."""
        return tuple(np.shape(self.dapi))

    @property
    def ndim(self) -> int:
        """2 for a single plane, 3 for a z-stack."""
        return len(self.shape)

    @property
    def channel_names(self) -> tuple[str, ...]:
        """Names of the channels present, in canonical order."""
        return tuple(name for name in CHANNELS if getattr(self, name) is not None)

    def channel(self, name: str) -> Any:
        """Return a channel by name (``'dapi'``, ``'her2'`` or ``'cep17'``)."""
        if name not in CHANNELS:
            raise ValueError(f"channel must be one of {CHANNELS}, got {name!r}")
        return getattr(self, name)
