"""The config's field metadata: what the CLI and the widget are generated from."""

from __future__ import annotations

import subprocess
import sys

import pytest

from napari_inif.core.config import GROUPS, CompressionConfig, Range, settings
from napari_inif.core.registry import ARCHITECTURES, CODECS, GUIDANCES, OPTIMIZERS


def test_every_field_is_described():
    found = settings()
    assert [s.name for s in found] == list(CompressionConfig.__dataclass_fields__)
    for s in found:
        assert s.help and s.group in GROUPS, s.name
        assert s.default == getattr(CompressionConfig(), s.name)
        if s.optional:
            assert s.default is None and s.none, s.name  # says what None means
        if s.range is not None and s.default is not None:
            assert s.default in s.range, s.name
    by_name = {s.name: s for s in found}
    assert by_name["time_limit"].type is float and by_name["time_limit"].optional
    assert by_name["depth"].type is int and by_name["steps"].type is int
    assert by_name["device"].suggestions == ("auto", "cpu", "cuda", "mps")
    assert by_name["mode"].choices() == ("field", "hybrid")
    registries = {n: by_name[n].registry for n in ("architecture", "optimizer", "guidance")}
    assert registries == {
        "architecture": ARCHITECTURES,
        "optimizer": OPTIMIZERS,
        "guidance": GUIDANCES,
    }
    assert by_name["prior"].registry is CODECS


def test_choices_follow_the_registry_and_load_no_implementation():
    code = (
        "import sys\n"
        "from napari_inif.core.config import settings\n"
        "found = {s.name: s.choices() for s in settings()}\n"
        "assert 'inif-all' in found['architecture'] and 'avif' in found['prior'], found\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.endswith(('.siren', '.prior'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    ARCHITECTURES.register("throwaway", None, "test")
    try:
        assert "throwaway" in next(s for s in settings() if s.name == "architecture").choices()
        assert CompressionConfig(architecture="throwaway").architecture == "throwaway"
    finally:
        ARCHITECTURES.unregister("throwaway")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"ratio": 1}, "ratio must be above 1, got 1"),
        ({"lr": 1.0}, r"lr must be in \(0, 1\), got 1.0"),
        ({"bits": 17}, r"bits must be in \[4, 16\], got 17"),
        ({"depth": 1}, r"depth must be in \[2, 16\]"),
        ({"batch_size": 10}, "batch_size must be at least 64"),
        ({"allocation": "random"}, "allocation must be one of content, uniform"),
        ({"steps": None}, "steps must not be None"),
        ({"optimizer": "sgd"}, "unknown optimizer 'sgd'; available: adam, adamax"),
        ({"mode": "hybrid", "guidance": "ssim"}, "guidance works in mode 'field' only"),
    ],
)
def test_values_are_checked_from_the_metadata(values, message):
    with pytest.raises(ValueError, match=message):
        CompressionConfig(**values)


def test_range_text_and_membership():
    assert str(Range(0, 1, lo_open=True, hi_open=True)) == "in (0, 1)"
    assert str(Range(4, 16)) == "in [4, 16]" and str(Range(64)) == "at least 64"
    assert str(Range(0, lo_open=True)) == "above 0" and str(Range(hi=3)) == "at most 3"
    assert 0.5 in Range(0, 1) and 0 not in Range(0, lo_open=True) and True not in Range(0)
    assert "3" not in Range(0)
