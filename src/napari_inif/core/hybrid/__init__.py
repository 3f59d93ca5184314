"""Hybrid mode: a classic-codec prior codes the image, the field codes its residual."""
