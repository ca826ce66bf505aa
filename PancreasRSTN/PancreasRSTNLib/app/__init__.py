"""The applications over the core: the ``pancreas-rstn`` command line and its commands, the demo, cohorts and
their throughput benchmark, and the round files."""
