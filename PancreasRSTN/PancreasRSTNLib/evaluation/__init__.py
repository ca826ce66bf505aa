"""Measuring: metrics (DSC, HD95, ASSD ...), evaluation over cases, plots and the engine's speed benchmark."""
