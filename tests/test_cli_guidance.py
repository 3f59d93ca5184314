"""The CLI's guidance flags and the guidance line of ``inif info``."""

from __future__ import annotations

import tifffile

from napari_inif.cli import main


def test_compress_with_ssim_guidance_and_info(nuclei_crop, tmp_path, capsys):
    src = tmp_path / "n.tif"
    tifffile.imwrite(src, nuclei_crop)
    out = tmp_path / "n.inif"
    args = [
        "compress",
        str(src),
        "-o",
        str(out),
        "--ratio",
        "6",
        "--steps",
        "16",
        "--quiet",
        "--device",
        "cpu",
        "--guidance",
        "ssim",
        "--guidance-weight",
        "2",
        "--guidance-every",
        "2",
        "--guidance-patch",
        "32",
    ]
    assert main(args) == 0
    assert "segmentation agreement F1" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "guidance    ssim; weight 2.00; diameter" in info
    assert "AP@0.5" in info and "classical" in info


def test_segmentation_guidance_without_a_model_is_an_error(nuclei_crop, tmp_path, capsys):
    src = tmp_path / "n.tif"
    tifffile.imwrite(src, nuclei_crop)
    assert main(["compress", str(src), "--guidance", "segmentation", "--quiet"]) == 2
    assert "needs a Cellpose model" in capsys.readouterr().err
    assert not (tmp_path / "n.inif").exists()
