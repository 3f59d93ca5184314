"""Image dimensions declared by a codestream's own header, read without decoding it.

Each reader returns ``(height, width)`` and raises ``ValueError`` on a header it cannot
read; none allocates more than the header's few bytes.  Facts used:

* JPEG 2000 / HTJ2K codestream (ISO/IEC 15444-1 annex A.5.1): ``SOC`` (``FF4F``) is
  followed by the ``SIZ`` marker (``FF51``) holding ``Xsiz, Ysiz, XOsiz, YOsiz`` as
  big-endian u32 at byte offsets 8, 12, 16, 20 and the component count ``Csiz`` at 40;
* JPEG XL (ISO/IEC 18181-1 ``SizeHeader``): after the ``FF0A`` signature, LSB-first
  bits give the height, an aspect-ratio code and (ratio 0) the width; a container
  (``JXL `` box) carries the codestream in a ``jxlc`` box or ``jxlp`` boxes;
* AVIF (ISO/IEC 23008-12): ``meta`` > ``iprp`` > ``ipco`` holds ``ispe`` boxes (full
  box, then u32 width and height), one per image item;
* HEVC (ITU-T H.265 7.3.2.2): the first sequence parameter set (NAL type 33) gives
  ``pic_width/height_in_luma_samples`` less the conformance window.
"""

from __future__ import annotations

import struct

__all__ = ["avif_dims", "hevc_dims", "j2k_dims", "jxl_dims"]


def j2k_dims(data: bytes) -> tuple[int, int]:
    """``(height, width)`` of a single-component JPEG 2000 codestream."""
    if len(data) < 42 or data[:4] != b"\xff\x4f\xff\x51":
        raise ValueError("not a JPEG 2000 codestream (no SOC + SIZ)")
    xsiz, ysiz, xo, yo = struct.unpack_from(">4I", data, 8)
    (components,) = struct.unpack_from(">H", data, 40)
    if components != 1 or xsiz <= xo or ysiz <= yo:
        raise ValueError(f"SIZ declares {components} components, {xsiz - xo}x{ysiz - yo}")
    return ysiz - yo, xsiz - xo


class _Bits:
    """Reader of a bit string: LSB-first (JPEG XL) or MSB-first with Exp-Golomb (HEVC)."""

    def __init__(self, data: bytes, msb: bool = False):
        self.value = int.from_bytes(data, "big" if msb else "little")
        self.size = 8 * len(data)
        self.msb = msb
        self.pos = 0

    def __call__(self, n: int) -> int:
        if self.pos + n > self.size:
            raise ValueError("header is truncated")
        shift = self.size - self.pos - n if self.msb else self.pos
        self.pos += n
        return (self.value >> shift) & ((1 << n) - 1)

    def ue(self) -> int:
        """An unsigned Exp-Golomb code."""
        zeros = 0
        while self(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("invalid Exp-Golomb code")
        return (1 << zeros) - 1 + self(zeros)


def _jxl_codestream(data: bytes) -> bytes:
    if data[:2] == b"\xff\x0a":
        return data
    if data[4:8] != b"JXL ":
        raise ValueError("not a JPEG XL codestream or container")
    for kind, body in _boxes(data):
        if kind == b"jxlc":
            return body
        if kind == b"jxlp":
            return body[4:]  # the first partial box: a 4-byte index, then the codestream
    raise ValueError("JPEG XL container without a codestream box")


def jxl_dims(data: bytes) -> tuple[int, int]:
    """``(height, width)`` from a JPEG XL codestream's ``SizeHeader``."""
    stream = _jxl_codestream(data)
    if stream[:2] != b"\xff\x0a":
        raise ValueError("not a JPEG XL codestream")
    bits = _Bits(stream[2:16])

    def dimension(small: bool) -> int:
        if small:
            return (bits(5) + 1) * 8
        return 1 + bits((9, 13, 18, 30)[bits(2)])

    small = bool(bits(1))
    height = dimension(small)
    ratio = bits(3)
    if ratio == 0:
        return height, dimension(small)
    num, den = ((1, 1), (12, 10), (4, 3), (3, 2), (16, 9), (5, 4), (2, 1))[ratio - 1]
    return height, height * num // den


def _boxes(data: bytes, start: int = 0, end: int | None = None):
    """``(type, body)`` of the ISO-BMFF boxes in ``data[start:end]``."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        head = 8
        if size == 1:
            if pos + 16 > end:
                raise ValueError("truncated box")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            head = 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            raise ValueError(f"box {kind!r} runs past its parent")
        yield kind, data[pos + head : pos + size]
        pos += size


def avif_dims(data: bytes) -> tuple[int, int]:
    """``(height, width)`` from the ``ispe`` boxes of an AVIF file (all must agree)."""
    found = set()
    for kind, meta in _boxes(data):
        if kind != b"meta":
            continue
        for kind2, iprp in _boxes(meta, 4):  # meta is a full box
            if kind2 != b"iprp":
                continue
            for kind3, ipco in _boxes(iprp):
                if kind3 != b"ipco":
                    continue
                for kind4, ispe in _boxes(ipco):
                    if kind4 == b"ispe" and len(ispe) >= 12:
                        width, height = struct.unpack_from(">2I", ispe, 4)
                        found.add((height, width))
    if len(found) != 1:
        raise ValueError(f"AVIF declares {len(found)} image sizes, expected one")
    return found.pop()


def _hevc_sps(data: bytes) -> bytes:
    pos = 0
    while True:
        pos = data.find(b"\x00\x00\x01", pos)
        if pos < 0 or pos + 5 > len(data):
            raise ValueError("no HEVC sequence parameter set")
        pos += 3
        if (data[pos] >> 1) & 0x3F == 33:
            nal = data[pos + 2 : pos + 2 + 256]  # the fields read sit in the first bytes
            return nal.replace(b"\x00\x00\x03", b"\x00\x00")  # emulation prevention


def hevc_dims(data: bytes) -> tuple[int, int]:
    """``(height, width)`` of the pictures of an HEVC Annex-B stream (its first SPS)."""
    bits = _Bits(_hevc_sps(data), msb=True)
    bits(4)  # sps_video_parameter_set_id
    sub_layers = bits(3)  # sps_max_sub_layers_minus1
    bits(1)
    bits(88)  # general profile space, tier, profile, compatibility and constraint flags
    bits(8)  # general_level_idc
    present = [(bits(1), bits(1)) for _ in range(sub_layers)]
    if sub_layers:
        bits(2 * (8 - sub_layers))
    for profile, level in present:
        bits(88 * profile + 8 * level)
    bits.ue()  # sps_seq_parameter_set_id
    chroma = bits.ue()
    if chroma == 3:
        bits(1)
    width, height = bits.ue(), bits.ue()
    sub_w, sub_h = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}.get(chroma, (1, 1))
    if bits(1):  # conformance_window_flag
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    if width <= 0 or height <= 0:
        raise ValueError(f"SPS declares {width}x{height} pictures")
    return height, width
