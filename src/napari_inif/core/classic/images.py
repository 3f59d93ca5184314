"""The image codecs, through imagecodecs: JPEG XL, JPEG 2000, HTJ2K and AVIF.

One configuration each, used by hybrid priors and benchmark baselines alike (checked by
experiment with imagecodecs 2026.3.6: libjxl 0.11.2, OpenJPEG 2.5.4, OpenJPH 0.26.3,
libavif 1.4.0 with libaom):

* JPEG XL: Butteraugli ``distance`` from 25 (quality 0; larger values are clamped by
  libjxl) down to 0.01 on a log scale, effort 3.  At equal size (bisected distance,
  three planes of the bundled cancer-cell stack at 16 bits and a 256 x 256 BBBC038
  nuclei image at 8 bits, 8x/32x/64x) the mean PSNR was 34.26 dB at effort 3, 34.15 at
  5 (imagecodecs' default), 33.98 at 7 (libjxl's) and 34.28 at 9, which encodes 5-10x
  slower; a hybrid file of 8 planes improved by 0.24 dB at 16x and 0.55 dB at 64x;
* JPEG 2000: OpenJPEG's fixed-quality mode, ``level`` is the target PSNR in dB (5-100),
  irreversible 9/7 wavelet, raw ``j2k`` codestream;
* HTJ2K: OpenJPH's ``level`` is the quantisation step relative to the sample range,
  0.5 (quality 0) to 1e-5 on a log scale;
* AVIF: libaom at speed 6, ``level`` 0-99, luma only (4:0:0) at 8 or 12 bits.  A
  one-channel input is coded losslessly whatever ``level`` is, so the plane goes in as
  grey RGB and is stored as 4:0:0 -- no chroma planes to pay for.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from napari_inif.core.classic.codec import Block, ClassicCodec
from napari_inif.core.classic.headers import avif_dims, j2k_dims, jxl_dims

__all__ = ["AVIF", "HTJ2K", "JPEG2K", "JPEGXL"]

AVIF_SPEED = 6  # libavif's default; imagecodecs' own default (0) is ~20x slower, ~8% smaller
JPEGXL_EFFORT = 3  # see the module docstring
_INSTALL = "install imagecodecs built with {} (pip install imagecodecs)"


def _check(attr: str) -> str | None:
    try:
        import imagecodecs
    except ImportError:
        return "imagecodecs is not installed"
    codec = getattr(imagecodecs, attr, None)
    if codec is None or not codec.available:
        return f"imagecodecs was built without {attr}"
    return None


def _log(worst: float, best: float):
    """Knob -> native value, geometric from ``worst`` (0) to ``best`` (1)."""

    def native(quality: float) -> float:
        return float(math.exp(math.log(worst) + quality * (math.log(best) - math.log(worst))))

    return native


def _decode_into(fn_name: str):
    """A decoder that gives imagecodecs the output array: a stream of another shape is
    refused by the library instead of being allocated."""

    def decode(data: bytes, shape: Block, dtype: np.dtype) -> np.ndarray:
        import imagecodecs

        out = np.empty(shape[1:], dtype)
        return getattr(imagecodecs, fn_name)(data, out=out)[None]

    return decode


def _jpegxl_encode(block: np.ndarray, distance: float) -> bytes:
    import imagecodecs

    return bytes(
        imagecodecs.jpegxl_encode(block[0], distance=distance, effort=JPEGXL_EFFORT, numthreads=1)
    )


def _jpeg2k_encode(block: np.ndarray, level: float) -> bytes:
    import imagecodecs

    # ``level`` is a float PSNR target (30.0 and 30.3 give other sizes), whatever the stubs say.
    encode: Any = imagecodecs.jpeg2k_encode
    return bytes(encode(block[0], level=level, codecformat="j2k", numthreads=1))


def _htj2k_encode(block: np.ndarray, qstep: float) -> bytes:
    import imagecodecs

    return bytes(imagecodecs.htj2k_encode(block[0], level=qstep))


def _avif_encode(block: np.ndarray, level: float) -> bytes:
    import imagecodecs

    plane = block[0]
    return bytes(
        imagecodecs.avif_encode(
            np.repeat(plane[..., None], 3, axis=-1),
            level=int(level),
            speed=AVIF_SPEED,
            pixelformat="400",
            bitspersample=8 if plane.dtype == np.uint8 else 12,
            numthreads=1,
        )
    )


def _codec(name: str, label: str, attr: str, **kw) -> ClassicCodec:
    """An imagecodecs codec: one plane a block, decoded into the declared shape."""
    return ClassicCodec(
        name=name,
        label=label,
        planes=1,
        video=False,
        install=_INSTALL.format(label),
        check=lambda: _check(attr),
        decoder=_decode_into(f"{attr.lower()}_decode"),
        **kw,
    )


JPEGXL = _codec(
    "jpegxl", "JPEG XL", "JPEGXL", high_bits=16, setting="distance", native=_log(25.0, 0.01),
    levels=None, tile=256, encoder=_jpegxl_encode, dims=jxl_dims,
)  # fmt: skip
JPEG2K = _codec(
    "jpeg2k", "JPEG 2000", "JPEG2K", high_bits=16, setting="level (PSNR dB)",
    native=lambda q: 5.0 + 95.0 * q, levels=None, tile=512, encoder=_jpeg2k_encode,
    dims=j2k_dims,
)  # fmt: skip
HTJ2K = _codec(
    "htj2k", "HTJ2K", "HTJ2K", high_bits=16, setting="level (qstep)", native=_log(0.5, 1e-5),
    levels=None, tile=512, encoder=_htj2k_encode, dims=j2k_dims,
)  # fmt: skip
AVIF = _codec(
    "avif", "AVIF", "AVIF", high_bits=12, setting="level", native=lambda q: float(round(99 * q)),
    levels=100, tile=512, encoder=_avif_encode, dims=avif_dims,
)  # fmt: skip
