"""Slicer-side helpers of the PancreasRSTN module: MRML <-> core (SimpleITK / numpy) conversion and the Logic.

Imports ``slicer`` and ``vtk`` but never ``qt``, ``ctk`` or ``slicer.ScriptedLoadableModule``, so it runs in
the full Slicer application and with Kitware's Qt-free ``slicer-core`` wheel (CI tests).
"""
