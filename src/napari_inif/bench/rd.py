"""Rate-distortion: napari-inif rows and classic codecs at the same byte budget.

For each case and asked ratio, every napari-inif row (see :mod:`.methods`) is fitted at
that ratio; the reference row ``inif`` sets the byte budget, and each classic codec (see
:mod:`napari_inif.core.classic`) is matched to it by searching its quality setting for
the largest file that is not larger.  Stacks are coded by 2D codecs plane by plane *and*
as one mosaic of their planes, and by HEVC as a video.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_inif.core.classic import ClassicCodec, match_size

from .agreement import foreground_dice
from .cases import Case
from .methods import Method

if TYPE_CHECKING:
    from ..core import CompressionConfig, Encoded, Progress
    from ..core.codec.gridfile import GridEncoded

__all__ = ["RDRow", "run_case"]

NAN = float("nan")


@dataclass(frozen=True)
class RDRow:
    """One point of a rate-distortion curve (``status`` other than ``ok``: no numbers)."""

    case: str
    file: str
    crop: str
    shape: str
    dtype: str
    ratio: float  # asked
    method: str
    family: str  # "inif" or "classic"
    layout: str  # "field", "image", "plane", "mosaic", "video"
    status: str  # "ok", "unreachable", "skipped"
    note: str
    setting: str
    budget: int
    nbytes: int
    ratio_actual: float
    psnr: float  # dB against the original's max - min
    psnr_dtype: float
    ssim: float
    dice: float  # Otsu foreground agreement
    encode_s: float
    decode_s: float
    device: str
    # napari-inif rows only: where the bytes and the error go
    params: int = 0  # network parameters
    bits_per_param: float = NAN  # payload bits / parameters (after entropy coding)
    overhead_bytes: int = 0  # file bytes that are not weights (container, JSON header)
    levels: int = 0  # quantiser levels of the weight matrices chosen by rate control
    psnr_float: float = NAN  # PSNR of the field before quantisation
    fit_curve: str = ""  # training PSNR (EMA, dB) at 25/50/75/100% of the steps


def _row(
    case: Case,
    data: np.ndarray,
    ratio: float,
    method: str,
    family: str,
    layout: str,
    budget: int,
    **kw: object,
) -> RDRow:
    values: dict[str, object] = {
        "status": "ok",
        "note": "",
        "setting": "",
        "nbytes": 0,
        "ratio_actual": NAN,
        "psnr": NAN,
        "psnr_dtype": NAN,
        "ssim": NAN,
        "dice": NAN,
        "encode_s": NAN,
        "decode_s": NAN,
        "device": "cpu",
    }
    values.update(kw)
    return RDRow(
        case=case.name,
        file=case.file,
        crop=case.crop_text,
        shape="x".join(map(str, data.shape)),
        dtype=data.dtype.name,
        ratio=ratio,
        method=method,
        family=family,
        layout=layout,
        budget=budget,
        **values,  # type: ignore[arg-type]
    )


def _measures(case: Case, data: np.ndarray, decoded: np.ndarray, nbytes: int) -> dict[str, float]:
    from napari_inif.core.metrics.quality import quality

    decoded = np.asarray(decoded).reshape(data.shape)
    q = quality(data, decoded, plane_axes=3 if "Z" in case.axes else 2)
    return {
        "nbytes": int(nbytes),
        "ratio_actual": data.nbytes / nbytes,
        "psnr": q.psnr,
        "psnr_dtype": q.psnr_dtype,
        "ssim": q.ssim,
        "dice": foreground_dice(data, decoded),
    }


class _Watcher:
    """Follows a fit: training PSNR (EMA) at a few steps, and the last unquantised field."""

    def __init__(self, steps: int):
        self.marks = sorted({max(1, round(steps * f)) for f in (0.25, 0.5, 0.75, 1.0)})
        self.ema: float | None = None
        self.curve: dict[int, float] = {}
        self.preview: Any = None

    def __call__(self, p: Progress) -> None:
        if p.phase != "fit":
            return
        self.ema = p.psnr if self.ema is None else 0.9 * self.ema + 0.1 * p.psnr
        if p.step in self.marks:
            self.curve[p.step] = self.ema
        if p.preview is not None:
            self.preview = p.preview


def _fit(
    case: Case, data: np.ndarray, config: CompressionConfig
) -> tuple[Encoded | GridEncoded, dict]:
    """Compress, keeping what explains the result (see :class:`RDRow`'s last fields).

    The fit generator is asked for a preview every step; the last one is the field just
    before quantisation.
    """
    from napari_inif.core.metrics.quality import psnr

    from ..core import drive, fit

    watch = _Watcher(config.steps)
    encoded = drive(fit(data, config, axes=case.axes, preview_every=0.0), watch)
    header = encoded.header
    float_psnr = NAN
    if watch.preview is not None:
        float_psnr = psnr(data, np.asarray(watch.preview).reshape(data.shape))
    n_params = getattr(header, "n_params", 0)  # a grid field has no block networks
    return encoded, {
        "params": n_params,
        "bits_per_param": 8 * len(encoded.payload) / n_params if n_params else NAN,
        "overhead_bytes": encoded.nbytes - len(encoded.payload),
        "levels": 2 * header.half + 1 if hasattr(header, "half") else 0,
        "psnr_float": float_psnr,
        "fit_curve": "/".join(f"{watch.curve[k]:.1f}" for k in sorted(watch.curve)),
    }


def run_case(
    case: Case,
    data: np.ndarray,
    *,
    ratios: Sequence[float],
    steps: int,
    methods: Sequence[Method],
    codecs: Sequence[ClassicCodec],
    seed: int = 0,
    device: str = "auto",
    extra: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> list[RDRow]:
    """All rows of one case (see the module docstring).

    ``extra`` are ``CompressionConfig`` fields applied to every napari-inif row.
    """
    from ..core import BudgetError, Layout, max_ratio

    rows: list[RDRow] = []
    top = max_ratio(Layout.of(data, case.axes))
    stack = data if case.is_stack else data[None]
    methods = sorted(methods, key=lambda m: m.name != "inif")  # the reference first
    for ratio in ratios:
        budget = int(data.nbytes / ratio)
        if ratio > top:
            log(f"  {case.name} {ratio:g}x: skipped, the largest ratio for it is {top:.0f}x")
            rows.append(
                _row(
                    case,
                    data,
                    ratio,
                    "*",
                    "-",
                    "-",
                    budget,
                    status="unreachable",
                    note=f"largest ratio for this image is {top:.0f}x",
                )
            )
            continue
        reference = None
        for method in methods:
            if not method.runs_on(case.name):
                continue
            reason = method.unavailable()
            if reason:
                rows.append(
                    _row(
                        case,
                        data,
                        ratio,
                        method.name,
                        "inif",
                        "field",
                        budget,
                        status="skipped",
                        note=reason,
                    )
                )
                continue
            config = method.config(ratio=ratio, steps=steps, seed=seed, device=device, extra=extra)
            start = time.perf_counter()
            try:
                encoded, diagnostics = _fit(case, data, config)
            except BudgetError as exc:
                rows.append(
                    _row(
                        case,
                        data,
                        ratio,
                        method.name,
                        "inif",
                        "field",
                        budget,
                        status="unreachable",
                        note=str(exc),
                    )
                )
                continue
            encode_s = time.perf_counter() - start
            start = time.perf_counter()
            decoded = encoded.array()[...]
            decode_s = time.perf_counter() - start
            if method.name == "inif":
                reference = encoded.nbytes
            measures = _measures(case, data, decoded, encoded.nbytes)
            rows.append(
                _row(
                    case,
                    data,
                    ratio,
                    method.name,
                    "inif",
                    "field",
                    budget,
                    setting=f"steps={encoded.header.fit.get('steps', steps)}",
                    encode_s=encode_s,
                    decode_s=decode_s,
                    device=str(encoded.header.fit.get("device", device)),
                    **measures,
                    **diagnostics,
                )
            )
            log(
                f"  {case.name} {ratio:g}x {method.name:12s} {encoded.nbytes:8d} B  "
                f"PSNR {measures['psnr']:6.2f} dB  SSIM {measures['ssim']:.4f}  "
                f"{encode_s:6.1f} s  (unquantised {diagnostics['psnr_float']:.2f} dB, "
                f"training {diagnostics['fit_curve']}, {diagnostics['overhead_bytes']} B "
                f"overhead, {diagnostics['bits_per_param']:.2f} bits/param)"
            )
        classic_budget = reference if reference is not None else budget
        for codec in codecs:
            if codec.video:
                layouts = ["video" if case.is_stack else "image"]
            else:
                layouts = ["plane", "mosaic"] if case.is_stack else ["image"]
            for layout in layouts:
                start = time.perf_counter()
                coded = match_size(
                    codec,
                    stack,
                    classic_budget,
                    layout="mosaic" if layout == "mosaic" else "plane",
                )
                search_s = time.perf_counter() - start
                if coded is None:
                    rows.append(
                        _row(
                            case,
                            data,
                            ratio,
                            codec.name,
                            "classic",
                            layout,
                            classic_budget,
                            status="unreachable",
                            note="over the budget even at its lowest quality setting",
                        )
                    )
                    log(
                        f"  {case.name} {ratio:g}x {codec.name}/{layout}: cannot reach "
                        f"{classic_budget} B"
                    )
                    continue
                measures = _measures(case, data, coded.decoded.reshape(data.shape), coded.nbytes)
                rows.append(
                    _row(
                        case,
                        data,
                        ratio,
                        codec.name,
                        "classic",
                        layout,
                        classic_budget,
                        setting=f"{codec.setting}={_fmt(coded.value)}",
                        encode_s=coded.encode_s,
                        decode_s=coded.decode_s,
                        **measures,
                    )
                )
                log(
                    f"  {case.name} {ratio:g}x {codec.name + '/' + layout:12s} "
                    f"{coded.nbytes:8d} B  PSNR {measures['psnr']:6.2f} dB  "
                    f"SSIM {measures['ssim']:.4f}  (search {search_s:.1f} s)"
                )
    return rows


def _fmt(value: float) -> str:
    if value == int(value):
        return str(int(value))
    digits = max(0, 3 - math.floor(math.log10(abs(value))))
    return f"{value:.{digits}f}"
