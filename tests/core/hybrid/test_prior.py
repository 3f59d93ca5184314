"""Hybrid mode: codec prior + residual field, through the same file and decoding API."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import napari_inif
from napari_inif.cli import main
from napari_inif.core import CompressionConfig, InifFormatError, compress, load
from napari_inif.core.codec.encoded import Encoded
from napari_inif.core.codec.fitter import normalise
from napari_inif.core.hybrid import prior as hybrid
from napari_inif.core.layout import Layout
from napari_inif.core.metrics.quality import psnr
from napari_inif.core.registry import CODECS

SAMPLE = Path(napari_inif.__file__).parent / "_data" / "cancer_cells_TYX.tif"


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    """The bundled 16 x 130 x 130 uint16 cancer-cell stack (real data, in the package)."""
    import tifffile

    return tifffile.imread(SAMPLE)


@pytest.fixture
def nuclei(sample):
    """A real 128x128 uint8 plane (a cell frame scaled to 8 bits): a prior and a field."""
    plane = sample[3, :128, 2:130].astype(np.float64)
    return np.rint(plane / plane.max() * 255).astype(np.uint8)


@pytest.fixture
def cells_tyx(sample):
    """A real 6x48x40 uint16 time-lapse crop."""
    return sample[:6, 40:88, 50:90]


def _hybrid(data, ratio, prior="jpegxl", **kw):
    axes = kw.pop("axes", None)
    config = CompressionConfig(
        ratio=ratio,
        steps=kw.pop("steps", 40),
        batch_size=2048,
        device="cpu",
        mode="hybrid",
        prior=prior,
        **kw,
    )
    return compress(data, config, axes=axes)


def _prior_alone_psnr(data, nbytes, prior="jpegxl"):
    layout = Layout.of(data)
    norm, lo, hi = normalise(layout.to_canonical(data))
    p = hybrid.encode_prior(norm, layout, prior, nbytes)
    decoded = (p.decoded[..., 0] + 1) / 2 * (hi[0] - lo[0]) + lo[0]
    return psnr(data, np.clip(np.rint(decoded), 0, np.iinfo(data.dtype).max)), p


def test_round_trip_file_and_memory_agree(nuclei, tmp_path):
    enc = _hybrid(nuclei, ratio=5, prior_fraction=0.6)
    assert enc.header.prior["codec"] == "jpegxl"
    assert enc.prior and len(enc.prior) == enc.header.prior["nbytes"]
    path = enc.save(tmp_path / "n.inif")
    loaded = load(path)
    assert loaded.prior == enc.prior
    a, b = enc.array()[...], loaded.array()[...]
    assert a.dtype == np.uint8 and a.shape == nuclei.shape
    np.testing.assert_array_equal(a, b)
    # The residual field must not make the prior worse; on this crop it lands above 30 dB.
    alone, _ = _prior_alone_psnr(nuclei, enc.header.prior["nbytes"])
    measured = psnr(nuclei, a)
    assert measured == pytest.approx(enc.header.fit["psnr"], abs=1e-3)
    assert measured > 30
    assert measured >= alone - 0.3


def test_budget_counts_the_prior_bytes(nuclei):
    for ratio in (4.0, 6.0):
        enc = _hybrid(nuclei, ratio=ratio, steps=5)
        file_bytes = len(enc.to_bytes())
        assert enc.nbytes == file_bytes
        assert enc.ratio == pytest.approx(nuclei.nbytes / file_bytes)
        assert enc.header.prior["nbytes"] > 0.3 * file_bytes  # the prior is in the file
        assert abs(enc.ratio / ratio - 1) <= 0.10, enc.ratio


def test_prior_fraction_is_honoured(nuclei):
    small = _hybrid(nuclei, ratio=4, steps=5, prior_fraction=0.3)
    large = _hybrid(nuclei, ratio=4, steps=5, prior_fraction=0.8)
    budget = nuclei.nbytes / 4
    assert small.header.prior["nbytes"] <= 0.3 * budget
    assert large.header.prior["nbytes"] <= 0.8 * budget
    assert large.header.prior["nbytes"] > 1.5 * small.header.prior["nbytes"]
    assert large.header.n_params < small.header.n_params


def test_roi_decodes_only_touched_planes_and_blocks(cells_tyx):
    # Small blocks (a 2x2 grid in Y and X) so that "only the touched blocks" can fail.
    enc = _hybrid(
        cells_tyx, ratio=6, axes="TYX", steps=20, max_block_voxels=1024, prior_fraction=0.3
    )
    grid = enc.header.grid
    assert grid.n_blocks == 4
    full = enc.array()[...]
    fresh = Encoded.from_bytes(enc.to_bytes())
    roi = fresh.array()[2, 0:10, 0:10]  # the top-left corner: inside one block only
    np.testing.assert_array_equal(roi, full[2, 0:10, 0:10])
    decoder = fresh.decoder()
    assert decoder.prior is not None
    assert decoder.prior.tiles_decoded == {2}  # one tile per plane; only plane 2 decoded
    top_left = next(b for b in range(4) if all(lo == 0 for lo, _ in grid.bounds(b)))
    assert decoder.blocks_evaluated == {top_left}, decoder.blocks_evaluated


def test_prior_tiles_are_local_and_views_consistent(nuclei):
    layout = Layout.of(nuclei)
    norm, _, _ = normalise(layout.to_canonical(nuclei))
    p = hybrid.encode_prior(norm, layout, "jpegxl", 3000, tile=32)
    dec = hybrid.PriorDecoder(layout, p.info, p.section)
    assert dec.tiling.n_tiles == 4 * 4
    part = dec.region([np.arange(40, 60), np.arange(70, 80)], np.array([0]))
    assert dec.tiles_decoded == {6}  # row tile 1, column tile 2
    np.testing.assert_allclose(part, p.decoded[40:60, 70:80], atol=1e-6)
    # Between pixels the prior is interpolated; at pixel centres points() equals region().
    coords = np.array([[3.0, 4.0], [10.5, 20.0], [63.0, 79.0]])
    got = dec.points(coords)[:, 0]
    d = p.decoded[..., 0]
    expected = [d[3, 4], (d[10, 20] + d[11, 20]) / 2, d[63, 79]]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_sample_levels_and_zoom_work_on_hybrid_files(nuclei):
    enc = _hybrid(nuclei, ratio=5, steps=10)
    arr = enc.array()
    full = arr[...].astype(np.float32)
    at = np.array([[5, 7], [30, 40]])
    np.testing.assert_allclose(arr.sample(at)[:, 0], full[at[:, 0], at[:, 1]], atol=0.51)
    assert arr.zoom(2)[...].shape == (256, 256)
    assert arr.levels[0] is arr


def _gone(name):
    return dataclasses.replace(CODECS[name], check=lambda: "taken away by the test")


def test_unknown_or_missing_codec_names_the_available_ones(monkeypatch, nuclei):
    with pytest.raises(ValueError, match=r"'webp2' is unknown; available codec priors: .*jpegxl"):
        CompressionConfig(mode="hybrid", prior="webp2")
    CompressionConfig(mode="field", prior="jpegxl")  # the prior only matters in hybrid mode
    monkeypatch.setitem(CODECS, "avif", _gone("avif"))
    with pytest.raises(ValueError, match=r"'avif' is not available here \(taken away by the"):
        CompressionConfig(mode="hybrid", prior="avif")
    assert "avif" not in hybrid.available_priors()
    # A file whose codec is missing here says what to install when it is decoded.
    enc = _hybrid(nuclei, ratio=5, steps=3, prior="jpeg2k")
    monkeypatch.setitem(CODECS, "jpeg2k", _gone("jpeg2k"))
    with pytest.raises(
        InifFormatError, match="this file needs the jpeg2k codec: install imagecodecs"
    ):
        Encoded.from_bytes(enc.to_bytes()).array()[0, 0]
    # A codec this version does not know at all.
    info = {**enc.header.prior, "codec": "webp9"}
    with pytest.raises(InifFormatError, match="needs the unknown codec 'webp9'"):
        hybrid.PriorDecoder(enc.header.layout, info, enc.prior)


def test_bad_prior_sections_are_format_errors(nuclei):
    enc = _hybrid(nuclei, ratio=5, steps=3)
    info = dict(enc.header.prior)
    layout = enc.header.layout
    with pytest.raises(InifFormatError):
        hybrid.check_section(layout, info, enc.prior[:-1])
    with pytest.raises(InifFormatError):
        hybrid.check_section(layout, {**info, "tile": [0, 5]}, enc.prior)
    with pytest.raises(InifFormatError):
        hybrid.check_section(layout, {**info, "scale": -1.0}, enc.prior)
    bad = bytearray(enc.prior)
    bad[8:16] = b"\x00" * 8  # damage the first tile's codec bytes
    decoder = hybrid.PriorDecoder(layout, info, bytes(bad))
    with pytest.raises(InifFormatError, match="does not decode"):
        decoder.full()
    # One tile whose codestream declares other dimensions than the file's tiling.
    assert enc.header.prior["tile"] == [128, 128]
    other = hybrid.encode_prior(
        np.zeros((64, 32, 1), np.float32), Layout.of(np.zeros((64, 32), np.uint8)), "jpegxl", 9999
    )
    with pytest.raises(InifFormatError, match="declares 64x32 pixels, the file declares"):
        hybrid.PriorDecoder(layout, {**info, "nbytes": other.nbytes}, other.section).full()


def test_budget_error_when_the_prior_share_is_too_small(nuclei):
    from napari_inif.core import BudgetError

    with pytest.raises(BudgetError, match="prior"):
        _hybrid(nuclei, ratio=40, steps=3, prior_fraction=0.1)


@pytest.mark.parametrize("prior", ["jpeg2k", "htj2k", "avif"])
def test_other_image_codecs_round_trip_16_bit(prior, cells_tyx):
    enc = _hybrid(cells_tyx, ratio=4, axes="TYX", steps=10, prior=prior)
    out = Encoded.from_bytes(enc.to_bytes()).array()[...]
    assert out.dtype == np.uint16
    assert enc.header.prior["bits"] == (12 if prior == "avif" else 16)
    assert psnr(cells_tyx, out) > 25


@pytest.mark.skipif(not CODECS["hevc"].available(), reason="ffmpeg with libx265 absent")
def test_hevc_prior_codes_blocks_of_planes(cells_tyx):
    enc = _hybrid(cells_tyx, ratio=6, axes="TYX", steps=10, prior="hevc")
    assert enc.header.prior["planes"] == 16
    fresh = Encoded.from_bytes(enc.to_bytes())
    np.testing.assert_array_equal(fresh.array()[4], enc.array()[4])
    assert fresh.decoder().prior.tiles_decoded == {0}  # all 6 planes are one HEVC block
    assert psnr(cells_tyx, enc.array()[...]) > 25


def test_cli_hybrid_compress_and_info(tmp_path, nuclei, capsys):
    import tifffile

    src = tmp_path / "n.tif"
    tifffile.imwrite(src, nuclei)
    out = tmp_path / "n.inif"
    rc = main(
        [
            "compress",
            str(src),
            "-o",
            str(out),
            "--ratio",
            "5",
            "--steps",
            "5",
            "--quiet",
            "--device",
            "cpu",
            "--mode",
            "hybrid",
            "--prior",
            "jpegxl",
            "--prior-fraction",
            "0.5",
        ]
    )
    assert rc == 0
    assert load(out).header.prior["codec"] == "jpegxl"
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "prior       hybrid: jpegxl" in text
    rc = main(
        [
            "compress",
            str(src),
            "-o",
            str(tmp_path / "x.inif"),
            "--mode",
            "hybrid",
            "--prior",
            "nope",
            "--quiet",
        ]
    )
    assert rc == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err  # argparse lists the codecs


@pytest.mark.parametrize("prior", ["jpegxl", "jpeg2k", "htj2k", "avif", "hevc"])
def test_files_written_before_the_classic_layer_read_the_same(prior, sample):
    """tests/core/hybrid/data/cells_*.inif were written by the code before core/classic
    (frames 0-3, rows 20-67, columns 30-93 of the bundled stack, ratio 6, 10 steps): they
    decode to the PSNR their header recorded when they were written."""
    if not CODECS[prior].available():
        pytest.skip(CODECS[prior].unavailable())
    enc = load(Path(__file__).parent / "data" / f"cells_{prior}.inif")
    assert enc.header.prior["codec"] == prior
    out = enc.array()[...]
    assert psnr(sample[:4, 20:68, 30:94], out) == pytest.approx(enc.header.fit["psnr"], abs=1e-3)
