"""Guidance: SSIM, perceptual and Cellpose segmentation losses, and the bundled small net."""
