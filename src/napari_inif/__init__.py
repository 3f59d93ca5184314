"""napari-inif: implicit neural image field compression for biological microscopy.

The library lives in :mod:`napari_inif.core` (no Qt, no napari); the napari plugin's
contributions are listed in ``napari.yaml`` and import lazily.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
