"""Array sources read region by region: numpy, Zarr / OME-Zarr and TIFF (as a Zarr store).

A :class:`ArraySource` describes where an N-D image lives and reads any box of it as a
numpy array, so a volume larger than memory is never loaded whole.  It pickles small:
a store-backed source sends only its path and reopens the store where it is unpickled
(a Dask worker), an in-memory one sends its array.

OME-Zarr (NGFF 0.4 ``.zattrs`` or 0.5 ``zarr.json`` ``"ome"`` attributes) is a Zarr group
with ``multiscales`` metadata: level 0 (the first dataset) is read, with the axis names,
the scale of its ``coordinateTransformations`` and the unit of its space axes.  A plain
Zarr array takes its axes from xarray's ``_ARRAY_DIMENSIONS`` attribute if present.
TIFF / OME-TIFF files are opened through ``tifffile.imread(path, aszarr=True)``, which
reads only the strips or tiles a box touches.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_inif.core.layout import Layout, guess_axes

__all__ = ["ArraySource", "is_zarr", "open_source"]


@dataclass
class ArraySource:
    """An N-D image read box by box.

    Attributes
    ----------
    kind
        ``"numpy"`` (in memory), ``"npy"`` (memory-mapped file), ``"zarr"`` or ``"tiff"``.
    path
        File or directory of a store-backed source (``None`` in memory).
    component
        Path of the array inside a Zarr group (``""`` for a root array) or of the level
        inside a TIFF's Zarr store.
    axes
        Axis letters, e.g. ``"TCZYX"``.
    scale, unit
        Physical pixel size per axis (``None`` if unknown) and its unit.
    name
        Short name recorded in the file header.
    """

    kind: str
    path: str | None
    component: str
    axes: str
    scale: tuple[float, ...] | None = None
    unit: str | None = None
    name: str = "array"
    _array: Any = field(default=None, repr=False, compare=False)
    _store: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_array(
        cls,
        data: Any,
        axes: str | None = None,
        *,
        scale: Sequence[float] | None = None,
        unit: str | None = None,
        name: str = "array",
    ) -> ArraySource:
        """An in-memory source (a numpy array, or anything with ``shape``, ``dtype`` and
        numpy-style box indexing such as a ``zarr.Array``)."""
        kind = "numpy" if isinstance(data, np.ndarray) else "array"
        axes = (axes or guess_axes(len(data.shape))).upper()
        return cls(kind, None, "", axes, None if scale is None else tuple(scale), unit, name, data)

    # the array, opened lazily (after unpickling on a worker) ---------------------------
    @property
    def array(self) -> Any:
        """The opened array (numpy, ``np.memmap`` or ``zarr.Array``)."""
        if self._array is None:
            self._array = self._open()
        return self._array

    def _open(self) -> Any:
        if self.kind == "npy":
            return np.load(self.path, mmap_mode="r", allow_pickle=False)
        import zarr

        if self.kind == "zarr":
            node = zarr.open(self.path, mode="r")
        elif self.kind == "tiff":
            import tifffile

            self._store = tifffile.imread(self.path, aszarr=True)
            node = zarr.open(self._store, mode="r")
        else:
            raise ValueError(f"source of kind {self.kind!r} cannot be reopened")
        return node[self.component] if self.component else node

    def close(self) -> None:
        """Close the underlying store (a TIFF file handle); it reopens on the next read."""
        if self.kind in ("npy", "zarr", "tiff"):
            self._array = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> ArraySource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.kind in ("npy", "zarr", "tiff"):
            state["_array"] = None  # reopened by path where it is unpickled
        state["_store"] = None
        return state

    # numpy-like surface -------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the image."""
        return tuple(int(n) for n in self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        """Element type."""
        return np.dtype(self.array.dtype)

    @property
    def layout(self) -> Layout:
        """Shape, axes and dtype as the codec sees them."""
        return Layout(self.shape, self.axes, self.dtype.name)

    def read(self, box: Sequence[slice]) -> np.ndarray:
        """The pixels of ``box`` (one slice per axis) as a numpy array."""
        return np.asarray(self.array[tuple(box)])


def is_zarr(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a Zarr store directory (v2 or v3, array or group)."""
    p = Path(path)
    if not p.is_dir():
        return False
    markers = ("zarr.json", ".zarray", ".zgroup", ".zattrs")
    return p.suffix.lower() == ".zarr" or any((p / m).exists() for m in markers)


def open_source(
    path: str | os.PathLike[str], *, axes: str | None = None, component: str | None = None
) -> ArraySource:
    """Open a Zarr / OME-Zarr directory, a TIFF or a ``.npy`` file as an :class:`ArraySource`.

    Parameters
    ----------
    path
        ``.zarr`` directory, ``.tif``/``.tiff`` file or ``.npy`` file.
    axes
        Axis letters overriding what the file says.
    component
        Array inside a Zarr group (default: OME-Zarr level 0, or the group's only array).

    Raises
    ------
    FileNotFoundError, ValueError
        For a missing path or one that holds no readable image.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file or directory: {p}")
    if is_zarr(p):
        source = _open_zarr(p, component)
    elif p.suffix.lower() == ".npy":
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
        source = ArraySource("npy", str(p), "", guess_axes(arr.ndim), name=p.name, _array=arr)
    elif p.suffix.lower() in (".tif", ".tiff", ".btf", ".tf8", ".tf2"):
        source = _open_tiff(p)
    else:
        raise ValueError(f"cannot read {p}: expected a .zarr directory, a TIFF or a .npy file")
    if axes:
        source.axes = axes.upper()
    source.layout  # noqa: B018  (validates shape, axes and dtype now, not in a worker)
    return source


def _open_zarr(path: Path, component: str | None) -> ArraySource:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a broken store
        raise ValueError(f"cannot open {path} as Zarr: {exc}") from None
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    scale: tuple[float, ...] | None = None
    unit: str | None = None
    axes: str | None = None
    if isinstance(node, zarr.Array):
        if component:
            raise ValueError(f"{path} is a Zarr array; it has no component {component!r}")
        component = ""
        arr = node
        dims = attrs.get("_ARRAY_DIMENSIONS")
        if isinstance(dims, list) and all(isinstance(d, str) and d for d in dims):
            axes = "".join(d[0] for d in dims).upper()
    elif multiscales and component is None:
        ms = multiscales[0]
        datasets = ms.get("datasets") or []
        if not datasets:
            raise ValueError(f"{path}: OME-Zarr multiscales lists no datasets")
        component = str(datasets[0]["path"])
        arr = node[component]
        axes, unit = _ome_axes(ms.get("axes"), arr.ndim)
        scale = _ome_scale(ms, datasets[0], arr.ndim)
    else:
        if component is None:
            arrays = sorted(name for name, _ in node.arrays())
            if len(arrays) != 1:
                raise ValueError(
                    f"{path} is a Zarr group with arrays {arrays}; name one (component)"
                )
            component = arrays[0]
        arr = node[component]
        if not isinstance(arr, zarr.Array):
            raise ValueError(f"{path}/{component} is not a Zarr array")
    if axes is None or len(axes) != arr.ndim:
        axes = guess_axes(arr.ndim)
    return ArraySource("zarr", str(path), component, axes, scale, unit, path.name, arr)


def _ome_axes(spec: Any, ndim: int) -> tuple[str | None, str | None]:
    """Axis letters and the unit of the space axes from an OME-Zarr ``axes`` list."""
    if not isinstance(spec, list) or len(spec) != ndim:
        return None, None
    names, units = [], []
    for a in spec:
        name = a.get("name") if isinstance(a, dict) else a  # NGFF 0.3 lists plain names
        if not isinstance(name, str) or not name:
            return None, None
        names.append(name[0].upper())
        if isinstance(a, dict) and a.get("type") == "space" and isinstance(a.get("unit"), str):
            units.append(a["unit"])
    return "".join(names), units[0] if units and len(set(units)) == 1 else None


def _ome_scale(ms: dict[str, Any], dataset: dict[str, Any], ndim: int) -> tuple[float, ...] | None:
    """Level-0 pixel size: the dataset's scale times the multiscale's global scale."""
    scale = np.ones(ndim)
    found = False
    for transforms in (
        dataset.get("coordinateTransformations"),
        ms.get("coordinateTransformations"),
    ):
        for t in transforms or []:
            if isinstance(t, dict) and t.get("type") == "scale":
                values = t.get("scale")
                if isinstance(values, list) and len(values) == ndim:
                    scale = scale * np.asarray(values, np.float64)
                    found = True
    if not found or not np.all(np.isfinite(scale)) or np.all(scale == 1.0):
        return None
    return tuple(float(s) for s in scale)


def _open_tiff(path: Path) -> ArraySource:
    import tifffile
    import zarr

    from napari_inif.core.io.image import _scale

    try:
        with tifffile.TiffFile(path) as tif:
            axes = tif.series[0].axes
            scale, unit = _scale(tif, axes)
        store = tifffile.imread(path, aszarr=True)
    except (tifffile.TiffFileError, ValueError, IndexError) as exc:
        raise ValueError(f"cannot read {path} as TIFF: {exc}") from None
    node = zarr.open(store, mode="r")
    component = "" if isinstance(node, zarr.Array) else "0"  # pyramid: level 0
    arr = node[component] if component else node
    return ArraySource("tiff", str(path), component, axes, scale, unit, path.name, arr, store)
