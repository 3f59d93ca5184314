"""Glue between napari layers and :mod:`napari_inif.core` (no Qt; torch only when used).

* :func:`decoded_layer_data` turns an :class:`~napari_inif.core.Encoded` into napari
  layer data: a lazy multiscale image with the file's scale, axis names, contrast limits
  and metadata.  The reader, the sample data and the Compress widget all use it.
* :func:`layer_image` turns a napari image layer into a :class:`~napari_inif.core.Image`
  (array, axes, scale) for fitting.
* :func:`finer_region` decodes a region of a decoded layer ``k`` times finer than its
  pixels (the field is continuous) and says where to place it (ROI decode, viewport).
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import dask.array as da

    from .core import Encoded, GridEncoded, Image, InifArray

__all__ = [
    "ENCODED_KEY",
    "FIELD_KEY",
    "INFO_KEY",
    "LAZY_KEY",
    "BackgroundDecoder",
    "Placed",
    "TiledView",
    "ViewRequest",
    "background_decoder",
    "chunk_shape",
    "codec_dtype",
    "compare",
    "current_index",
    "decoded_layer_data",
    "decoded_name",
    "difference_levels",
    "field_of",
    "file_name",
    "finer_region",
    "fit_layer",
    "inif_info",
    "is_rgb",
    "layer_axes",
    "layer_displayed",
    "layer_image",
    "layer_layout",
    "layer_shape",
    "lazy_levels",
    "placeholder_levels",
    "plane_dims",
    "plane_psnr",
    "set_refresher",
    "viewport_request",
    "visible_region",
]

#: ``layer.metadata`` keys of a decoded layer: a JSON-able summary, the Encoded itself, the
#: full-resolution :class:`~napari_inif.core.InifArray` and the channel the layer shows.
INFO_KEY = "inif"
ENCODED_KEY = "inif_encoded"
FIELD_KEY = "inif_field"
CHANNEL_KEY = "inif_channel"
#: ``layer.metadata`` key of the field whose tiles the layer's data decodes in the
#: background (see :class:`BackgroundDecoder`): its layers are refreshed as tiles arrive.
LAZY_KEY = "inif_lazy"

#: Edge of a dask chunk in the plane at full resolution (pixels).  Measured on a 6x1024x1024
#: field (one torch thread, loaded machine): a 512x512 view took about the same time with
#: 64, 128 or 256 px chunks (per-chunk overhead vs pixels decoded past the view's edge);
#: 128 decodes 1.56x the view's pixels, 256 2.25x.
CHUNK_EDGE = 128
#: Seconds between refreshes of a layer while its tiles keep arriving.
REFRESH_EVERY = 0.25

_AXIS_LETTERS = "TCZYXSQ"


def decoded_name(source: str, ratio: float) -> str:
    """Layer name of a decoded result, e.g. ``cells [INIF 256x]``."""
    return f"{source} [INIF {ratio:.0f}x]"


def file_name(source: str, ratio: float) -> str:
    """A file name for a result: ``nuclei 2`` at 256x gives ``nuclei_2_256x.inif``."""
    import re

    stem = re.sub(r"[^\w.-]+", "_", source).strip("_.") or "image"
    return f"{stem}_{ratio:.0f}x.inif"


def inif_info(
    encoded: Encoded | GridEncoded,
    *,
    path: str | os.PathLike[str] | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """The JSON-able summary stored in a decoded layer's metadata."""
    fit = encoded.header.fit
    return {
        "ratio": round(float(encoded.ratio), 2),
        "nbytes": int(encoded.nbytes),
        "psnr": fit.get("psnr"),
        "psnr_dtype": fit.get("psnr_dtype"),
        "ssim": fit.get("ssim"),
        "max_error": fit.get("max_error"),
        "axes": encoded.header.layout.axes,
        "file": None if path is None else os.fspath(path),
        "source_layer": source,
        "fit": dict(fit),
    }


def _units(unit: str | None, axes: str) -> list[str] | None:
    """napari units per axis when ``unit`` is a length pint understands, else ``None``."""
    if not unit:
        return None
    try:
        import pint

        quantity = pint.get_application_registry()(unit.replace("µ", "u").replace("μ", "u"))
        if not quantity.check("[length]"):
            return None
    except Exception:  # pint raises many types for unparseable strings
        return None
    return [unit if a in "ZYX" else "pixel" for a in axes]


class Tiles:
    """One pyramid level cut into chunks that are decoded in the background.

    ``tiles.chunk(key)`` never decodes: it returns the chunk from the decoder's cache, or
    a stand-in (the coarsest level, enlarged, if that is cached; else zeros) and asks the
    :class:`BackgroundDecoder` for the chunk; the layer is refreshed when it arrives.
    ``tiles[key]`` is a lazy :class:`TiledView`: what napari gets as a level.
    """

    _tokens = itertools.count()

    def __init__(
        self, level: InifArray, decoder: BackgroundDecoder, owner: Any, coarse: Tiles | None
    ):
        self.level = level
        self.decoder = decoder
        self.owner = owner  # the field the layer shows (what its refresh is keyed on)
        self.coarse = coarse  # the coarsest level's tiles, or None for the coarsest itself
        self.shape = level.shape
        self.dtype = level.dtype
        self.ndim = level.ndim
        self.chunks = chunk_shape(level)
        self.token = next(self._tokens)

    def __getitem__(self, key: Any) -> Any:
        return TiledView(self)[key]

    def chunk(self, key: Any) -> np.ndarray:
        """The chunk ``key`` (cached, or a stand-in while it is decoded)."""
        return self.decoder.get(self, key)

    def read(self, box: tuple[tuple[int, int], ...]) -> np.ndarray:
        """The region ``box`` (``(start, stop)`` per axis) assembled from chunks."""
        out = np.empty(tuple(b - a for a, b in box), self.dtype)
        ranges = [
            range(a // c * c, b, c) if b > a else range(0)
            for (a, b), c in zip(box, self.chunks, strict=True)
        ]
        for starts in itertools.product(*ranges):
            key = tuple(
                slice(s, min(s + c, n))
                for s, c, n in zip(starts, self.chunks, self.shape, strict=True)
            )
            data = self.chunk(key)
            src, dst = [], []
            for k, (a, b) in zip(key, box, strict=True):
                lo, hi = max(k.start, a), min(k.stop, b)
                src.append(slice(lo - k.start, hi - k.start))
                dst.append(slice(lo - a, hi - a))
            out[tuple(dst)] = data[tuple(src)]
        return out

    def decode(self, key: tuple[slice, ...]) -> np.ndarray:
        """Decode ``key`` now (in the decoder's thread)."""
        return np.asarray(self.level[key])

    def plane_axes(self) -> tuple[int, ...]:
        return tuple(self.level.layout.coord_axes[-2:])


class TiledView:
    """A lazy box of a :class:`Tiles` level (numpy-like: ``shape``, ``dtype``, slicing).

    Slicing composes boxes and decodes nothing; ``np.asarray`` assembles the box from
    cached chunks and stand-ins (:meth:`Tiles.read`) without waiting for any decode.
    napari gets these as levels instead of dask arrays: a dask ``compute`` on the GUI
    thread builds a graph, starts a thread pool and, the first time, imports
    ``distributed`` (0.6 s); assembling cached chunks costs microseconds.
    """

    def __init__(self, tiles: Tiles, index: tuple[Any, ...] | None = None):
        self.tiles = tiles
        #: per axis of the level: an int (dropped) or a ``(start, stop)`` range
        self.index = index if index is not None else tuple((0, n) for n in tiles.shape)
        self.shape = tuple(b - a for a, b in (i for i in self.index if isinstance(i, tuple)))
        self.dtype = tiles.dtype
        self.ndim = len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> Any:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        if len(key) > self.ndim:
            raise IndexError(f"too many indices: {len(key)} for {self.ndim} dimensions")
        key = key + (slice(None),) * (self.ndim - len(key))
        parts = iter(zip(key, self.shape, strict=True))
        index: list[Any] = []
        steps: list[Any] = []
        for own in self.index:
            if not isinstance(own, tuple):
                index.append(own)
                continue
            k, n = next(parts)
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step < 0:
                    raise IndexError("negative steps are not supported")
                stop = max(start, stop)
                index.append((own[0] + start, own[0] + stop))
                steps.append(slice(None, None, step))
            else:
                j = int(k) + (n if int(k) < 0 else 0)
                if not 0 <= j < n:
                    raise IndexError(f"index {k} is out of bounds for size {n}")
                index.append(own[0] + j)
        view = TiledView(self.tiles, tuple(index))
        if all(s.step == 1 for s in steps):
            return view
        return np.asarray(view)[tuple(steps)]  # strided: napari slices with unit steps

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        box = tuple(i if isinstance(i, tuple) else (i, i + 1) for i in self.index)
        out = self.tiles.read(box)
        out = out[tuple(slice(None) if isinstance(i, tuple) else 0 for i in self.index)]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"TiledView(shape={self.shape}, dtype={self.dtype})"


def _norm(key: Any, shape: tuple[int, ...]) -> tuple[slice, ...]:
    key = key if isinstance(key, tuple) else (key,)
    key = key + (slice(None),) * (len(shape) - len(key))
    out = []
    for k, n in zip(key, shape, strict=True):
        if isinstance(k, slice):
            start, stop, _ = k.indices(n)
        else:
            start, stop = int(k), int(k) + 1
        out.append(slice(start, stop))
    return tuple(out)


class BackgroundDecoder:
    """Decodes tiles of lazy layers in one background thread, newest request first.

    The GUI thread never decodes: napari's slicing gets cached tiles or stand-ins
    (:class:`Tiles`), a request that waits too long behind newer ones is dropped (a
    dragged slider leaves no backlog), decoded tiles are kept in an LRU cache of
    ``max_bytes`` (the thumbnail and the view share it), and ``refresher(owner)`` is
    called from the decoding thread when a tile of ``owner`` arrived (the Qt side moves
    that to the GUI thread and refreshes the layers).
    """

    def __init__(self, *, max_bytes: int = 512 << 20, max_pending: int = 96):
        self.max_bytes = max_bytes
        self.max_pending = max_pending
        self.refresher: Callable[[Any], None] | None = None
        #: ``on_error(owner, exc)``: called from the decoding thread for the first tile of
        #: ``owner`` that failed (once per field; the Qt side shows a warning)
        self.on_error: Callable[[Any, BaseException], None] | None = None
        self.decoded_pixels = 0  # statistics (tests count what was decoded)
        self.dropped = 0
        self.errors: list[BaseException] = []
        self._cache: OrderedDict[tuple[int, tuple[Any, ...]], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._pending: OrderedDict[tuple[int, tuple[Any, ...]], tuple[Tiles, tuple[slice, ...]]] = (
            OrderedDict()
        )
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._decoding: tuple[int, tuple[Any, ...]] | None = None
        self._refreshed: dict[int, float] = {}
        self._failed: set[tuple[int, tuple[Any, ...]]] = set()  # never asked for again
        self._reported: set[int] = set()  # owners whose failure was reported
        self._thread = threading.Thread(target=self._run, name="inif-decode", daemon=True)
        self._thread.start()

    @staticmethod
    def _ckey(key: tuple[slice, ...]) -> tuple[Any, ...]:
        return tuple((s.start, s.stop) for s in key)

    def get(self, tiles: Tiles, key: Any) -> np.ndarray:
        """The chunk ``key`` of ``tiles`` if decoded, else a stand-in (and ask for it)."""
        key = _norm(key, tiles.shape)
        found = self._lookup(tiles, key)
        if found is not None:
            return found
        self._want(tiles, key)
        stand_in = None
        if tiles.coarse is not None:
            stand_in = self._enlarged(tiles, key)  # asks for the coarse plane after the tile
        if stand_in is None:
            shape = tuple(s.stop - s.start for s in key)
            stand_in = np.zeros(shape, tiles.dtype)
        return stand_in

    def _lookup(self, tiles: Tiles, key: tuple[slice, ...]) -> np.ndarray | None:
        ck = (tiles.token, self._ckey(key))
        with self._cond:
            found = self._cache.get(ck)
            if found is not None:
                self._cache.move_to_end(ck)
            return found

    def _want(self, tiles: Tiles, key: tuple[slice, ...]) -> None:
        ck = (tiles.token, self._ckey(key))
        with self._cond:
            if ck == self._decoding or ck in self._cache or ck in self._failed:
                return  # being decoded now, or just done: the refresh after it brings it
            if ck in self._pending:
                self._pending.move_to_end(ck)
            else:
                self._pending[ck] = (tiles, key)
                while len(self._pending) > self.max_pending:
                    self._pending.popitem(last=False)  # the oldest wish goes
                    self.dropped += 1
            self._cond.notify()

    def _enlarged(self, tiles: Tiles, key: tuple[slice, ...]) -> np.ndarray | None:
        """``key`` cut from the coarsest level's plane, enlarged (``None``: not decoded)."""
        coarse = tiles.coarse
        assert coarse is not None
        plane = tiles.plane_axes()
        ckey = tuple(slice(0, coarse.shape[a]) if a in plane else s for a, s in enumerate(key))
        found = self._lookup(coarse, ckey)
        if found is None:
            self._want(coarse, ckey)  # asked after the tile: decoded first (newest first)
            return None
        out = found
        for a in plane:
            ratio = (
                coarse.level.factors[coarse.level.layout.coord_axes.index(a)]
                / (tiles.level.factors[tiles.level.layout.coord_axes.index(a)])
            )
            pos = (np.arange(key[a].start, key[a].stop) + 0.5) / ratio
            idx = np.clip(pos.astype(int), 0, coarse.shape[a] - 1)
            out = np.take(out, idx, axis=a)
        return out

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._busy = False
                    self._cond.notify_all()
                    self._cond.wait()
                if self._closed:
                    self._busy = False
                    self._cond.notify_all()
                    return
                self._busy = True
                ck, (tiles, key) = self._pending.popitem(last=True)
                self._decoding = ck
            try:
                data = tiles.decode(key)
            except Exception as exc:  # reported once per field, never raised into napari
                self.errors.append(exc)
                with self._cond:
                    self._decoding = None
                    self._failed.add(ck)
                    first = id(tiles.owner) not in self._reported
                    self._reported.add(id(tiles.owner))
                on_error = self.on_error
                if first and on_error is not None:
                    on_error(tiles.owner, exc)
                continue
            with self._cond:
                self._decoding = None
                self._cache[ck] = data
                self._bytes += data.nbytes
                self.decoded_pixels += data.size
                while self._bytes > self.max_bytes and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._bytes -= old.nbytes
            refresher = self.refresher
            if refresher is not None and self._due(tiles.owner):
                refresher(tiles.owner)

    def _due(self, owner: Any) -> bool:
        """Refresh once the owner's queued tiles are all decoded, or every
        :data:`REFRESH_EVERY` seconds while they keep coming (a refresh re-slices)."""
        now = time.perf_counter()
        with self._cond:
            more = any(t.owner is owner for t, _ in self._pending.values())
            last = self._refreshed.get(id(owner), 0.0)
            if more and now - last < REFRESH_EVERY:
                return False
            self._refreshed[id(owner)] = now
            return True

    def close(self) -> None:
        """Stop the decoding thread (what is queued is dropped)."""
        with self._cond:
            self._closed = True
            self._pending.clear()
            self.refresher = None
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def idle(self, timeout: float = 30.0) -> bool:
        """Wait until nothing is pending or decoding; whether that happened in time."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def clear(self) -> None:
        """Forget every decoded tile and every wish."""
        with self._cond:
            self._cache.clear()
            self._pending.clear()
            self._failed.clear()
            self._reported.clear()
            self._bytes = 0


_DECODER: BackgroundDecoder | None = None
_ACTIVE: Callable[[], bool] = lambda: False  # noqa: E731


def set_refresher(
    refresher: Callable[[Any], None] | None,
    active: Callable[[], bool],
    on_error: Callable[[Any, BaseException], None] | None = None,
) -> BackgroundDecoder:
    """Turn on background decoding for new layers while ``active()`` is true.

    ``refresher(owner)`` is called from the decoding thread when tiles of ``owner``
    arrived (it must hand over to the GUI thread and refresh the layers showing it);
    ``active()`` says whether anything would refresh them (a napari window is open);
    ``on_error(owner, exc)`` is told (from the decoding thread) of the first tile of a
    field that could not be decoded.
    Otherwise (scripts, a bare ``ViewerModel``) layers decode when napari asks.
    """
    global _DECODER, _ACTIVE
    if _DECODER is None:
        import atexit

        _DECODER = BackgroundDecoder()
        atexit.register(_DECODER.close)  # no decoding while the interpreter shuts down
    _DECODER.refresher = refresher
    _DECODER.on_error = on_error
    _ACTIVE = active
    return _DECODER


def background_decoder() -> BackgroundDecoder | None:
    """The background decoder, if one is installed and active, else ``None``."""
    if _DECODER is None or _DECODER.refresher is None or not _ACTIVE():
        return None
    return _DECODER


def chunk_shape(level: InifArray) -> tuple[int, ...]:
    """Chunk of a level: one plane thick along every coordinate axis but the last two
    (Y, X), where it is :data:`CHUNK_EDGE` pixels of the full-resolution image (fewer at
    coarser levels); every channel."""
    layout = level.layout
    plane = set(layout.coord_axes[-2:])
    chunks = []
    for axis, n in enumerate(level.shape):
        if axis in plane:
            factor = level.factors[layout.coord_axes.index(axis)]
            chunks.append(max(1, min(n, round(CHUNK_EDGE / max(factor, 1.0)))))
        elif axis == layout.channel_axis:
            chunks.append(n)
        else:
            chunks.append(1)
    return tuple(chunks)


def as_dask(level: InifArray) -> da.Array:
    """``level`` as a dask array in chunks of :func:`chunk_shape`: computing a region
    decodes only the chunks it touches (scripts, workers)."""
    import uuid

    import dask.array as da

    return da.from_array(
        level,
        chunks=chunk_shape(level),
        asarray=False,
        fancy=False,
        lock=False,
        meta=np.empty((0,) * level.ndim, level.dtype),
        name=f"inif-{uuid.uuid4().hex}",
    )


def lazy_levels(field: InifArray, decoder: BackgroundDecoder | None = None) -> list[Any]:
    """The multiscale pyramid of ``field``: napari decodes only the visible chunks of the
    current slice at the level it shows.

    With a ``decoder`` (a napari window), :class:`TiledView` levels whose chunks are
    decoded in the background; without, dask arrays (:func:`as_dask`) that decode when
    computed.
    """
    levels = field.levels
    if decoder is None:
        return [as_dask(level) for level in levels]
    coarse = Tiles(levels[-1], decoder, field, None)
    tiles = [Tiles(level, decoder, field, coarse) for level in levels[:-1]] + [coarse]
    return [TiledView(t) for t in tiles]


def placeholder_levels(layout: Any) -> list[np.ndarray]:
    """Zero levels shaped like the pyramid a field of ``layout`` will have.

    Read-only broadcasts of one zero (no memory, nothing to decode), with the shapes of
    ``InifArray.levels``: the Compress widget adds its preview layer with these when
    *Start* is pressed, so during the fit the previews and the result only replace the
    layer's data (a napari layer add costs ~0.1-0.3 s of GUI thread; a data swap a frame).
    """
    from types import SimpleNamespace

    from .core.codec.decode import InifArray  # torch-free

    stub = SimpleNamespace(header=SimpleNamespace(layout=layout))
    zero = np.zeros((), np.dtype(layout.dtype))
    return [np.broadcast_to(zero, level.shape) for level in InifArray(stub).levels]  # type: ignore[arg-type]


def decoded_layer_data(
    encoded: Encoded | GridEncoded,
    *,
    name: str,
    path: str | os.PathLike[str] | None = None,
    source: str | None = None,
) -> tuple[list[da.Array], dict[str, Any], str]:
    """napari ``(data, meta, "image")`` for a lazy multiscale view of ``encoded``.

    Every level is lazy (:func:`lazy_levels`), so napari decodes only the visible chunks
    of the current slice at the level it displays.  A multi-channel field becomes one
    layer per channel (``channel_axis``), each with the channel it shows in its metadata.
    """
    header = encoded.header
    layout = header.layout
    c = layout.channel_axis
    rgb = is_rgb(layout)
    keep = [i for i in range(len(layout.shape)) if i != c]
    axes = "".join(layout.axes[i] for i in keep)
    field = encoded.array()
    decoder = background_decoder()
    levels = lazy_levels(field, decoder)
    limits = [
        (float(lo), float(hi) if hi > lo else float(lo) + 1.0)
        for lo, hi in zip(header.lo, header.hi, strict=True)
    ]
    meta: dict[str, Any] = {
        "name": name,
        "multiscale": True,
        "rgb": rgb,
        "axis_labels": list(axes),
        "contrast_limits": limits[0] if c is None else limits,
        "metadata": {
            INFO_KEY: inif_info(encoded, path=path, source=source),
            ENCODED_KEY: encoded,
            FIELD_KEY: field,
            LAZY_KEY: field,
        },
    }
    if decoder is not None:
        meta["cache"] = False  # napari's dask cache would keep the stand-ins
    if header.scale is not None:
        meta["scale"] = [header.scale[i] for i in keep]
    units = _units(header.unit, axes)
    if units is not None:
        meta["units"] = units
    if rgb:  # one RGB(A) layer, as it came in
        lo = min(lim[0] for lim in limits)
        hi = max(lim[1] for lim in limits)
        meta["contrast_limits"] = (0.0, 255.0) if layout.dtype == "uint8" else (lo, hi)
    elif c is not None:
        meta["channel_axis"] = c
        meta["axis_labels"] = list(axes)
        meta["metadata"] = [{**meta["metadata"], CHANNEL_KEY: i} for i in range(layout.shape[c])]
    return levels, meta, "image"


def is_rgb(layout: Any) -> bool:
    """Whether a field holds an RGB(A) image: a last ``S`` axis of 3 or 4 samples."""
    c = layout.channel_axis
    return (
        c is not None
        and c == len(layout.shape) - 1
        and layout.axes[c] == "S"
        and layout.shape[c] in (3, 4)
    )


def codec_dtype(dtype: Any) -> np.dtype:
    """The dtype a layer's data is fitted in: uint8, uint16, float32 as they are; bool as
    uint8; anything else (float64, int16, int32, ...) as float32."""
    dtype = np.dtype(dtype)
    if dtype.name in ("uint8", "uint16", "float32"):
        return dtype
    if dtype.kind == "b":
        return np.dtype(np.uint8)
    if dtype.kind in "iuf":
        return np.dtype(np.float32)
    raise ValueError(f"cannot compress {dtype} data")


def layer_axes(layer: Any, axes: str | None = None) -> str:
    """Axis letters of an image layer's data: ``axes`` if given (one letter per layer
    dimension, e.g. ``"TYX"`` for a time-lapse napari shows as ``ZYX``), else its axis
    labels if they are letters, else guessed; ``S`` is appended for an RGB(A) layer."""
    from napari_inif.core.layout import guess_axes

    ndim = layer.ndim
    if axes is not None:
        axes = axes.strip().upper()
        if len(axes) != ndim:
            raise ValueError(f"{axes!r} names {len(axes)} axes; the layer has {ndim}")
        if any(a not in _AXIS_LETTERS for a in axes):
            raise ValueError(f"axes are letters from {_AXIS_LETTERS[:5]}, got {axes!r}")
        return axes + ("S" if getattr(layer, "rgb", False) else "")
    labels = [str(label).upper() for label in getattr(layer, "axis_labels", ())]
    if (
        len(labels) == ndim
        and all(len(label) == 1 and label in _AXIS_LETTERS for label in labels)
        and len(set(labels)) == ndim
    ):
        axes = "".join(labels)
    else:
        axes = guess_axes(ndim)
    return axes + ("S" if getattr(layer, "rgb", False) else "")


def layer_shape(layer: Any) -> tuple[int, ...]:
    """Full-resolution shape of an image layer's data (without reading it)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return tuple(int(n) for n in data.shape)


def layer_layout(layer: Any, axes: str | None = None) -> Any:
    """The :class:`~napari_inif.core.Layout` a layer would be fitted with (reads no data)."""
    from .core import Layout

    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return Layout(layer_shape(layer), layer_axes(layer, axes), codec_dtype(data.dtype).name)


def layer_image(layer: Any, axes: str | None = None) -> Image:
    """The full-resolution array of an image layer, with axes and scale, for fitting.

    Reads the data (dask or lazy arrays are computed): call it in a worker thread.
    """
    from .core import Image

    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    arr = np.asarray(data)
    arr = arr.astype(codec_dtype(arr.dtype), copy=False)
    axes = layer_axes(layer, axes)
    scale = [float(s) for s in layer.scale]
    if getattr(layer, "rgb", False):
        scale.append(1.0)
    unit = None
    units = getattr(layer, "units", None)
    if units:
        spatial = [str(u) for u, a in zip(units, axes, strict=False) if a in "ZYX"]
        if spatial and spatial[0] != "pixel":
            unit = spatial[0]
    scale_t = None if all(s == 1.0 for s in scale) else tuple(scale)
    return Image(arr, axes, scale_t, unit)


def field_of(layer: Any) -> Any:
    """The full-resolution lazy data of a decoded layer (the layer's dimensions; decodes
    when computed, unlike the layer's data which may decode in the background)."""
    found = _field_and_channel(layer)
    if found is None:
        return None
    field, channel = found
    data = as_dask(field)
    c = field.layout.channel_axis
    if c is not None and channel is not None:
        data = data[(slice(None),) * c + (channel,)]
    return data


def _field_and_channel(layer: Any) -> tuple[InifArray, int | None] | None:
    """The field behind a decoded layer and the channel the layer shows, or ``None``."""
    meta = getattr(layer, "metadata", None) or {}
    field = meta.get(FIELD_KEY)
    if field is None:
        return None
    return field, meta.get(CHANNEL_KEY)


def _layer_axes_of_field(field: InifArray) -> list[int]:
    """The field's axes that are layer dimensions (all but the channel axis)."""
    c = field.layout.channel_axis
    return [axis for axis in range(len(field.layout.shape)) if axis != c]


@dataclass(frozen=True)
class Placed:
    """A decoded region with where it goes in the layer's world: ``scale`` and ``translate``."""

    data: np.ndarray
    scale: tuple[float, ...]
    translate: tuple[float, ...]


def finer_region(layer: Any, region: tuple[slice, ...], k: int = 1) -> Placed:
    """Decode ``region`` of a decoded layer ``k`` times finer in Y and X, placed in its world.

    Parameters
    ----------
    layer
        A layer made by :func:`decoded_layer_data` (``layer.data`` levels are lazy views).
    region
        One slice per layer dimension (unit step), in level-0 data coordinates.
    k
        Sampling factor in the field's plane (Y, X); 1 gives the stored pixels.

    Returns
    -------
    Placed
        The array (one axis per layer dimension) and the scale/translate that put it
        exactly over the layer: sample ``j`` of a plane axis sits at original pixel
        ``start + (j + 0.5) / k - 0.5``.
    """
    found = _field_and_channel(layer)
    if found is None:
        raise ValueError(f"layer {layer.name!r} is not a decoded INIF layer")
    if k < 1 or int(k) != k:
        raise ValueError(f"the zoom factor must be a positive integer, got {k}")
    k = int(k)
    field, channel = found
    layout = field.layout
    plane = set(layout.coord_axes[-2:])
    key: list[Any] = [channel if channel is not None else slice(None)] * len(layout.shape)
    scale = list(layer.scale)
    translate = list(layer.translate)
    for d, axis in enumerate(_layer_axes_of_field(field)):
        start, stop, _ = region[d].indices(layout.shape[axis])
        if axis in plane and k > 1:
            key[axis] = slice(start * k, stop * k)
            translate[d] += scale[d] * (start + 0.5 / k - 0.5)
            scale[d] /= k
        else:
            key[axis] = slice(start, stop)
            translate[d] += scale[d] * start
    zoomed = field.zoom(k) if k > 1 else field
    return Placed(zoomed[tuple(key)], tuple(scale), tuple(translate))


def fit_layer(
    layer: Any, config: Any, *, preview_every: float | None = 2.0, axes: str | None = None
) -> Any:
    """Generator fitting an image layer: yields ``core.Progress``, returns ``core.Encoded``.

    ``axes`` overrides the layer's axis letters (see :func:`layer_axes`).  Reads the
    layer's data first (in the caller's thread: run it in a worker).
    """
    import dask.array  # noqa: F401 - first import here, not when the GUI shows a preview

    encoded = yield from layer_image(layer, axes).fit(config, str(layer.name), preview_every)
    if encoded is not None:
        encoded.nbytes  # noqa: B018 - packs the file once here, not on the GUI thread
    return encoded


def plane_dims(layer: Any) -> tuple[int, ...]:
    """Layer dimensions that are the field's Y and X (where zoom adds samples)."""
    found = _field_and_channel(layer)
    if found is None:
        return ()
    field = found[0]
    plane = set(field.layout.coord_axes[-2:])
    return tuple(d for d, axis in enumerate(_layer_axes_of_field(field)) if axis in plane)


def layer_displayed(layer: Any, world_displayed: Any, world_ndim: int) -> tuple[int, ...]:
    """The layer's dimensions among the viewer's displayed (world) dimensions."""
    offset = world_ndim - layer.ndim
    return tuple(int(d) - offset for d in world_displayed if int(d) >= offset)


def current_index(layer: Any, world_point: Any, displayed: tuple[int, ...]) -> tuple[Any, ...]:
    """Level-0 index of the current slice: an int per non-displayed dim, ``slice(None)`` else."""
    position = layer.world_to_data(np.asarray(world_point, float))
    shape = layer_shape(layer)
    return tuple(
        slice(None) if d in displayed else int(np.clip(round(float(position[d])), 0, n - 1))
        for d, n in enumerate(shape)
    )


@dataclass(frozen=True)
class ViewRequest:
    """What the viewport sampler decodes: a level-0 ``region`` sampled ``k`` times finer."""

    region: tuple[slice, ...]
    k: int


def visible_region(
    layer: Any,
    world_point: Any,
    displayed: tuple[int, ...],
    center: Any,
    zoom: float,
    canvas_size: tuple[int, int],
) -> tuple[slice, ...]:
    """Level-0 region of ``layer`` on screen: the current index along hidden dimensions,
    and along the displayed ones the canvas (height, width in screen pixels) around the
    camera ``center`` at ``zoom`` screen pixels per world unit, clipped to the layer."""
    shape = layer_shape(layer)
    index = current_index(layer, world_point, displayed)
    world_center = [float(c) for c in list(center)[-len(displayed) :]]
    half = [float(n) / 2.0 / float(zoom) for n in canvas_size]  # world units
    region = []
    for d, n in enumerate(shape):
        if d not in displayed:
            region.append(slice(index[d], index[d] + 1))
            continue
        i = displayed.index(d)  # camera center and canvas size follow this order
        s, t = float(layer.scale[d]), float(layer.translate[d])
        a = (world_center[i] - half[i] - t) / s
        b = (world_center[i] + half[i] - t) / s
        lo, hi = min(a, b), max(a, b)  # data coordinates; pixel j spans [j - .5, j + .5]
        lo_i = int(np.clip(math.floor(lo + 0.5), 0, n - 1))
        hi_i = int(np.clip(math.ceil(hi + 0.5), lo_i + 1, n))
        region.append(slice(lo_i, hi_i))
    return tuple(region)


def viewport_request(
    layer: Any,
    world_point: Any,
    displayed: tuple[int, ...],
    *,
    center: Any,
    zoom: float,
    canvas_size: tuple[int, int],
    max_k: int = 8,
    max_points: int = 1 << 22,
) -> ViewRequest | None:
    """The region of a decoded layer on screen and the zoom past its stored pixels.

    Computed from the camera (``center`` in world coordinates, the last two for the
    displayed axes; ``zoom`` in screen pixels per world unit) and the canvas size
    (height, width in screen pixels): the visible box, clipped to the layer, sampled
    ``k`` times finer where ``k`` is the number of screen pixels per stored pixel (so
    the samples are about as many as the screen pixels it covers).  napari's
    ``corner_pixels`` is not used: in napari 0.9 it does not shrink when zooming in.
    ``None`` when the view is not zoomed in past the stored pixels, is 3D, or shows
    other axes than the field's Y and X.
    """
    plane = plane_dims(layer)
    if len(displayed) != 2 or not plane or set(plane) != set(displayed):
        return None
    zoom = float(zoom)
    if zoom <= 0:
        return None
    screen_px = min(abs(float(layer.scale[d])) for d in displayed) * zoom
    k = min(max_k, math.ceil(screen_px - 1e-6))
    if k <= 1:
        return None
    region = visible_region(layer, world_point, displayed, center, zoom, canvas_size)
    pixels = math.prod(s.stop - s.start for s in region)
    while k > 1 and pixels * k * k > max_points:
        k -= 1
    return ViewRequest(tuple(region), k) if k > 1 else None


def difference_levels(original: Any, decoded: Any) -> list[da.Array]:
    """Lazy multiscale ``original - decoded`` (float32, dask), exact pixels at every level."""
    import dask.array as da

    a = original.data[0] if original.multiscale else original.data
    base = field_of(decoded)
    b = base if base is not None else (decoded.data[0] if decoded.multiscale else decoded.data)
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    b = da.asarray(b)
    a = da.asarray(a, chunks=b.chunks)
    diff = a.astype(np.float32) - b.astype(np.float32)
    n_levels = len(decoded.data) if decoded.multiscale else 1
    plane = plane_dims(decoded) or tuple(range(max(0, diff.ndim - 2), diff.ndim))
    return [
        diff[
            tuple(
                slice(None, None, 2**level) if d in plane else slice(None) for d in range(diff.ndim)
            )
        ]
        for level in range(n_levels)
    ]


def compare(original: Any, decoded: Any, index: tuple[Any, ...] | None = None) -> Any:
    """``core.metrics.quality`` of a decoded layer against its original.

    ``index`` picks a slice (ints and ``slice(None)`` per dimension); ``None`` compares
    the whole stack (SSIM over volumes when the field has a Z axis).
    """
    from napari_inif.core.metrics import quality as metrics

    a = original.data[0] if original.multiscale else original.data
    b = field_of(decoded)
    if b is None:
        b = decoded.data[0] if decoded.multiscale else decoded.data
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"the layers differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    key = tuple(slice(None) for _ in a.shape) if index is None else index
    x = np.asarray(a[key])
    y = np.asarray(b[key])
    plane_axes = 2
    if index is None and "Z" in "".join(str(x_) for x_ in decoded.axis_labels) and x.ndim >= 3:
        plane_axes = 3
    return metrics.quality(x, y, plane_axes=plane_axes)


def plane_psnr(original: Any, decoded: Any) -> tuple[str, list[tuple[int, float]]]:
    """PSNR (dB, against the original's whole data range) of every plane along the first
    axis of a stack, e.g. each time point of a TYX time-lapse: ``(axis label, [(i, dB)])``.

    Decodes the whole stack plane by plane: call it in a worker thread.
    """
    from napari_inif.core.metrics import quality as metrics

    a = original.data[0] if original.multiscale else original.data
    b = field_of(decoded)
    if b is None:
        b = decoded.data[0] if decoded.multiscale else decoded.data
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"the layers differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if len(a.shape) < 3 or (getattr(decoded, "rgb", False) and len(a.shape) < 4):
        raise ValueError("a per-plane PSNR needs a stack (T or Z and Y, X)")
    whole = np.asarray(a)
    data_range = float(whole.max() - whole.min()) or 1.0
    out = [
        (i, metrics.psnr(whole[i], np.asarray(b[i]), data_range=data_range))
        for i in range(a.shape[0])
    ]
    return str(decoded.axis_labels[0]), out
