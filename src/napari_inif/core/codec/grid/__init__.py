"""The latent-grid field family (issue 14): Cool-chic / C3-style quantised latent grids.

* ``field``: multi-resolution latent grids, N-D multilinear upsampling, synthesis MLP,
  Laplace entropy model (torch);
* ``fit``: training on ``D + lambda * R`` with lambda steered to the byte budget;
* ``coding``: the versioned bitstream (struct header, range-coded tiles, weights);
* ``codec``: fit -> bytes, bytes -> :class:`~.codec.GridDecoder` (regions, zoom, points).
"""

from napari_inif.core.codec.grid.codec import (
    GridDecoder,
    compress_grid,
    encode_fit,
    fit_to_size,
    iter_fit_to_size,
)
from napari_inif.core.codec.grid.coding import GridCode, decode_grid, encode_grid
from napari_inif.core.codec.grid.field import GridField, GridSpec
from napari_inif.core.codec.grid.fit import (
    GridFit,
    channel_range,
    choose_spec,
    fit_grid,
    iter_fit_grid,
)

__all__ = [
    "GridCode",
    "GridDecoder",
    "GridField",
    "GridFit",
    "GridSpec",
    "channel_range",
    "choose_spec",
    "compress_grid",
    "decode_grid",
    "encode_fit",
    "encode_grid",
    "fit_grid",
    "fit_to_size",
    "iter_fit_grid",
    "iter_fit_to_size",
]
