"""Classic codecs: the one layer over imagecodecs and ffmpeg/x265.

Hybrid priors (:mod:`napari_inif.core.hybrid.prior`) and the benchmark's baselines
(:mod:`napari_inif.bench`) use the same definitions, so the benchmark measures the codecs
that hybrid files ship.  Codecs are found by name in
:data:`napari_inif.core.registry.CODECS`; importing this package imports neither
imagecodecs nor torch.

* ``codec``: :class:`ClassicCodec` (availability, encode/decode of an integer block with
  one quality knob, header-checked decoding) and the name lookups;
* ``images`` (JPEG XL, JPEG 2000, HTJ2K, AVIF via imagecodecs), ``hevc`` (ffmpeg/x265);
* ``headers``: dimensions a codestream declares, read without decoding it;
* ``intmap``: data <-> codec integers at a bit depth;
* ``search``: the knob that lands a codestream under a byte budget;
* ``stack``: a whole stack under a budget, plane by plane, as a mosaic or as a video.
"""

from napari_inif.core.classic.codec import (
    ClassicCodec,
    available_codecs,
    get_codec,
    register_codec,
)
from napari_inif.core.classic.intmap import IntegerMap, from_ints, int_dtype, to_ints
from napari_inif.core.classic.search import search_quality
from napari_inif.core.classic.stack import (
    CodedStack,
    decode_stack,
    encode_stack,
    match_size,
    mosaic,
    unmosaic,
)

__all__ = [
    "ClassicCodec",
    "CodedStack",
    "IntegerMap",
    "available_codecs",
    "decode_stack",
    "encode_stack",
    "from_ints",
    "get_codec",
    "int_dtype",
    "match_size",
    "mosaic",
    "register_codec",
    "search_quality",
    "to_ints",
    "unmosaic",
]
