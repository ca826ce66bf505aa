"""Training: datasets (nnU-Net, Decathlon, NIH, pairs) and their cache, the 2-D samples of each view,
augmentations, losses, the trainer's named steps, and BatchNorm recalibration."""
