"""The built wheel carries napari.yaml inside the package and napari finds it there."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("napari_inif-*.whl")
    return path


def test_wheel_contains_the_root_manifest(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "napari_inif/napari.yaml" in names
        assert zf.read("napari_inif/napari.yaml") == (ROOT / "napari.yaml").read_bytes()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        text = zf.read(entry_points).decode()
    assert "[napari.manifest]" in text and "napari_inif:napari.yaml" in text
    assert "inif = napari_inif.cli:main" in text


def test_installed_wheel_manifest_is_found_by_npe2(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    code = (
        "import npe2, napari_inif, pathlib;"
        "m = npe2.PluginManifest.from_distribution('napari-inif');"
        "print(m.name, pathlib.Path(napari_inif.__file__).parent / 'napari.yaml')"
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    name, manifest = res.stdout.split()
    assert name == "napari-inif"
    assert Path(manifest).is_file() and str(target) in manifest
