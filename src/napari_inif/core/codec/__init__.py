"""The codec: how a field is planned, fitted, quantised, stored and decoded.

* ``architecture``, ``siren``: field families (the paper's SIREN with learnable
  frequencies); ``blocks``: the block grid; ``plan``: ratio -> architecture;
* ``fitter``: batched block fitting; ``render``: differentiable decoded windows;
* ``quant``: quantisation, entropy coding and rate control;
* ``container``, ``header``: the ``.inif`` bitstream; ``encoded``: a fitted file;
* ``decode``: :class:`~napari_inif.core.codec.decode.InifArray`, the lazy decoder.
"""
