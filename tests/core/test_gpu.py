"""On a CUDA GPU: a fit there decodes like on the CPU, and its file round-trips exactly."""

from __future__ import annotations

import numpy as np
import pytest

from napari_inif.core import CompressionConfig, Encoded, compress
from napari_inif.core.codec.decode import FieldDecoder, InifArray
from napari_inif.core.codec.quant import dequantise
from napari_inif.core.metrics.quality import psnr


@pytest.mark.gpu
def test_cuda_fit_decodes_on_cpu_and_gpu_alike(nuclei_128):
    enc = compress(nuclei_128, CompressionConfig(ratio=16, steps=200, seed=0, device="cuda"))
    on_cpu = InifArray(FieldDecoder(enc.header, dequantise(enc.weights), "cpu"))[...]
    on_gpu = InifArray(FieldDecoder(enc.header, dequantise(enc.weights), "cuda"))[...]
    assert np.abs(on_cpu.astype(int) - on_gpu.astype(int)).max() <= 1
    np.testing.assert_array_equal(Encoded.from_bytes(enc.to_bytes()).array()[...], on_cpu)
    assert psnr(nuclei_128, on_cpu) > 25
