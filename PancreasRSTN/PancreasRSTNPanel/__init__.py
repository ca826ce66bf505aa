"""The Qt side of the panel's sections (model manager, training): they bind their part of the .ui to the
Qt-free ``PancreasRSTNSlicerLib``. Imported only where Qt exists (Slicer, or the GUI test harness)."""
