"""The benchmark runs end to end on a tiny real crop and its numbers are sane."""

from __future__ import annotations

import csv
import math

import numpy as np

from napari_inif.bench import Case, quick_settings, run_bench
from napari_inif.bench.speed import mirror_tile

TINY = Case(
    "tiny",
    "cancer_cell_migration_crop_TYX.tif",
    (slice(0, 4), slice(40, 72), slice(40, 80)),
    "TYX",
)
FAST_CODECS = ("jpeg2k", "htj2k", "jpegxl")


def _floats(row: dict[str, str], *names: str) -> list[float]:
    return [float(row[n]) for n in names]


def test_quick_bench_in_process(tmp_path, data_dir):
    settings = quick_settings(
        out=tmp_path,
        data_dir=data_dir,
        cases=(TINY,),
        ratios=(16.0,),
        steps=5,
        codecs=FAST_CODECS,
        methods=("inif", "siren"),
        speed=False,
        threads=1,
    )
    result = run_bench(settings, log=lambda _: None)
    assert result.ok, result.problems
    assert {p.name for p in result.files} >= {"rd.csv", "results.md", "machine.json", "rd_tiny.png"}
    with (tmp_path / "rd.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["method"] for r in ok} >= {"inif", "siren", *FAST_CODECS}
    for r in ok:
        psnr, ssim, dice = _floats(r, "psnr", "ssim", "dice")
        assert math.isfinite(psnr) and 0 < psnr < 80  # 5 steps: the fields are poor
        assert -1 <= ssim <= 1 and 0 <= dice <= 1
    budget = next(int(r["nbytes"]) for r in ok if r["method"] == "inif")
    classic = [r for r in ok if r["family"] == "classic"]
    assert classic
    for r in classic:  # equal byte budget: never over it, and close to it
        assert int(r["budget"]) == budget
        assert 0.8 * budget <= int(r["nbytes"]) <= budget
    assert "inif - best" in (tmp_path / "results.md").read_text()
    # The baselines are the hybrid priors' codecs: the same knob names and settings.
    from napari_inif.core.registry import CODECS

    for r in classic:
        assert r["setting"].startswith(CODECS[r["method"]].setting + "=")


def test_cli_quick_exit_status(tmp_path, capsys, data_dir):
    from napari_inif.cli import main

    status = main(
        [
            "bench",
            "--quick",
            "--out",
            str(tmp_path),
            "--data",
            str(data_dir),
            "--ratios",
            "16",
            "--steps",
            "3",
            "--codecs",
            "jpeg2k",
            "--methods",
            "inif",
            "--no-speed",
            "--no-plots",
            "--threads",
            "1",
            "--set",
            "lr=0.001",
        ]
    )
    assert status == 0
    assert '"lr": 0.001' in (tmp_path / "machine.json").read_text()
    assert "| cells-tyx-tiny |" in capsys.readouterr().out
    assert (tmp_path / "rd.csv").exists()


def test_speed_section_tiny(tmp_path, data_dir):
    settings = quick_settings(
        out=tmp_path,
        data_dir=data_dir,
        cases=(TINY,),
        ratios=(16.0,),
        steps=2,
        codecs=(),
        methods=("inif",),
        speed_case=TINY,
        tiled_shape=(8, 64, 64),
        speed_steps=2,
        tile_steps=2,
        speed_ratio=8.0,
        threads=1,
        plots=False,
    )
    result = run_bench(settings, log=lambda _: None)
    assert result.ok, result.problems
    measures = {s.measure for s in result.speed}
    assert "peak RSS, compress 8x" in measures
    assert any(m.startswith("decode ROI") for m in measures)
    rss = next(s.value for s in result.speed if s.measure.startswith("peak RSS"))
    assert 50 < rss < 20000


def test_mirror_tile_is_seamless():
    data = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    out = mirror_tile(data, (4, 5, 9))
    assert out.shape == (4, 5, 9)
    assert np.array_equal(out[:2, :3, :4], data)
    assert np.array_equal(out[2], out[1]) and np.array_equal(out[:, :, 4], out[:, :, 3])


def test_gpu_check_script_runs_its_checks_on_the_cpu(tmp_path, data_dir):
    """benchmarks/gpu_check.py is what a session with a lent GPU runs in minutes: its
    CUDA-path check and step profile must work before the GPU is there (``--smoke``)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "benchmarks" / "gpu_check.py"), "--data", str(data_dir)]
    cmd += ["--out", str(tmp_path), "--smoke", "--skip", "speed,jobs"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    lines = [json.loads(line) for line in (tmp_path / "gpu_results.jsonl").read_text().splitlines()]
    by_section = {line["section"]: line["value"] for line in lines}
    assert by_section["cuda"]["ok"] and by_section["cuda"]["file_round_trip_exact"]
    cuda = by_section["cuda"]
    # --smoke runs the CUDA path's code on the CPU: both decoders are CPU decoders, so the
    # check here is that the report says so and that two decoders built from the same
    # file agree bit for bit (the GPU run compares the CPU with CUDA, tolerance 1).
    assert cuda["decoder_devices"] == ["cpu", "cpu"]
    assert cuda["max_abs_diff_cpu_vs_gpu_decoder"] == 0
    assert cuda["steps"] == 20 and abs(cuda["psnr_gpu_fit"] - cuda["psnr_cpu_fit"]) < 1.5
    assert by_section["profile"]["ms_per_step"] > 0 and by_section["profile"]["blocks"] >= 1
