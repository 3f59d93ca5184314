"""The ``inif`` command, run in-process as a user would type it."""

import errno
import os
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

import napari_inif
from napari_inif.cli import main
from napari_inif.core import load


@pytest.fixture
def stack_tif(tmp_path, cells_tyx):
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, cells_tyx, metadata={"axes": "TYX"})
    return path


def test_compress_info_decompress(stack_tif, tmp_path, capsys):
    out = tmp_path / "cells.inif"
    assert (
        main(
            ["compress", str(stack_tif), "-o", str(out), "--ratio", "8", "--steps", "40", "--quiet"]
        )
        == 0
    )
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("ratio ") and "PSNR" in line and "SSIM" in line and " s on cpu" in line
    enc = load(out)
    assert 8 * 0.9 <= enc.ratio <= 8 * 1.1
    assert enc.header.layout.axes == "TYX" and enc.header.metadata["source"] == "cells.tif"

    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "ratio" in info and "(6, 48, 40) TYX uint16" in info

    tif = tmp_path / "roi.tif"
    assert main(["decompress", str(out), "-o", str(tif), "--roi", "1:3,10:20,5:25"]) == 0
    roi = tifffile.imread(tif)
    np.testing.assert_array_equal(roi, enc.array()[1:3, 10:20, 5:25])

    assert (
        main(
            [
                "decompress",
                str(out),
                "-o",
                str(tif),
                "--roi",
                "10:20,5:25",
                "--zoom",
                "2",
                "--overwrite",
            ]
        )
        == 0
    )
    assert tifffile.imread(tif).shape == (6, 20, 40)


def test_grid_compress_info_decompress(stack_tif, tmp_path, capsys):
    out = tmp_path / "cells.inif"
    args = ["compress", str(stack_tif), "-o", str(out), "--ratio", "16", "--steps", "60"]
    assert main([*args, "--architecture", "grid", "--quiet"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("ratio ") and "PSNR" in line and " s on cpu" in line
    enc = load(out)
    assert 16 * 0.9 <= enc.ratio <= 16 * 1.1 and enc.header.fit["architecture"] == "grid"
    assert enc.header.metadata["source"] == "cells.tif"

    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "(6, 48, 40) TYX uint16" in info and "latent grid" in info and "fit         grid" in info
    assert main(["info", str(out), "--json"]) == 0
    assert '"field": "grid"' in capsys.readouterr().out

    tif = tmp_path / "roi.tif"
    assert main(["decompress", str(out), "-o", str(tif), "--roi", "1:3,10:20,5:25"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tif), enc.array()[1:3, 10:20, 5:25])
    before = tif.read_bytes()
    assert main(["decompress", str(out), "-o", str(tif)]) == 2  # never replaces a file
    assert "exists" in capsys.readouterr().err and tif.read_bytes() == before
    args = ["compress", str(stack_tif), "-o", str(tmp_path / "t.inif"), "--architecture", "grid"]
    assert main([*args, "--target-psnr", "30", "--quiet"]) == 2
    assert "not to a PSNR" in capsys.readouterr().err


def test_grid_hybrid_compress_and_info(stack_tif, tmp_path, capsys):
    out = tmp_path / "h.inif"
    args = ["compress", str(stack_tif), "-o", str(out), "--ratio", "16", "--steps", "30"]
    hybrid = ["--architecture", "grid", "--mode", "hybrid", "--prior", "jpegxl", "--quiet"]
    assert main([*args, *hybrid]) == 0
    assert "PSNR" in capsys.readouterr().out
    enc = load(out)
    assert 16 * 0.9 <= enc.ratio <= 16 * 1.1
    assert enc.header.prior["codec"] == "jpegxl" and len(enc.prior) == enc.header.prior["nbytes"]
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "latent grid" in info and "prior       hybrid: jpegxl codes the image" in info


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_errors_are_one_line_and_leave_no_output(tmp_path, stack_tif, capsys):
    out = tmp_path / "x.inif"
    assert main(["compress", str(tmp_path / "missing.tif"), "-o", str(out)]) == 2
    assert "no such file" in _error_line(capsys)

    f64 = tmp_path / "f64.tif"
    tifffile.imwrite(f64, np.zeros((16, 16), np.float64))
    assert main(["compress", str(f64), "-o", str(out)]) == 2
    assert "unsupported dtype float64" in _error_line(capsys)

    assert main(["compress", str(stack_tif), "-o", str(out), "--ratio", "100000"]) == 2
    assert "largest ratio possible" in _error_line(capsys)

    assert main(["info", str(stack_tif)]) == 2
    assert "not an .inif file" in _error_line(capsys)

    assert (
        main(
            ["compress", str(stack_tif), "-o", str(out), "--ratio", "8", "--steps", "5", "--quiet"]
        )
        == 0
    )
    damaged = tmp_path / "damaged.inif"
    damaged.write_bytes(out.read_bytes()[:-10])
    capsys.readouterr()
    target = tmp_path / "never.tif"
    assert main(["decompress", str(damaged), "-o", str(target)]) == 2
    assert "truncated" in _error_line(capsys) or "size" in _error_line(capsys)
    assert not target.exists()
    assert main(["decompress", str(out), "-o", str(target), "--roi", "0:999"]) == 2
    assert "outside" in _error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cells.tif",
        "damaged.inif",
        "f64.tif",
        "x.inif",
    ]


def test_compress_refuses_to_overwrite_its_input(stack_tif, capsys):
    before = stack_tif.read_bytes()
    assert main(["compress", str(stack_tif), "-o", str(stack_tif)]) == 2
    assert "overwrite the input" in _error_line(capsys)
    assert stack_tif.read_bytes() == before


def _compress_help(capsys, config_cls=None) -> str:
    from napari_inif import cli

    with pytest.raises(SystemExit) as exit_:
        cli._parser(config_cls).parse_args(["compress", "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_compress_flags_come_from_the_config_and_the_registries(capsys):
    from napari_inif import cli
    from napari_inif.core.config import CompressionConfig, settings
    from napari_inif.core.registry import ARCHITECTURES, CODECS, GUIDANCES, OPTIMIZERS

    text = _compress_help(capsys)
    for s in settings():
        assert f"--{s.name.replace('_', '-')}" in text
    for registry in (ARCHITECTURES, OPTIMIZERS, GUIDANCES, CODECS):
        for name in registry:
            assert f"{name}: {registry.describe(name)}" in text
    assert "--architecture {inif,inif-all,siren,grid}" in text  # inif-all was missing before
    assert "--time X, --time-limit X" in text and "--cellpose-model NAME" in text

    parse = cli._parser().parse_args
    args = parse(["compress", "a.tif", "--time", "5", "--cellpose-model", "nuclei"])
    config = cli._config(args)
    assert (config.time_limit, config.guidance_model) == (5.0, "nuclei")
    # flags not given keep the config's defaults, also those the old parser hard-coded
    assert config == CompressionConfig(time_limit=5.0, guidance_model="nuclei")
    args = parse(["compress", "a.tif", "--time-limit", "7", "--lr", "5e-4", "--depth", "3"])
    assert cli._config(args) == CompressionConfig(time_limit=7.0, lr=5e-4, depth=3)
    with pytest.raises(SystemExit):
        parse(["compress", "a.tif", "--architecture", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_a_registered_name_and_a_new_config_field_reach_the_flags(capsys):
    import dataclasses

    from napari_inif import cli
    from napari_inif.core.config import CompressionConfig, Range, setting
    from napari_inif.core.registry import ARCHITECTURES

    ARCHITECTURES.register("throwaway", None, "a family registered by a test")
    try:
        text = _compress_help(capsys)
        assert "--architecture {inif,inif-all,siren,grid,throwaway}" in text
        assert "throwaway: a family registered by a test" in text
        args = cli._parser().parse_args(["compress", "a.tif", "--architecture", "throwaway"])
        assert cli._config(args).architecture == "throwaway"
    finally:
        ARCHITECTURES.unregister("throwaway")
    assert "throwaway" not in _compress_help(capsys)

    extended = dataclasses.make_dataclass(
        "Extended",
        [("sparkle", float, setting(0.5, "how much sparkle", group="basic", range=Range(0, 1)))],
        bases=(CompressionConfig,),
        frozen=True,
    )
    text = _compress_help(capsys, extended)
    assert "--sparkle X how much sparkle (default: 0.5); in [0, 1]" in text
    args = cli._parser(extended).parse_args(["compress", "a.tif", "--sparkle", "0.25"])
    config = cli._config(args, extended)
    assert isinstance(config, extended) and config.sparkle == 0.25
    with pytest.raises(ValueError, match=r"sparkle must be in \[0, 1\], got 2"):
        extended(sparkle=2.0)  # validated from the same metadata


def test_the_documented_compress_commands_parse():
    import shlex
    from pathlib import Path

    from napari_inif import cli

    root = Path(__file__).resolve().parents[1]
    lines = [
        line.split("#")[0]
        for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]
        for line in doc.read_text().splitlines()
        if line.startswith("inif compress ")
    ]
    assert len(lines) >= 8
    for line in lines:
        args = cli._parser().parse_args(shlex.split(line)[1:])
        assert args.command == "compress", line


def test_progress_off_a_terminal_is_a_few_plain_lines():
    """CI logs and pipes get a line every few seconds, not a carriage-return flood."""
    import io
    from types import SimpleNamespace

    from napari_inif.cli import _Progress

    out = io.StringIO()  # not a terminal
    progress = _Progress(out, every=3600)
    for step in range(1, 401):
        progress(SimpleNamespace(phase="fit", step=step, steps=400, psnr=30.0, elapsed=1, eta=1))
    progress(SimpleNamespace(phase="done", step=400, steps=400, psnr=31.0, elapsed=2, eta=0))
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 2, lines  # the first step, then the phase change
    assert lines[0].startswith("fit: step 1/400") and lines[1].startswith("done: step 400/400")


# --------------------------------------------------------------- issue 17: never lose data
SAMPLE_INIF = Path(napari_inif.__file__).parent / "_data" / "cancer_cells_TYX.inif"


@pytest.fixture
def pair(tmp_path):
    """``stack.tif`` (the user's original) next to ``stack.inif`` made from it."""
    original = tmp_path / "stack.tif"
    tifffile.imwrite(original, np.arange(16 * 130 * 130, dtype=np.uint16).reshape(16, 130, 130))
    encoded = tmp_path / "stack.inif"
    encoded.write_bytes(SAMPLE_INIF.read_bytes())
    return original, encoded


def test_decompress_default_output_never_replaces_the_original(pair, capsys):
    original, encoded = pair
    before = original.read_bytes()
    assert main(["decompress", str(encoded), "--roi", "0:2,0:8,0:8"]) == 0
    assert original.read_bytes() == before
    decoded = original.with_name("stack.decoded.tif")
    assert tifffile.imread(decoded).shape == (2, 8, 8)
    capsys.readouterr()
    # Again: the decoded file now exists, and is not replaced without --overwrite.
    assert main(["decompress", str(encoded), "--roi", "0:1,0:8,0:8"]) == 2
    line = _error_line(capsys)
    assert "exists" in line and "--overwrite" in line
    assert tifffile.imread(decoded).shape == (2, 8, 8)
    assert main(["decompress", str(encoded), "--roi", "0:1,0:8,0:8", "--overwrite"]) == 0
    assert tifffile.imread(decoded).shape == (1, 8, 8)
    assert original.read_bytes() == before


def test_decompress_onto_an_existing_file_or_its_input_changes_nothing(pair, capsys):
    original, encoded = pair
    before, inif = original.read_bytes(), encoded.read_bytes()
    assert main(["decompress", str(encoded), "-o", str(original), "--roi", "0:1,0:8,0:8"]) == 2
    assert "exists" in _error_line(capsys)
    assert main(["decompress", str(encoded), "-o", str(encoded), "--overwrite"]) == 2
    assert "overwrite the input" in _error_line(capsys)
    assert original.read_bytes() == before and encoded.read_bytes() == inif
    assert sorted(p.name for p in original.parent.iterdir()) == ["stack.inif", "stack.tif"]


def test_compress_refuses_an_existing_output_before_fitting(pair, capsys):
    original, encoded = pair
    inif = encoded.read_bytes()
    t0 = time.perf_counter()
    assert main(["compress", str(original), "--steps", "40", "--quiet"]) == 2
    assert time.perf_counter() - t0 < 1.0
    line = _error_line(capsys)
    assert "stack.inif exists" in line and "--overwrite" in line
    assert encoded.read_bytes() == inif


def test_unwritable_output_fails_within_a_second_before_fitting(
    pair, tmp_path, capsys, monkeypatch
):
    original, _ = pair
    # Tests run as root, where chmod does not stop writes: a folder that is a file does.
    under_a_file = tmp_path / "stack.tif" / "out.inif"
    t0 = time.perf_counter()
    assert main(["compress", str(original), "-o", str(under_a_file), "--quiet"]) == 2
    assert time.perf_counter() - t0 < 1.0
    assert "out.inif" in _error_line(capsys)
    # A read-only or full folder, simulated where the probe file is made: the message
    # names the path (disk full does not by itself) and comes before any fitting.
    real_open = os.open

    def refusing(path, flags, *a, **k):
        if str(path).endswith(".probe"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", refusing)
    out = tmp_path / "full" / "out.inif"
    out.parent.mkdir()
    t0 = time.perf_counter()
    assert main(["compress", str(original), "-o", str(out), "--quiet"]) == 2
    assert time.perf_counter() - t0 < 1.0
    line = _error_line(capsys)
    assert str(out) in line and "No space left" in line
    assert list(out.parent.iterdir()) == []


def test_ctrl_c_while_writing_prints_one_line_and_leaves_no_file(pair, capsys, monkeypatch):
    original, encoded = pair

    def interrupted(path, *a, **k):
        with open(path, "wb") as fh:
            fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(tifffile, "imwrite", interrupted)
    assert main(["decompress", str(encoded), "--roi", "0:1,0:8,0:8"]) == 130
    assert "cancelled" in _error_line(capsys)
    assert sorted(p.name for p in original.parent.iterdir()) == ["stack.inif", "stack.tif"]


def test_hostile_file_is_one_line_exit_2(tmp_path, capsys):
    from napari_inif.core.codec.container import pack, unpack

    header, body = unpack(SAMPLE_INIF.read_bytes())
    huge = tmp_path / "huge.inif"  # 2^46 voxels declared in an 8 KB file
    huge.write_bytes(pack({**header, "shape": [1 << 14, 1 << 16, 1 << 16]}, body))
    assert main(["decompress", str(huge)]) == 2
    line = _error_line(capsys)
    assert "budget" in line and "--roi" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.inif"]
    assert main(["info", str(huge)]) == 0


def test_info_escapes_control_characters(tmp_path, capsys):
    from napari_inif.core.codec.container import pack, unpack

    header, body = unpack(SAMPLE_INIF.read_bytes())
    evil = {"architecture": "\x1b]0;owned\x07\x1b[2J", "device": "\ud800"}
    header = {**header, "fit": {**header["fit"], **evil}}
    path = tmp_path / "evil.inif"
    path.write_bytes(pack(header, body))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;owned\\x07\\x1b[2J" in out and "\\ud800" in out
    assert main(["info", "--json", str(path)]) == 0
    assert "\x1b" not in capsys.readouterr().out


def test_ctrl_c_during_start_up_is_one_line(monkeypatch, capsys):
    import napari_inif.cli as cli

    def interrupted_import():  # e.g. Ctrl-C while torch is being imported
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_parser", interrupted_import)
    assert main(["info", "x.inif"]) == 130
    assert "cancelled" in _error_line(capsys)
