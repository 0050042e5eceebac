"""napari plugin of ishcount: reader, sample data and the analysis and review widget.

Loaded only by napari through the npe2 manifest ``napari.yaml``; ``import ishcount``
never imports this subpackage. The review logic lives in the Qt-free
:mod:`ishcount._napari._review`; the widget is a thin view of it.
"""
