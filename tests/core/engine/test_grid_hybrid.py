"""Hybrid mode with the grid field: a classic-codec prior codes the image, the grid its
residual; the file carries both and decodes as in memory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_inif.core import CompressionConfig, compress, loads
from napari_inif.core.codec.container import GRID_VERSION, pack, unpack_version
from napari_inif.core.codec.gridfile import GridEncoded
from napari_inif.core.codec.gridheader import from_binary, to_binary
from napari_inif.core.errors import InifFormatError
from napari_inif.core.metrics.quality import psnr
from tests.conftest import data_file


def _hybrid(data, ratio, axes, steps=60, **kw):
    config = CompressionConfig(
        ratio=ratio, steps=steps, architecture="grid", mode="hybrid", prior="jpegxl", **kw
    )
    return compress(data, config, axes=axes)


@pytest.fixture(scope="module")
def hybrid_16x():
    """``cells_tyx`` (6 x 48 x 40 uint16) at 16x: a JPEG-XL prior and a residual grid."""
    return _hybrid(_cells_tyx(), 16, "TYX")


def _cells_tyx() -> np.ndarray:
    return tifffile.imread(data_file("cancer_cell_migration_crop_TYX.tif"))[:6, 40:88, 50:90]


def test_file_decodes_as_memory_with_the_prior_counted(cells_tyx, hybrid_16x):
    enc = hybrid_16x
    assert isinstance(enc, GridEncoded)
    assert enc.header.prior["codec"] == "jpegxl"
    assert len(enc.prior) == enc.header.prior["nbytes"] > 0.5 * enc.nbytes  # most of the file
    blob = enc.to_bytes()
    assert len(blob) == enc.nbytes
    target = cells_tyx.nbytes / 16  # the whole file, prior included, within 10%
    assert 0.9 * target <= enc.nbytes <= 1.01 * target
    back = loads(blob)
    assert isinstance(back, GridEncoded)
    assert back.prior == enc.prior and back.stream == enc.stream
    assert back.header == enc.header  # dtype, per-channel range and prior from the JSON
    decoded = back.array()[...]
    np.testing.assert_array_equal(decoded, enc.array()[...])  # bit-identical
    assert decoded.dtype == cells_tyx.dtype and decoded.shape == cells_tyx.shape
    measured = psnr(cells_tyx, decoded, float(cells_tyx.max()) - float(cells_tyx.min()))
    assert abs(back.header.fit["psnr"] - measured) < 0.05
    # points between pixels: the prior is interpolated as the grid is, both ways alike
    pts = np.array([[0.0, 3.25, 7.5], [5.0, 47.0, 39.0], [2.5, 20.0, 0.0]])
    np.testing.assert_array_equal(back.array().sample(pts), enc.array().sample(pts))


def test_near_the_pure_grid_at_the_same_ratio(cells_tyx, hybrid_16x, grid_encoded):
    # 60 steps each, 16x, the whole file counted: measured 29.19 dB (hybrid, JPEG-XL
    # prior) vs 27.95 dB (grid alone) first; 29.02 vs 29.35 dB once the grid's re-fits
    # under budget ran at the full learning rate; 29.12 vs 29.80 once the context
    # model read the parent's neighbours (the grid alone gains more: the automatic
    # split gives the prior 90%, tuned for SIREN fields; a grid-specific split is not
    # done).  The hybrid must not fall back either.
    data_range = float(cells_tyx.max()) - float(cells_tyx.min())
    hybrid = psnr(cells_tyx, hybrid_16x.array()[...], data_range)
    grid = psnr(cells_tyx, grid_encoded.array()[...], data_range)
    assert abs(grid_encoded.nbytes - hybrid_16x.nbytes) <= 0.1 * hybrid_16x.nbytes
    assert hybrid >= grid - 0.8, (hybrid, grid)
    assert hybrid >= 28.9


def test_two_channels_round_trip(cells_tyx):
    data = np.stack([cells_tyx[0], cells_tyx[3] // 2])  # CYX, per-channel ranges differ
    enc = _hybrid(data, 8, "CYX", steps=30)
    assert enc.nbytes <= 1.01 * data.nbytes / 8
    back = loads(enc.to_bytes())
    assert back.header.lo != (back.header.lo[0],) * 2 or back.header.hi[0] != back.header.hi[1]
    np.testing.assert_array_equal(back.array()[...], enc.array()[...])
    assert back.header.fit["psnr"] > 28


def _repacked(enc: GridEncoded, change) -> bytes:
    _version, head, body = unpack_version(enc.to_bytes())
    obj = json.loads(json.dumps(from_binary(head)))
    body = change(obj, body)
    return pack(to_binary(obj), body, GRID_VERSION)


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("section longer than the body", lambda o, b: (o["p"].update(n=len(b) + 1), b)[1]),
        ("section size off by one", lambda o, b: (o["p"].update(n=o["p"]["n"] - 1), b)[1]),
        ("unknown codec", lambda o, b: (o["p"].update(c="webp9"), b)[1]),
        ("no image range", lambda o, b: (o.pop("l"), b)[1]),
        ("range per channel", lambda o, b: (o.update(h=[1, 2, 3]), b)[1]),
        ("no dtype", lambda o, b: (o.pop("d"), b)[1]),
        ("prior not an object", lambda o, b: (o.update(p=[1]), b)[1]),
        ("damaged prior tile", lambda o, b: b[:20] + bytes(40) + b[60:]),
    ],
)
def test_inconsistent_hybrid_files_raise_format_errors(hybrid_16x, name, change):
    blob = _repacked(hybrid_16x, change)
    with pytest.raises(InifFormatError):
        loads(blob).array()[...]


def test_compact_json(hybrid_16x, grid_encoded):
    """The prior entry costs its few numbers: short keys, integer ranges for integer data."""
    _version, head, _body = unpack_version(hybrid_16x.to_bytes())
    obj = from_binary(head)
    assert set(obj["p"]) == {"c", "n", "t", "p", "b", "q", "s"}
    assert all(isinstance(v, int) for v in (*obj["l"], *obj["h"])) and obj["d"] == "uint16"
    pure = GridEncoded.overhead(grid_encoded.header)
    hybrid = GridEncoded.overhead(hybrid_16x.header) - len(hybrid_16x.prior)
    assert hybrid - pure < 90


def test_fuzz_mutations_of_a_hybrid_grid_file_raise_only_inif_format_error(hybrid_16x):
    """``benchmarks/fuzz.py``'s mutations of a hybrid grid file (prior section first)."""
    import importlib.util
    import random
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "fuzz.py"
    spec = importlib.util.spec_from_file_location("inif_fuzz", path)
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    rng = random.Random(14)
    good = hybrid_16x.to_bytes()
    assert fuzz.exercise(good) == "ok"
    outcomes = {"ok": 0, "format": 0}
    for _ in range(120):
        outcomes[fuzz.exercise(fuzz.mutate(good, rng))] += 1  # anything else raises here
    assert outcomes["format"] >= 60
