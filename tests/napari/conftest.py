"""Shared set-up of the napari tests.

Workaround for an upstream refcount bug: with napari 0.9.2 + PySide6 6.12 on Python 3.11
every viewer's life (create, draw, close) drops about 12 000 more references to ``None``
than it took (measured with ``sys.getrefcount(None)``; also with plain ``viewer.add_image``
and no ishcount code). After about ten viewers ``None``'s count reaches zero and the process
aborts with ``Fatal Python error: none_dealloc``. From Python 3.12 ``None`` is immortal and
the bug is invisible. A list of ``None`` that is never freed (one extra reference to the
list itself, so not even at interpreter exit) keeps the count positive.
"""

from __future__ import annotations

import ctypes
import sys

if sys.version_info < (3, 12):
    _NONE_REFERENCES = [None] * 5_000_000  # about 400 viewers' worth of leaked references
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(_NONE_REFERENCES))


def pytest_collection_modifyitems(config, items):
    """Skip the viewer tests where Qt has no display (run them under ``xvfb-run``)."""
    import os

    import pytest

    if os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM") in ("offscreen", "minimal"):
        return
    skip = pytest.mark.skip(reason="no display: run under xvfb-run (or QT_QPA_PLATFORM=offscreen)")
    for item in items:
        if item.get_closest_marker("napari") is not None:
            item.add_marker(skip)
