"""Loading Cellpose networks: files of any nbase, local model folder, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_inif.core.guidance import cellpose_net as cellpose_net
from napari_inif.core.guidance.cellpose_net import BUNDLED_MODEL, load_cellpose

pytest.importorskip("cellpose")


def save_random_net(path, nbase=(2, 8, 16), diam_mean=25.0):
    from cellpose.resnet_torch import CPnet

    torch.manual_seed(0)
    net = CPnet(list(nbase), 3, 3, mkldnn=False, diam_mean=diam_mean)
    net.save_model(str(path))  # Cellpose's own format: a state dict
    return net


def test_weights_file_of_any_size_loads_frozen(tmp_path):
    ref = save_random_net(tmp_path / "mine")
    net = load_cellpose(tmp_path / "mine")
    assert net.info["nbase"] == [2, 8, 16] and net.diam_mean == 25.0 and net.nchan == 2
    assert not any(p.requires_grad for p in net.module.parameters())
    x = torch.rand(1, 2, 32, 32)
    ref.eval()
    with torch.no_grad():
        assert torch.allclose(net(x), ref(x)[0], atol=1e-5)


def test_model_folder_from_environment(tmp_path, monkeypatch):
    save_random_net(tmp_path / "my_nuclei")
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path))
    assert load_cellpose("my_nuclei").name == "my_nuclei"
    # A built-in name whose weights are in the folder is used without download.
    save_random_net(tmp_path / "nucleitorch_0")
    assert load_cellpose("nuclei", allow_download=False).diam_mean == 17.0


def test_builtin_without_weights_and_without_download(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path))
    with pytest.raises(ValueError, match="downloading is off"):
        load_cellpose("cyto3", allow_download=False)


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no Cellpose model given"):
        load_cellpose("")
    with pytest.raises(ValueError, match="unknown Cellpose model"):
        load_cellpose("not-a-model")
    bad = tmp_path / "bad.pt"
    torch.save({"x": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="not a Cellpose 3 network"):
        load_cellpose(bad)
    (tmp_path / "junk").write_bytes(b"\x00not a torch file")
    with pytest.raises(ValueError, match="cannot read"):
        load_cellpose(tmp_path / "junk")


def test_missing_cellpose_gives_the_install_hint(monkeypatch):
    monkeypatch.setattr(cellpose_net, "cellpose_version", lambda: None)
    with pytest.raises(ImportError, match=r"napari-inif\[cellpose\]"):
        load_cellpose(BUNDLED_MODEL)


def test_bundled_network_segments_real_nuclei(nuclei_crop):
    net = load_cellpose(BUNDLED_MODEL)
    assert net.info["nbase"] == [2, 16, 32, 64]
    masks = net.segment(nuclei_crop, diameter=20.0)
    assert masks.shape == nuclei_crop.shape
    assert 2 <= len(np.unique(masks)) - 1 <= 12
