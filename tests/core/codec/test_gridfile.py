"""Grid-field ``.inif`` files: container 5.0 (compact layout, binary header; 4.0 and the
3.0 compact JSON read), budget, hostile streams."""

from __future__ import annotations

import io
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest

from napari_inif.core.codec.container import (
    GRID_JSON_VERSION,
    GRID_VERSION,
    header_bytes,
    overhead_bytes,
    pack,
    unpack_version,
)
from napari_inif.core.codec.encoded import Encoded, load, loads
from napari_inif.core.codec.gridfile import BYTES_PER_LATENT
from napari_inif.core.codec.gridheader import from_binary, to_binary
from napari_inif.core.codec.varint import put_varint
from napari_inif.core.errors import DecodeBudgetError, InifFormatError


def test_header_is_small_and_reads_back(grid_encoded, tmp_path):
    version, head, stream = unpack_version(grid_encoded.to_bytes())
    assert version == GRID_VERSION and stream == grid_encoded.stream
    # the shape is the stream's: not stored
    assert set(from_binary(head)) == {"k", "a", "x", "u", "m", "r"}
    # ~20 bytes of fields + the deflated JSON of scale, unit and source name (measured 75
    # bytes for this TYX file in format 4.0; as a 3.0 JSON header, 135)
    assert len(head) <= 72 < 120 < len(header_bytes(grid_encoded.header.to_file_json()))
    assert (
        grid_encoded.nbytes - len(stream)
        == 16 + len(head)
        == overhead_bytes(GRID_VERSION, len(head)) + len(head)
    )
    path = grid_encoded.save(tmp_path / "g.inif")
    back = load(path)
    h = back.header
    assert (h.layout.shape, h.layout.axes, h.layout.dtype) == ((6, 48, 40), "TYX", "uint16")
    assert h.scale == (1.0, 0.5, 0.5) and h.unit == "um" and h.metadata == {"source": "cells"}
    assert h.fit == grid_encoded.header.fit and h.fit["steps"] >= 60
    assert h.to_json()["field"] == "grid" and h.to_json()["fit"]["psnr"] == h.fit["psnr"]
    with pytest.raises(FileExistsError):
        back.save(path, overwrite=False)


def test_a_plain_header_is_binary_fields_only(grid_encoded):
    """No metadata, scale or unit: flags, axes and the six record fields (the shape is
    the stream's); 16 bytes of container around it where format 4.0 spent 24."""
    plain = replace(grid_encoded.header, scale=None, unit=None, metadata={})
    head = to_binary(plain.to_file_json(), implied=[6, 48, 40])
    fit = plain.fit  # steps, seconds x 10 and max error x 10 as varints
    scaled = (fit["steps"], fit["seconds"] * 10, fit["max_error"] * 10)
    varints = sum(len(_varint(round(v))) for v in scaled)
    assert len(head) == 1 + 1 + 3 + varints + 2 + 2 + 2
    assert len(head) < len(to_binary(plain.to_file_json(), major=4)) - 3 - 3
    back = loads(pack(head, grid_encoded.stream, GRID_VERSION))
    assert back.header.fit == plain.fit and back.header.layout == plain.layout
    assert len(pack(head, grid_encoded.stream, GRID_VERSION)) == 16 + len(head) + len(
        grid_encoded.stream
    )
    # the shape is written when the stream does not imply it (or not asked)
    assert len(to_binary(plain.to_file_json())) == len(head) + 3
    # a number no field holds exactly (an infinite PSNR) goes to the JSON part
    lossless = plain.with_fit(psnr=float("inf"), seconds=1.25)
    head = to_binary(lossless.to_file_json())
    assert head[0] & 0x40 and len(head) > 26
    assert loads(pack(head, grid_encoded.stream, GRID_VERSION)).header.fit == lossless.fit


def test_a_format_4_file_still_reads(grid_encoded):
    """Files written before the compact layout (4.0: u16 minor, u32 lengths, the shape
    and u32 record fields) read the same."""
    head4 = to_binary(grid_encoded.header.to_file_json(), major=4)
    back = loads(pack(head4, grid_encoded.stream, (4, 0)))
    assert back.header == grid_encoded.header
    np.testing.assert_array_equal(back.array()[...], grid_encoded.array()[...])


def test_a_format_4_file_written_by_an_earlier_release_decodes_as_its_writer_did(cells_tyx):
    """Format 4.0 with a version-5 grid stream (f32 intensity map, a byte a field):
    written at commit 4c8c300 (tests/data/README.md)."""
    from napari_inif.core.metrics.quality import psnr
    from tests.conftest import TEST_DATA

    blob = (TEST_DATA / "grid_format4_cells.inif").read_bytes()
    assert unpack_version(blob).version == (4, 0)
    old = loads(blob)
    assert old.stream[:3] == b"IG\x05"
    assert old.header.metadata["source"].endswith("4c8c300 (format 4.0)")
    decoded = old.array()[...]
    data_range = float(cells_tyx.max()) - float(cells_tyx.min())
    assert abs(psnr(cells_tyx, decoded, data_range) - old.header.fit["psnr"]) <= 0.005
    # the same field written now: a version-6 stream, format 5.0, 20+ bytes smaller
    from napari_inif.core.codec.grid import GridCode, encode_grid

    code = GridCode(old.stream)
    spec = code.spec
    new = encode_grid(
        spec, code.latents(), code.scales, code.weights, code.lo, code.hi, code.dtype
    ).data
    again = replace(old, stream=new, _decoder=[])
    assert again.nbytes <= len(blob) - 20
    np.testing.assert_array_equal(loads(again.to_bytes()).array()[...], decoded)


def test_a_file_written_by_an_earlier_release_decodes_as_its_writer_did(cells_tyx):
    """Format 3.0 (JSON header) with a version-2 grid stream (every level tiled, edges
    listed): written at commit c5da427 (tests/data/README.md)."""
    from napari_inif.core.metrics.quality import psnr
    from tests.conftest import TEST_DATA

    blob = (TEST_DATA / "grid_format3_cells.inif").read_bytes()
    assert unpack_version(blob).version == GRID_JSON_VERSION
    old = loads(blob)
    assert old.header.metadata["source"].startswith("cells_tyx crop")
    decoded = old.array()[...]
    data_range = float(cells_tyx.max()) - float(cells_tyx.min())
    # the writer's own measurement on its decode (2 decimals): the same pixels now
    assert abs(psnr(cells_tyx, decoded, data_range) - old.header.fit["psnr"]) <= 0.005
    assert old.stream[2] == 2  # grid stream version 2 (the writer now writes 3)


def test_a_format_3_file_still_reads(grid_encoded):
    """Files written before the binary header (3.0: compact JSON) read the same."""
    old = pack(grid_encoded.header.to_file_json(), grid_encoded.stream, GRID_JSON_VERSION)
    back = loads(old)
    assert back.header == grid_encoded.header
    np.testing.assert_array_equal(back.array()[...], grid_encoded.array()[...])


def test_siren_reader_refuses_a_grid_file_by_name(grid_encoded):
    with pytest.raises(InifFormatError, match="grid-field file"):
        Encoded.from_bytes(grid_encoded.to_bytes())


def test_regions_levels_zoom_and_sample_match_the_whole(grid_encoded, monkeypatch):
    import napari_inif.core.codec.griddecode as gd

    arr = grid_encoded.array()
    full = arr[...]
    np.testing.assert_array_equal(arr[1:4, 5:30:2, 7:33], full[1:4, 5:30:2, 7:33])
    np.testing.assert_array_equal(arr[2], full[2])
    monkeypatch.setattr(gd, "RENDER_CHUNK", 97)  # many small chunks, same values
    np.testing.assert_array_equal(grid_encoded.array()[...], full)
    assert arr.zoom(2).shape == (6, 96, 80)
    pts = np.array([[1, 10, 12], [4, 47, 0]], float)
    got = arr.sample(pts)
    assert got.shape == (2, 1)
    assert abs(got[0, 0] - full[1, 10, 12]) <= 0.51 and abs(got[1, 0] - full[4, 47, 0]) <= 0.51


def test_decode_budget_bounds_latents_and_selections(grid_encoded):
    blob = grid_encoded.to_bytes()
    pixels = 6 * 48 * 40
    with pytest.raises(DecodeBudgetError, match="latents"):
        loads(blob, budget=pixels * BYTES_PER_LATENT - 1)
    arr = loads(blob, budget=pixels * 30).array()  # the latents fit, a whole decode does not
    with pytest.raises(DecodeBudgetError, match="region"):
        arr[...]
    assert arr[0, :8, :8].shape == (8, 8)


def _varint(n: int) -> bytes:
    out = io.BytesIO()
    put_varint(out, n)
    return out.getvalue()


def _hostile_stream(shape: tuple[int, ...]) -> bytes:
    """A version-6 grid stream header declaring ``shape`` (uint16, 7 levels, 16-16), no
    data."""
    head = io.BytesIO()
    head.write(b"IG" + bytes([6, (len(shape) - 1) | 1 << 2, 1]))
    for n in shape:
        head.write(_varint(n))
    head.write(bytes([6, 2 << 3, 1, 16, 16, 0]) + _varint(0) + _varint(256))
    return head.getvalue() + bytes(64)


@pytest.mark.parametrize(
    ("json_shape", "stream_shape", "error"),
    [
        ([1 << 20, 1 << 20], (1 << 20, 1 << 20), DecodeBudgetError),  # consistent, huge
        ([32, 32], (1 << 20, 1 << 20), InifFormatError),  # the stream lies
        ([32, 32], (1 << 30, 1 << 30, 1 << 30), InifFormatError),
        (None, (1 << 20, 1 << 20), DecodeBudgetError),  # the header takes the stream's
        (None, (1 << 14, 1 << 14), DecodeBudgetError),  # ... under the latent bound
    ],
)
def test_hostile_stream_refused_before_allocating(json_shape, stream_shape, error):
    if json_shape is None:  # format 5: no shape in the header, the stream's is taken
        head = bytes([0, 2 | 8]) + b"YX"
    else:
        head = to_binary({"k": "grid", "a": "YX", "s": json_shape})
    data = pack(head, _hostile_stream(stream_shape), GRID_VERSION)
    import napari_inif.core.codec.grid  # noqa: F401  (imports torch: not the reader's doing)

    tracemalloc.start()
    try:
        with pytest.raises(error):
            loads(data).array()[...]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


@pytest.mark.parametrize("version", [GRID_VERSION, GRID_JSON_VERSION])
@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"k": "siren"}, "unknown field kind"),
        ({"s": [6, 48, 41]}, "does not match the image"),
        ({"s": [48, 40]}, "do not match shape"),
        ({"a": "tyx"}, "upper-case"),
        ({"x": [1.0]}, "scale"),
        ({"r": []}, "objects"),
    ],
)
def test_bad_header_values_are_format_errors(grid_encoded, version, change, match):
    _, head, stream = unpack_version(grid_encoded.to_bytes())
    obj = {"s": [6, 48, 40], **from_binary(head), **change}
    if version == GRID_VERSION:
        if "k" in change or len(change.get("s", "abc")) != 3:
            pytest.skip("not writable in format 4 or 5: no kind (always grid), one axis count")
        header = to_binary(obj) if "r" not in change else _with_json(head, {"r": []})
    else:
        header = obj
    with pytest.raises(InifFormatError, match=match):
        loads(pack(header, stream, version))


def _with_json(head: bytes, part: dict) -> bytes:
    """``head``'s fields (no record fields) with ``part`` as its JSON part."""
    n = head[1] & 7  # the shape is the stream's (bit 3): not stored
    return bytes([0xC0, head[1]]) + head[2 : 2 + n] + header_bytes(part)


@pytest.mark.parametrize(
    ("head", "match"),
    [
        (b"", "truncated"),
        (bytes([0, 0]), "axes"),
        (bytes([0x80, 3]) + b"TYX" + bytes([6, 48, 40]), "flags"),
        (bytes([0x40, 3]) + b"TYX" + bytes([6, 48, 40]) + b"[1]", "not a JSON object"),
        (bytes([0x40, 3]) + b"TYX" + bytes([6, 48, 40]) + b"[" * 100_000, "JSON"),
        (bytes([0, 3]) + b"TYX" + bytes([6, 48, 40, 0]), "after its fields"),
        (bytes([0, 3]) + b"TYX" + b"\xff" * 12, "varint|bound"),
        (bytes([0, 3]) + b"T\xffX" + bytes([6, 48, 40]), "ASCII"),
        (bytes([1, 3]) + b"TYX" + bytes([6, 48, 40, 0x81]), "truncated"),
        (bytes([4, 3]) + b"TYX" + bytes([6, 48, 40, 1]), "truncated"),
        (bytes([0, 0x13]) + b"TYX", "axes byte"),
        (bytes([0, 0x0C]) + b"CTYX", "do not fit"),
        (bytes([0xC0, 3]) + b"TYX" + bytes([6, 48, 40]) + b"junk", "JSON"),
    ],
)
def test_malformed_binary_headers_are_format_errors(grid_encoded, head, match):
    with pytest.raises(InifFormatError, match=match):
        loads(pack(head, grid_encoded.stream, GRID_VERSION))


def test_mutated_and_truncated_grid_files_raise_only_format_errors(grid_encoded):
    import random

    rng = random.Random(14)
    _, head, stream = unpack_version(grid_encoded.to_bytes())
    outcomes = {"ok": 0, "format": 0}
    for i in range(150):
        body = bytearray(stream)
        if i % 3 == 0:  # truncated or extended stream, valid container
            cut = rng.randrange(len(body) + 16)
            body = body[:cut] if cut < len(body) else body + bytes(cut - len(body))
        else:  # byte flips in the stream (header, weights or tiles), valid checksum
            lo = 0 if i % 3 == 1 else 40
            for _ in range(rng.randint(1, 4)):
                body[rng.randrange(lo, len(body))] ^= 1 << rng.randrange(8)
        try:
            arr = loads(pack(head, bytes(body), GRID_VERSION)).array()
            arr[0, :5, :5]
            arr[...]
            arr.sample(np.full((3, 3), 0.5))
        except InifFormatError:
            outcomes["format"] += 1
        else:
            outcomes["ok"] += 1
    assert outcomes["format"] >= 20 and outcomes["ok"] >= 5
