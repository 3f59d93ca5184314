"""A frozen Cellpose network for guidance and for segmentation agreement.

Cellpose (Stringer et al. 2021, Nature Methods 18:100; Cellpose 3: Stringer & Pachitariu
2025, Nature Methods 22:592) predicts, per pixel, a flow towards the cell centre (Y, X)
and a cell-probability logit; masks follow from the flows.  napari-inif uses the network
in two ways: as a differentiable loss while fitting (:mod:`napari_inif.core.guidance.losses`)
and to segment the original and the decoded image for
:mod:`napari_inif.core.guidance.segmentation`.

Cellpose is an optional extra (``pip install 'napari-inif[cellpose]'``) and is imported
only when a model is loaded.  A model is given as

- the name of a Cellpose built-in model (``cyto3``, ``nuclei``, ``cyto2``, ... or
  ``cpsam`` with Cellpose 4): used from ``CELLPOSE_LOCAL_MODELS_PATH`` (or
  ``~/.cellpose/models``) when its weights are there, otherwise downloaded by Cellpose
  itself when ``allow_download`` is true;
- a path to a weights file saved by Cellpose (``CPnet.save_model``; any ``nbase``, the
  architecture is read from the tensor shapes; Cellpose-SAM files need Cellpose 4);
- :data:`BUNDLED_MODEL`, a small network shipped with napari-inif (trained here on
  nuclei with classical-segmentation labels; see ``benchmarks/guidance/``).  It is a
  stand-in for tests and CPU demos, not a replacement for Cellpose's own models.

Files are read with ``torch.load(weights_only=True)``: no pickled code is executed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BUNDLED_MODEL",
    "CellposeNet",
    "cellpose_version",
    "load_cellpose",
    "require_cellpose",
]

#: Name of the small nuclei network shipped in ``napari_inif/_data``.
BUNDLED_MODEL = "inif_nuclei_small"
_BUNDLED_FILES = {BUNDLED_MODEL: "cpnet_nuclei_small.pt"}
_CP3_NAMES = (
    "cyto3",
    "nuclei",
    "cyto2_cp3",
    "tissuenet_cp3",
    "livecell_cp3",
    "yeast_PhC_cp3",
    "yeast_BF_cp3",
    "bact_phase_cp3",
    "bact_fluor_cp3",
    "deepbacs_cp3",
    "cyto2",
    "cyto",
)
_CP4_NAMES = ("cpsam",)
INSTALL_HINT = "install the optional extra: pip install 'napari-inif[cellpose]'"


def cellpose_version() -> str | None:
    """Installed Cellpose version, or ``None`` when it is not installed (no import)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cellpose")
    except PackageNotFoundError:
        return None


def require_cellpose() -> int:
    """Major version of the installed Cellpose; ``ImportError`` with a hint if missing."""
    found = cellpose_version()
    if found is None:
        raise ImportError(f"Cellpose is not installed; {INSTALL_HINT}")
    try:
        import cellpose  # noqa: F401
    except ImportError as exc:  # broken install
        raise ImportError(f"Cellpose {found} is installed but cannot be imported: {exc}") from exc
    return int(found.split(".")[0])


def models_dir() -> Path:
    """Where Cellpose keeps its model weights (``CELLPOSE_LOCAL_MODELS_PATH`` first)."""
    env = os.environ.get("CELLPOSE_LOCAL_MODELS_PATH")
    return Path(env) if env else Path.home() / ".cellpose" / "models"


def _builtin_file(name: str) -> str:
    """Cellpose's file name of a built-in model (``models.model_path``'s rule)."""
    return f"{name}torch_0" if name in ("cyto", "cyto2", "nuclei") else name


@dataclass(eq=False)
class CellposeNet:
    """A frozen Cellpose network with what is needed to feed it.

    Attributes
    ----------
    module
        The torch network (``CPnet`` of Cellpose 3 or the Cellpose-SAM transformer),
        in eval mode, parameters frozen.
    nchan
        Input channels the network takes (2 for Cellpose 3, 3 for Cellpose-SAM); unused
        ones are zero, as Cellpose does for a grayscale image.
    diam_mean
        Object diameter (pixels) the network was trained at; images are rescaled by
        ``diam_mean / diameter`` when a diameter is given.
    name
        Short name for headers and tables (built-in name or file name).
    fixed_size
        Input edge the network requires (Cellpose-SAM: 256), or ``None`` for any
        multiple of :attr:`divisor`.
    """

    module: Any
    nchan: int
    diam_mean: float
    name: str
    fixed_size: int | None = None
    divisor: int = 16
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_module(cls, module: Any, name: str = "custom") -> CellposeNet:
        """Wrap (and freeze) an in-memory Cellpose 3 ``CPnet``."""
        return _freeze(
            cls(
                module,
                nchan=int(module.nbase[0]),
                diam_mean=float(module.diam_mean.item()),
                name=name,
                info={"nbase": list(module.nbase), "kind": "cellpose3"},
            ),
            next(module.parameters()).device,
        )

    @property
    def device(self) -> Any:
        """Device of the network's parameters."""
        return next(self.module.parameters()).device

    def to(self, device: Any) -> CellposeNet:
        """Move the network to ``device`` (in place) and return it."""
        self.module.to(device)
        return self

    def __call__(self, x: Any) -> Any:
        """``(B, nchan, H, W)`` normalised input -> ``(B, 3, H, W)``: flow Y, flow X, logit."""
        return self.module(x)[0]

    def features(self, x: Any) -> list[Any]:
        """Encoder feature maps of ``x`` (perceptual loss): one per resolution level."""
        net = self.module
        if hasattr(net, "downsample"):  # Cellpose 3 CPnet
            return list(net.downsample(x))
        enc = net.encoder  # Cellpose-SAM: the ViT encoder up to its neck
        h = enc.patch_embed(x)
        if enc.pos_embed is not None:
            h = h + enc.pos_embed
        for blk in enc.blocks:
            h = blk(h)
        return [enc.neck(h.permute(0, 3, 1, 2))]

    def pad_input(self, x: Any) -> Any:
        """Zero channels up to :attr:`nchan` for ``(B, c, H, W)`` with ``c <= nchan``."""
        import torch

        c = x.shape[1]
        if c > self.nchan:
            raise ValueError(f"the network takes {self.nchan} channels, got {c}")
        if c == self.nchan:
            return x
        zeros = torch.zeros(
            (x.shape[0], self.nchan - c, *x.shape[2:]), dtype=x.dtype, device=x.device
        )
        return torch.cat([x, zeros], dim=1)

    def rescale(self, diameter: float | None) -> float:
        """Resize factor for objects of ``diameter`` pixels (1 when ``None``)."""
        return 1.0 if not diameter else float(self.diam_mean) / float(diameter)

    # -- whole-image prediction and segmentation (no gradient) ----------------------------

    def predict(
        self,
        image: np.ndarray,
        diameter: float | None = None,
        bsize: int = 224,
        batch_size: int = 8,
    ) -> np.ndarray:
        """Network output ``(3, h, w)`` for a ``(c, H, W)`` image, at the network's scale.

        The image is normalised per channel to its 1st-99th percentiles
        (:func:`normalise99`), resized by :meth:`rescale`, padded to a multiple of
        :attr:`divisor`, and run in overlapping tiles averaged with Cellpose's own
        ``make_tiles`` / ``average_tiles``.  ``h, w`` is the resized size.
        """
        import torch
        from cellpose import transforms

        image = np.asarray(image, np.float32)
        if image.ndim == 2:
            image = image[None]
        x = torch.from_numpy(normalise99(image))[None]
        r = self.rescale(diameter)
        h, w = max(8, round(image.shape[1] * r)), max(8, round(image.shape[2] * r))
        if (h, w) != image.shape[1:]:
            x = resize(x, (h, w))
        bsize = self.fixed_size or bsize
        d = self.divisor
        ph, pw = (
            max(bsize if self.fixed_size else d, -(-h // d) * d),
            max(bsize if self.fixed_size else d, -(-w // d) * d),
        )
        x = torch.nn.functional.pad(x, (0, pw - w, 0, ph - h))
        x = self.pad_input(x)[0].numpy()
        tiles, ysub, xsub, ly, lx = transforms.make_tiles(x, bsize=bsize, tile_overlap=0.1)
        tiles = tiles.reshape(-1, *tiles.shape[-3:])
        out = np.empty((len(tiles), 3, *tiles.shape[-2:]), np.float32)
        device = self.device
        with torch.no_grad():
            for at in range(0, len(tiles), batch_size):
                batch = torch.from_numpy(tiles[at : at + batch_size]).to(device)
                out[at : at + batch_size] = self(batch).float().cpu().numpy()
        y = transforms.average_tiles(out, ysub, xsub, ly, lx)
        return y[:, :h, :w]

    def segment(
        self,
        image: np.ndarray,
        diameter: float | None = None,
        *,
        flow_threshold: float = 0.4,
        cellprob_threshold: float = 0.0,
        min_size: int = 15,
    ) -> np.ndarray:
        """Cellpose masks (``uint16``/``uint32`` labels) of one ``(H, W)`` or ``(c, H, W)`` plane.

        Masks are computed at the network's scale and resized back (Cellpose's
        ``resample=False`` path), with Cellpose's own dynamics.
        """
        import torch
        from cellpose import dynamics

        image = np.asarray(image, np.float32)
        shape = image.shape[-2:]
        y = self.predict(image, diameter)
        return dynamics.resize_and_compute_masks(
            y[:2],
            y[2],
            niter=200,
            cellprob_threshold=cellprob_threshold,
            flow_threshold=flow_threshold,
            min_size=min_size,
            resize=None if tuple(y.shape[1:]) == tuple(shape) else list(shape),
            device=torch.device("cpu"),
        )


def normalise99(image: np.ndarray, lower: float = 1.0, upper: float = 99.0) -> np.ndarray:
    """Cellpose's ``normalize99`` per channel of ``(c, H, W)``: 0 at the 1st, 1 at the 99th
    percentile; a flat channel becomes zeros."""
    out = np.empty(image.shape, np.float32)
    for c, plane in enumerate(image):
        lo, hi = np.percentile(plane, (lower, upper))
        out[c] = (plane - lo) / (hi - lo) if hi - lo > 1e-3 else 0.0
    return out


def resize(x: Any, size: tuple[int, int]) -> Any:
    """Bilinear resize of ``(B, C, H, W)`` to ``size`` (antialiased when shrinking);
    differentiable, used identically for originals and decoded patches."""
    import torch

    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return torch.nn.functional.interpolate(
        x, size=size, mode="bilinear", align_corners=False, antialias=shrink
    )


def _cp3_from_state(state: dict[str, Any], name: str) -> CellposeNet:
    from cellpose.resnet_torch import CPnet

    try:
        nbase = [int(state["downsample.down.res_down_0.conv.conv_0.2.weight"].shape[1])]
        level = 0
        while f"downsample.down.res_down_{level}.conv.conv_0.2.weight" in state:
            nbase.append(
                int(state[f"downsample.down.res_down_{level}.conv.conv_0.2.weight"].shape[0])
            )
            level += 1
        nout = int(state["output.2.weight"].shape[0])
        diam_mean = float(state["diam_mean"].reshape(-1)[0])
    except (KeyError, AttributeError, IndexError) as exc:
        raise ValueError(f"{name}: not a Cellpose 3 network state (missing {exc})") from None
    if nout < 3:
        raise ValueError(f"{name}: the network has {nout} outputs; a segmentation model has 3")
    net = CPnet(nbase, nout, sz=3, mkldnn=False, max_pool=True, diam_mean=diam_mean)
    try:
        net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{name}: weights do not fit a Cellpose network: {exc}") from None
    return CellposeNet(
        net,
        nchan=nbase[0],
        diam_mean=diam_mean,
        name=name,
        divisor=16,
        info={"nbase": nbase, "kind": "cellpose3"},
    )


def _load_file(path: Path, name: str, device: Any, builtin_diam: float | None) -> CellposeNet:
    import torch

    major = require_cellpose()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is the user's input error
        raise ValueError(f"cannot read Cellpose weights {path}: {exc}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a network state (tensors by name)")
    if any(k.startswith(("W2", "module.")) or "encoder." in k for k in state):
        if major < 4:
            raise ValueError(f"{path} is a Cellpose-SAM (Cellpose 4) model; installed: {major}.x")
        return _load_cp4(str(path), name, device)
    net = _cp3_from_state(state, name)
    if builtin_diam is not None:  # Cellpose uses fixed diameters for its built-in models
        net.diam_mean = builtin_diam
    return _freeze(net, device)


def _load_cp4(spec: str, name: str, device: Any) -> CellposeNet:
    import torch
    from cellpose import models

    model = models.CellposeModel(gpu=False, pretrained_model=spec, device=torch.device(device))
    net = model.net.float()
    return _freeze(
        CellposeNet(
            net,
            nchan=3,
            diam_mean=30.0,
            name=name,
            fixed_size=256,
            divisor=8,
            info={"kind": "cellpose4"},
        ),
        device,
    )


def _freeze(net: CellposeNet, device: Any) -> CellposeNet:
    if getattr(net.module, "mkldnn", False):  # MKL-DNN tensors have no autograd
        net.module.mkldnn = False
    net.module.eval()
    for p in net.module.parameters():
        p.requires_grad_(False)
    return net.to(device)


def load_cellpose(
    model: str | os.PathLike[str], *, device: Any = "cpu", allow_download: bool = True
) -> CellposeNet:
    """Load a frozen Cellpose network by built-in name, file path or bundled name.

    Parameters
    ----------
    model
        A Cellpose built-in name (``cyto3``, ``nuclei``, ``cpsam``, ...), a weights file, a
        file name inside ``CELLPOSE_LOCAL_MODELS_PATH``, or :data:`BUNDLED_MODEL`.
    device
        Torch device for the network.
    allow_download
        Let Cellpose download a built-in model whose weights are not on disk.

    Raises
    ------
    ImportError
        Cellpose is not installed (with the ``pip install`` hint).
    ValueError
        Unknown name, unreadable file, or weights that cannot be obtained.
    """
    spec = os.fspath(model).strip() if model is not None else ""
    if not spec:
        raise ValueError(
            "no Cellpose model given: pass a built-in name (cyto3, nuclei, ...), a weights "
            f"file, or {BUNDLED_MODEL!r} (the small network shipped with napari-inif)"
        )
    if spec in _BUNDLED_FILES:
        from importlib.resources import files

        path = Path(str(files("napari_inif") / "_data" / _BUNDLED_FILES[spec]))
        return _load_file(path, spec, device, None)
    path = Path(spec).expanduser()
    if path.is_file():
        return _load_file(path, path.name, device, None)
    local = models_dir() / spec
    if local.is_file():
        return _load_file(local, spec, device, None)
    builtin_diam = 17.0 if spec == "nuclei" else 30.0
    if spec in _CP3_NAMES:
        cached = models_dir() / _builtin_file(spec)
        if cached.is_file():
            return _load_file(cached, spec, device, builtin_diam)
    if spec in _CP3_NAMES or spec in _CP4_NAMES:
        major = require_cellpose()
        if (spec in _CP4_NAMES) != (major >= 4):
            raise ValueError(f"model {spec!r} does not exist in the installed Cellpose {major}.x")
        if not allow_download:
            raise ValueError(
                f"the weights of Cellpose model {spec!r} are not in {models_dir()} and "
                "downloading is off"
            )
        try:
            if spec in _CP4_NAMES:
                return _load_cp4(spec, spec, device)
            from cellpose import models

            downloaded = Path(models.model_path(spec))
        except Exception as exc:  # network errors of any kind
            raise ValueError(
                f"could not obtain the weights of Cellpose model {spec!r} ({exc}); put the "
                f"file in {models_dir()} (or set CELLPOSE_LOCAL_MODELS_PATH) or pass a path"
            ) from None
        return _load_file(downloaded, spec, device, builtin_diam)
    raise ValueError(
        f"unknown Cellpose model {spec!r}: not a file, not in {models_dir()}, not a built-in "
        f"name ({', '.join(_CP3_NAMES + _CP4_NAMES)}) and not {BUNDLED_MODEL!r}"
    )
