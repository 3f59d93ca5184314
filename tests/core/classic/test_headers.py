"""Dimensions read from codestream headers, without decoding."""

from __future__ import annotations

import numpy as np
import pytest

from napari_inif.core.classic.headers import avif_dims, hevc_dims, j2k_dims, jxl_dims
from napari_inif.core.registry import CODECS

SHAPES = [(1, 1), (7, 300), (65, 97), (128, 256), (240, 320), (96, 96)]


@pytest.mark.parametrize("name", ["jpegxl", "jpeg2k", "htj2k", "avif", "hevc"])
def test_each_codec_header_gives_the_coded_shape(name):
    codec = CODECS[name]
    if not codec.available():
        pytest.skip(codec.unavailable())
    rng = np.random.default_rng(1)
    for h, w in SHAPES:
        if name == "hevc" and min(h, w) < 8:
            continue  # x265 refuses pictures under 8 pixels
        block = rng.integers(0, 255, (1, h, w), dtype=np.uint8)
        assert codec.dims(codec.encode(block, 0.5)) == (h, w), (name, h, w)


def test_hand_made_headers():
    siz = b"\xff\x4f\xff\x51\x00\x29\x00\x00" + np.array([300, 200, 100, 50], ">u4").tobytes()
    siz += b"\x00" * 16 + b"\x00\x01" + b"\x07\x01\x01"
    assert j2k_dims(siz) == (150, 200)
    with pytest.raises(ValueError, match="3 components"):
        j2k_dims(siz[:40] + b"\x00\x03" + siz[42:])
    # JPEG XL SizeHeader: small=1, height (5 bits)=1 -> 16, ratio=7 (2:1) -> width 32.
    bits = 1 | (1 << 1) | (7 << 6)
    assert jxl_dims(b"\xff\x0a" + bits.to_bytes(2, "little")) == (16, 32)
    with pytest.raises(ValueError, match="truncated"):
        jxl_dims(b"\xff\x0a\x00")
    with pytest.raises(ValueError, match="one"):
        avif_dims(b"\x00\x00\x00\x08free")
    with pytest.raises(ValueError, match="runs past"):
        avif_dims(b"\x00\x00\x10\x00meta")
    with pytest.raises(ValueError, match="no HEVC sequence parameter set"):
        hevc_dims(b"\x00\x00\x01\x40\x01" + b"\x00" * 20)
