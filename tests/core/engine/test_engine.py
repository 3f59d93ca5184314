"""One engine: every option works on the path it takes, or is refused in one clear line."""

import numpy as np
import pytest
import zarr

from napari_inif.cli import main
from napari_inif.core import CompressionConfig, compress, load
from napari_inif.core.engine import fit, streamed_refusal
from napari_inif.core.io.source import ArraySource

TINY = {"ratio": 8, "steps": 5, "batch_size": 1024, "params_per_block": 800}


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"mode": "hybrid", "prior": "jpeg2k"}, "mode 'hybrid' needs the whole image"),
        ({"guidance": "ssim"}, "guidance 'ssim' needs the whole image"),
        ({"time_limit": 5.0}, "takes a number of steps"),
    ],
)
def test_the_streamed_path_refuses_what_it_cannot_do_before_any_work(cells_tyx, settings, words):
    config = CompressionConfig(**TINY, **settings)
    assert words in (streamed_refusal(config) or "")
    source = ArraySource.from_array(cells_tyx, "TYX")
    with pytest.raises(ValueError, match=words):
        fit(source, config, streamed=True)  # refused at the call, before reading a block
    # ... while the in-memory path honours the option
    assert streamed_refusal(CompressionConfig(**TINY)) is None


def test_hybrid_on_the_in_memory_path_writes_a_hybrid_file(cells_tyx):
    config = CompressionConfig(**TINY, mode="hybrid", prior="jpeg2k")
    encoded = compress(ArraySource.from_array(cells_tyx, "TYX"), config)
    assert encoded.header.prior is not None and encoded.header.prior["codec"] == "jpeg2k"


def test_cli_refuses_hybrid_and_guidance_on_a_streamed_zarr_in_one_line(
    cells_zarr, tmp_path, capsys
):
    out = tmp_path / "cells.inif"
    base = ["compress", str(cells_zarr), "-o", str(out), "--ratio", "8", "--steps", "3"]
    for extra, words in (
        (["--mode", "hybrid", "--prior", "jpeg2k"], "mode 'hybrid' needs the whole image"),
        (["--guidance", "ssim"], "guidance 'ssim' needs the whole image"),
    ):
        assert main([*base, *extra, "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, err
        assert not out.exists()  # never a silent plain-field file


def test_an_array_and_its_in_memory_source_give_the_same_file(cells_tyx):
    config = CompressionConfig(**TINY)
    a = compress(cells_tyx, config, axes="TYX", metadata={"source": "array"})
    b = compress(ArraySource.from_array(cells_tyx, "TYX"), config)
    assert a.payload == b.payload and a.header.widths == b.header.widths
    assert "engine" not in a.header.fit  # the in-memory path


def test_the_streamed_path_records_its_engine(cells_zarr):
    from napari_inif.core.io.source import open_source

    with open_source(cells_zarr) as source:
        encoded = compress(source, CompressionConfig(**TINY))
    assert encoded.header.fit["engine"] == "local" and encoded.header.fit["tasks"] >= 1
    assert np.isfinite(encoded.header.fit["psnr"])
    assert 8 * 0.9 <= encoded.ratio <= 8 * 1.1


def test_a_saved_streamed_file_loads(cells_zarr, tmp_path):
    from napari_inif.core.io.source import open_source

    with open_source(cells_zarr) as source:
        path = compress(source, CompressionConfig(**TINY)).save(tmp_path / "c.inif")
    assert load(path).array().shape == zarr.open(str(cells_zarr)).shape


@pytest.mark.parametrize("streamed", [False, True])
def test_a_constant_image_decodes_exactly_on_both_paths(streamed):
    data = np.full((4, 40, 48), 1234, np.uint16)
    encoded = compress(
        ArraySource.from_array(data, "TYX"), CompressionConfig(**TINY), streamed=streamed
    )
    assert encoded.header.lo == encoded.header.hi == (1234.0,)
    np.testing.assert_array_equal(encoded.array()[...], data)


def test_the_eta_counts_the_phases_after_the_last_step(cells_tyx):
    """'ETA 0:00' while quantisation and the quality measurement still run was wrong."""
    import time

    from napari_inif.core.engine import fit

    gen = fit(cells_tyx, CompressionConfig(ratio=16, steps=20, device="cpu"), axes="TYX")
    reports = []
    try:
        while True:
            reports.append((time.perf_counter(), next(gen)))
    except StopIteration:
        end = time.perf_counter()
    fits = [p for _, p in reports if p.phase == "fit"]
    assert fits[-1].step == 20 and fits[-1].eta > 0
    [(at, quantise)] = [(t, p) for t, p in reports if p.phase == "quantise"]
    assert quantise.eta > 0
    # The estimate is of the right order: within 10x of what those phases took.
    took = end - at
    assert took / 10 < quantise.eta < took * 10
