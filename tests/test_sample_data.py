"""The packaged sample: a real stack with provenance, and its .inif."""

from __future__ import annotations

import numpy as np

from napari_inif._sample_data import (
    SAMPLE_INIF,
    SAMPLE_TIFF,
    make_sample_data,
    make_sample_inif,
    sample_image,
)


def test_sample_files_are_small_and_documented():
    assert SAMPLE_TIFF.stat().st_size < 700_000
    assert SAMPLE_INIF.stat().st_size < 20_000
    readme = (SAMPLE_TIFF.parent / "README.md").read_text()
    assert "5206107" in readme and "CC-BY-4.0" in readme


def test_sample_image_for_the_cli_demo():
    image = sample_image()
    assert image.axes == "TYX"
    assert image.data.shape == (16, 130, 130)
    assert image.data.dtype == np.uint16


def test_sample_data_commands():
    [(data, meta, kind)] = make_sample_data()
    assert kind == "image" and data.shape == (16, 130, 130)
    [(levels, meta, kind)] = make_sample_inif()
    assert kind == "image" and levels[0].shape == (16, 130, 130)
    assert meta["name"].startswith("cancer cells [INIF")
    info = meta["metadata"]["inif"]
    assert info["ratio"] > 50 and info["psnr"] > 25
