"""The networks: the reference FCN-8s, the light U-Net, the backbone factory and the RSTN that joins a coarse and
a fine network through the saliency module."""
