"""Quality metrics: PSNR, SSIM, max error (``quality``); segmentation agreement lives with
the segmenters in :mod:`napari_inif.core.guidance.segmentation`."""
