"""Qt dock widgets of the napari plugin (the only package here that imports Qt)."""
