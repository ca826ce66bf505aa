"""PancreasRSTN core: the Recurrent Saliency Transformation Network (Yu et al., CVPR 2018) for CT.

Pure Python (torch, numpy, SimpleITK): the Slicer module and the ``pancreas-rstn`` command both call it.
"""

__version__ = "0.1.0"
