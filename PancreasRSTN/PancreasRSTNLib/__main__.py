"""``python -m PancreasRSTNLib ...`` is the ``pancreas-rstn`` command (used by torchrun and the Slicer panel)."""

from .app.cli import main

raise SystemExit(main())
