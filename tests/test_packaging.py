"""The built wheel carries napari.yaml inside the package and napari finds it there."""

import subprocess
import sys
import sysconfig
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


def test_editable_install_exposes_the_root_manifest(tmp_path):
    """``pip install -e .`` in a clean checkout (no link made by .ci/setup): the build hook
    links src/napari_inif/napari.yaml to the root manifest and npe2 finds it there."""
    import shutil

    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "napari.yaml", "hatch_build.py"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(
        ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("napari.yaml", "__pycache__")
    )
    assert not (repo / "src" / "napari_inif" / "napari.yaml").exists()
    out = tmp_path / "out"
    build = "import sys, hatchling.build as b; print(b.build_editable(sys.argv[1]))"
    res = subprocess.run(
        [sys.executable, "-c", build, str(out)], cwd=repo, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    linked = repo / "src" / "napari_inif" / "napari.yaml"
    assert linked.read_bytes() == (ROOT / "napari.yaml").read_bytes()
    site = tmp_path / "site"
    (wheel,) = out.glob("napari_inif-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    # -S: the outer venv's .pth files (its own editable napari_inif) are not processed;
    # the extracted editable wheel's .pth is, so napari_inif comes from the copy.
    code = (
        "import sys, site; sys.path.append(sys.argv[2]); site.addsitedir(sys.argv[1]);"
        "import npe2, importlib.util;"
        "m = npe2.PluginManifest.from_distribution('napari-inif');"
        "spec = importlib.util.find_spec('napari_inif');"
        "print(m.name, spec.submodule_search_locations[0])"
    )
    args = [sys.executable, "-S", "-c", code, str(site), sysconfig.get_paths()["purelib"]]
    res = subprocess.run(args, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    name, package = res.stdout.split()
    assert name == "napari-inif" and Path(package) == repo / "src" / "napari_inif"
