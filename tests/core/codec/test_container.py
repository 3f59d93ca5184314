import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_inif.core import CompressionConfig, Encoded, InifFormatError, compress, load
from napari_inif.core.codec.container import MAGIC, header_bytes, pack, unpack, write_atomic
from napari_inif.core.codec.decode import FieldDecoder, InifArray
from napari_inif.core.codec.quant import LEVEL_FACTORS, dequantise, rate_control


@pytest.fixture(scope="module")
def valid_file() -> bytes:
    data = np.random.default_rng(0).integers(0, 4000, (32, 64)).astype(np.uint16)
    return compress(data, CompressionConfig(ratio=4, steps=5)).to_bytes()


def test_pack_unpack_round_trip():
    header = {"a": [1, 2, 3], "b": "x"}
    assert unpack(pack(header, b"payload")) == (header, b"payload")


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda b: b[:5], "magic"),
        (lambda b: b"\x89PNG\r\n\x1a\n" + b[8:], "magic"),
        (lambda b: b[:8] + struct.pack("<H", 9) + b[10:], "version"),
        (lambda b: b[:-1], "truncated|size"),
        (lambda b: b + b"\0", "size"),
        (lambda b: b[:40] + bytes([b[40] ^ 1]) + b[41:], "checksum|truncated|size|header"),
    ],
)
def test_damaged_files_raise_format_error(valid_file, mutate, match):
    with pytest.raises(InifFormatError, match=match):
        Encoded.from_bytes(mutate(valid_file))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_random_mutations_only_ever_raise_format_error(valid_file, data):
    b = bytearray(valid_file)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "overwrite"]))
        at = data.draw(st.integers(0, len(b)))
        if kind == "flip" and at < len(b):
            b[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "cut":
            del b[at : at + data.draw(st.integers(1, 64))]
        elif kind == "insert":
            b[at:at] = data.draw(st.binary(min_size=1, max_size=16))
        else:
            chunk = data.draw(st.binary(min_size=1, max_size=8))
            b[at : at + len(chunk)] = chunk
    try:
        accepted = Encoded.from_bytes(bytes(b))
    except InifFormatError:
        return
    # The CRC covers everything before it, so a file that still loads can only be one whose
    # mutations cancelled out: it must be the same file and decode to the same pixels.
    assert bytes(b) == valid_file
    original = Encoded.from_bytes(valid_file).array()[...]
    np.testing.assert_array_equal(accepted.array()[...], original)


def _repack(header: dict, payload: bytes, version: tuple[int, int] = (2, 0)) -> bytes:
    """A file with a valid checksum around a hostile header: the checks past the CRC."""
    head = header_bytes(header)
    body = (
        MAGIC
        + struct.pack("<HHI", *version, len(head))
        + head
        + struct.pack("<I", len(payload))
        + payload
    )
    return body + struct.pack("<I", zlib.crc32(body))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_hostile_headers_with_valid_checksum_raise_format_error(valid_file, data):
    header, payload = unpack(valid_file)
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(sorted(header)))
        header[key] = data.draw(json_values | st.just([2**31] * 2) | st.just([1] * 3))
    if data.draw(st.booleans()):
        payload = data.draw(st.binary(max_size=64))
    try:
        encoded = Encoded.from_bytes(_repack(header, payload))
    except InifFormatError:
        return
    assert encoded.header.n_params < 10**7  # accepted files stay small


def test_huge_declared_sizes_do_not_allocate(valid_file):
    header, payload = unpack(valid_file)
    header["shape"] = [2**20, 2**20, 2**20]
    header["axes"] = "ZYX"
    with pytest.raises(InifFormatError):
        Encoded.from_bytes(_repack(header, payload))
    header, payload = unpack(valid_file)
    header["widths"] = [4096] * len(header["widths"])
    with pytest.raises(InifFormatError, match="payload"):
        Encoded.from_bytes(_repack(header, payload))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.inif"
    target.write_bytes(b"old")

    class Boom:
        def __len__(self):
            return 3

    with pytest.raises(TypeError):
        write_atomic(target, Boom())  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.inif"]


def test_written_files_get_normal_permissions(tmp_path):
    target = tmp_path / "out.inif"
    write_atomic(target, b"data")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_load_of_a_directory_or_other_file(tmp_path):
    with pytest.raises(InifFormatError):
        load(tmp_path)
    (tmp_path / "x.inif").write_bytes(b"not an inif file at all")
    with pytest.raises(InifFormatError, match="magic"):
        load(tmp_path / "x.inif")


def test_format_1_files_still_decode(valid_file):
    """1.x files have no ``first_half``/``bias_half``: one quantiser range for every tensor."""
    assert struct.unpack_from("<HH", valid_file, 8) == (2, 0)
    new = Encoded.from_bytes(valid_file)
    h = new.header
    assert h.first_half == min(32767, LEVEL_FACTORS["first"] * h.half)
    assert h.bias_half == min(32767, LEVEL_FACTORS["bias"] * h.half)
    q, payload = rate_control(dequantise(new.weights), len(new.payload))  # one range for all
    header, _ = unpack(valid_file)
    del header["first_half"], header["bias_half"]
    header["half"] = q.halves[0]
    old = Encoded.from_bytes(_repack(header, payload, version=(1, 0)))
    assert old.header.tensor_halves() == q.halves
    expected = InifArray(FieldDecoder(old.header, dequantise(q)))[...]
    np.testing.assert_array_equal(old.array()[...], expected)
    # The new file read as if it had one range for all is refused, not misread.
    header, payload = unpack(valid_file)
    del header["first_half"], header["bias_half"]
    with pytest.raises(InifFormatError, match="outside the quantiser range"):
        Encoded.from_bytes(_repack(header, payload))
    for key in ("first_half", "bias_half"):
        with pytest.raises(InifFormatError, match=f"quantiser {key}"):
            Encoded.from_bytes(_repack({**header, key: 0}, payload))


@pytest.mark.parametrize("where", ["fdopen", "fsync", "replace", "link"])
def test_interrupt_at_any_moment_of_an_atomic_write_leaves_no_file(tmp_path, monkeypatch, where):
    target = tmp_path / "out.inif"
    if where != "link":  # the no-overwrite path links a new file into place
        target.write_bytes(b"old")

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, where, interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, b"new", overwrite=where != "link")
    if where == "link":
        assert os.listdir(tmp_path) == []
    else:
        assert target.read_bytes() == b"old"
        assert os.listdir(tmp_path) == ["out.inif"]


def test_atomic_write_without_overwrite_never_replaces(tmp_path):
    target = tmp_path / "out.inif"
    write_atomic(target, b"first", overwrite=False)
    with pytest.raises(FileExistsError, match=r"out\.inif exists"):
        write_atomic(target, b"second", overwrite=False)
    assert target.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["out.inif"]


def test_a_full_disk_error_names_the_path(tmp_path, monkeypatch):
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    target = tmp_path / "out.inif"
    with pytest.raises(OSError, match=r"out\.inif") as info:
        write_atomic(target, b"data")
    assert info.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []
