"""Packaging contracts: importable, typed, and GUI-free on import."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import ishcount

GUI_MODULES = ("napari", "qtpy", "PySide6", "PyQt6", "PyQt5", "magicgui", "vispy")


def test_version_matches_metadata():
    from importlib.metadata import version

    assert ishcount.__version__ == version("ishcount")


def test_py_typed_marker_ships():
    assert (Path(ishcount.__file__).parent / "py.typed").is_file()


def test_import_does_not_load_gui_toolkits():
    code = (
        "import json, sys, ishcount\n"
        "for name in ishcount.__all__: getattr(ishcount, name)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert not {m for m in loaded if m.split(".")[0] in GUI_MODULES}


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        ishcount.no_such_thing  # noqa: B018
