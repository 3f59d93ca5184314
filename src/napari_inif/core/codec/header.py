"""The typed ``.inif`` header: what the JSON holds and how it is validated."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from napari_inif.core.codec.architecture import Architecture
from napari_inif.core.codec.blocks import BlockGrid
from napari_inif.core.codec.container import InifFormatError
from napari_inif.core.layout import Layout

__all__ = ["MAX_PARAMS", "MAX_VOXELS", "FieldHeader", "from_json_safe", "json_safe"]

MAX_VOXELS = 1 << 48
MAX_PARAMS = 1 << 31
MAX_BLOCKS = 1 << 20
#: Payload bytes a block takes at least (see :meth:`FieldHeader.from_json`).
MIN_BLOCK_BYTES = 8
#: Non-finite numbers (an exact fit's PSNR is ``inf``) are stored in ``fit`` as these
#: strings, since JSON has no infinities; reading turns them back into floats.
_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (in lists and objects too) as a string."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def from_json_safe(value: Any) -> Any:
    """Inverse of :func:`json_safe` (the strings ``"inf"``, ``"-inf"``, ``"nan"``)."""
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {k: from_json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json_safe(v) for v in value]
    return value


@dataclass(frozen=True)
class FieldHeader:
    """Everything needed to decode the payload of one ``.inif`` file.

    Attributes
    ----------
    layout
        Shape, axes and dtype of the original array.
    lo, hi
        Per-channel intensity range mapped to ``[-1, 1]`` before fitting.
    grid_counts
        Blocks per coordinate axis.
    depth
        Linear layers per block network.
    widths
        Hidden width of every block's network, in block order.
    half
        Quantiser half-range (``2 * half + 1`` levels) of the weight matrices after each
        block's first layer.
    first_half, bias_half
        Half-ranges of every block's first layer (weights and bias) and of the biases of
        its other layers (:mod:`.quant`); ``None`` (files written before they existed)
        means ``half``.
    margin
        Pixels beyond its tile on each side that a block's field was fitted on.
    scale
        Physical pixel size per original axis (``None`` if unknown), and its ``unit``.
    prior
        Description of a classic-codec prior section (hybrid mode) or ``None``.
    fit
        How the field was fitted and what it reached (steps, seconds, psnr, ssim, ...).
    metadata
        Small free-form JSON (source name, guidance results, ...).
    """

    layout: Layout
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    grid_counts: tuple[int, ...]
    depth: int
    widths: tuple[int, ...]
    half: int = 127
    margin: int = 0
    scale: tuple[float, ...] | None = None
    unit: str | None = None
    prior: dict[str, Any] | None = None
    fit: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    first_half: int | None = None
    bias_half: int | None = None

    @property
    def grid(self) -> BlockGrid:
        """The block grid over the coordinate axes."""
        return BlockGrid(self.layout.coord_shape, self.grid_counts, self.margin)

    def arch(self, block: int) -> Architecture:
        """Architecture of ``block``'s network."""
        return Architecture(
            len(self.layout.coord_axes), self.layout.channels, self.widths[block], self.depth
        )

    def tensor_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the stored tensors in payload order: per block, per layer, W then b."""
        shapes: list[tuple[int, ...]] = []
        for block in range(len(self.widths)):
            for fan_in, fan_out in self.arch(block).layer_shapes:
                shapes += [(fan_in, fan_out), (fan_out,)]
        return shapes

    def tensor_kinds(self) -> list[str]:
        """The :data:`.quant.KINDS` of the stored tensors, in payload order."""
        block = ["first", "first"] + ["weight", "bias"] * (self.depth - 1)
        return block * len(self.widths)

    def tensor_halves(self) -> tuple[int, ...]:
        """Quantiser half-range of every stored tensor, in payload order."""
        by_kind = {
            "first": self.half if self.first_half is None else self.first_half,
            "bias": self.half if self.bias_half is None else self.bias_half,
            "weight": self.half,
        }
        return tuple(by_kind[k] for k in self.tensor_kinds())

    def with_halves(self, halves: tuple[int, ...]) -> FieldHeader:
        """A copy recording a quantiser's per-tensor half-ranges (one number per kind)."""
        by_kind: dict[str, set[int]] = {}
        for h, kind in zip(halves, self.tensor_kinds(), strict=True):
            by_kind.setdefault(kind, set()).add(h)
        if any(len(v) != 1 for v in by_kind.values()):
            raise ValueError("a header stores one quantiser half-range per kind of tensor")
        first, bias, weight = (by_kind[k].pop() for k in ("first", "bias", "weight"))
        return replace(self, half=weight, first_half=first, bias_half=bias)

    @property
    def n_params(self) -> int:
        """Stored parameters over all blocks."""
        n_in, n_out = len(self.layout.coord_axes), self.layout.channels
        counts: dict[int, int] = {}
        for w in self.widths:
            counts[w] = counts.get(w, 0) + 1
        return sum(
            k * Architecture.params_for(n_in, n_out, w, self.depth) for w, k in counts.items()
        )

    def with_fit(self, **values: Any) -> FieldHeader:
        """A copy with ``fit`` updated."""
        return replace(self, fit={**self.fit, **values})

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in the file."""
        return {
            "shape": list(self.layout.shape),
            "axes": self.layout.axes,
            "dtype": self.layout.dtype,
            "lo": list(self.lo),
            "hi": list(self.hi),
            "grid": list(self.grid_counts),
            "depth": self.depth,
            "widths": list(self.widths),
            "half": self.half,
            "first_half": self.first_half,
            "bias_half": self.bias_half,
            "margin": self.margin,
            "scale": None if self.scale is None else list(self.scale),
            "unit": self.unit,
            "prior": self.prior,
            "fit": json_safe(self.fit),
            "metadata": self.metadata,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any], payload_bytes: int | None = None) -> FieldHeader:
        """Validate a header object read from a file; raises :class:`InifFormatError`.

        With ``payload_bytes`` (the body's size), counts are also checked against what
        that many bytes can plausibly hold before anything is built from them: at most one
        block per :data:`MIN_BLOCK_BYTES` (the smallest network a writer makes, width 8 and
        depth 3, stores ~100 weights and 6 float16 scales: over 30 bytes).
        """
        try:
            if payload_bytes is not None:
                widths = obj.get("widths")
                if isinstance(widths, list) and len(widths) * MIN_BLOCK_BYTES > max(
                    payload_bytes, MIN_BLOCK_BYTES
                ):
                    raise InifFormatError(
                        f"header declares {len(widths)} blocks but the file holds only "
                        f"{payload_bytes} payload bytes"
                    )
            return cls._from_json(obj)
        except InifFormatError:
            raise
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise InifFormatError(f"invalid header: {exc}") from None

    @classmethod
    def _from_json(cls, obj: dict[str, Any]) -> FieldHeader:
        def ints(value: Any, name: str) -> tuple[int, ...]:
            if not isinstance(value, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value
            ):
                raise InifFormatError(f"header field {name!r} must be a list of integers")
            return tuple(value)

        def floats(value: Any, name: str) -> tuple[float, ...]:
            if not isinstance(value, list) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in value
            ):
                raise InifFormatError(f"header field {name!r} must be a list of finite numbers")
            return tuple(float(v) for v in value)

        shape = ints(obj["shape"], "shape")
        if not 1 <= len(shape) <= 5 or math.prod(shape) > MAX_VOXELS:
            raise InifFormatError(f"unsupported shape {shape}")
        if not isinstance(obj["axes"], str) or not isinstance(obj["dtype"], str):
            raise InifFormatError("axes and dtype must be strings")
        if not (obj["axes"].isascii() and obj["axes"].isalpha() and obj["axes"].isupper()):
            raise InifFormatError(f"axes must be upper-case letters, got {obj['axes']!r}")
        layout = Layout(shape, obj["axes"], obj["dtype"])
        lo, hi = floats(obj["lo"], "lo"), floats(obj["hi"], "hi")
        if len(lo) != layout.channels or len(hi) != layout.channels:
            raise InifFormatError("intensity range does not match the channel count")
        if any(not -1e38 <= a <= b <= 1e38 for a, b in zip(lo, hi, strict=True)):
            raise InifFormatError("intensity range must have lo <= hi within float32 range")
        grid_counts = ints(obj["grid"], "grid")
        if len(grid_counts) != len(layout.coord_axes):
            raise InifFormatError("block grid does not match the coordinate axes")
        grid = BlockGrid(layout.coord_shape, grid_counts)
        if grid.counts_effective != grid_counts or grid.n_blocks > MAX_BLOCKS:
            raise InifFormatError(f"invalid block grid {grid_counts}")
        depth = obj["depth"]
        if not isinstance(depth, int) or not 2 <= depth <= 32:
            raise InifFormatError(f"invalid depth {depth!r}")
        widths = ints(obj["widths"], "widths")
        if len(widths) != grid.n_blocks or not all(1 <= w <= 4096 for w in widths):
            raise InifFormatError("block widths do not match the block grid")
        half = obj["half"]
        if not isinstance(half, int) or not 1 <= half <= 32767:
            raise InifFormatError(f"invalid quantiser half {half!r}")
        halves = {k: obj.get(k) for k in ("first_half", "bias_half")}
        for key, value in halves.items():
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 32767
            ):
                raise InifFormatError(f"invalid quantiser {key} {value!r}")
        margin = obj.get("margin", 0)
        if not isinstance(margin, int) or isinstance(margin, bool) or not 0 <= margin <= 64:
            raise InifFormatError(f"invalid block margin {margin!r}")
        scale = None if obj.get("scale") is None else floats(obj["scale"], "scale")
        if scale is not None and len(scale) != len(shape):
            raise InifFormatError("scale does not match the number of axes")
        unit = obj.get("unit")
        prior, fit, metadata = obj.get("prior"), obj.get("fit", {}), obj.get("metadata", {})
        fit = from_json_safe(fit)
        if unit is not None and not isinstance(unit, str):
            raise InifFormatError("unit must be a string")
        if prior is not None and not isinstance(prior, dict):
            raise InifFormatError("prior must be an object")
        if not isinstance(fit, dict) or not isinstance(metadata, dict):
            raise InifFormatError("fit and metadata must be objects")
        header = cls(
            layout,
            lo,
            hi,
            grid_counts,
            depth,
            widths,
            half,
            margin,
            scale,
            unit,
            prior,
            fit,
            metadata,
            halves["first_half"],
            halves["bias_half"],
        )
        if header.n_params > MAX_PARAMS:
            raise InifFormatError(f"header declares {header.n_params} parameters")
        return header
