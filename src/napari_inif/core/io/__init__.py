"""Reading and writing images: TIFF / OME-TIFF / ``.npy`` files (``image``) and array
sources read box by box (``source``: in-memory arrays, TIFF, Zarr / OME-Zarr)."""
