"""The applications over the core: the ``pancreas-rstn`` command line and its commands, the demo, cohorts,
progress reporting, and the background run the Slicer panel uses."""
