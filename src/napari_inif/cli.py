"""``inif``: compress, decompress and inspect ``.inif`` files from the command line.

Every sub-command calls :mod:`napari_inif.core` only.  Errors print one line and exit
non-zero; no output file is left behind by a failed or interrupted run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

EXIT_ERROR = 2
EXIT_CANCELLED = 130


def _parser(config_cls: type | None = None) -> argparse.ArgumentParser:
    """The ``inif`` parser; ``compress`` has one flag per field of ``config_cls``
    (default :class:`~napari_inif.core.CompressionConfig`)."""
    p = argparse.ArgumentParser(
        prog="inif", description="Implicit neural image field compression for microscopy."
    )
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compress", help="fit an image into a field and save it as .inif")
    c.add_argument("input", help="TIFF / OME-TIFF, Zarr / OME-Zarr directory (or .npy) image")
    c.add_argument("-o", "--output", help="output .inif (default: INPUT with .inif)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    c.add_argument("--axes", default=None, help="axes of the input, e.g. TZYX (default: file)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="fit blocks as tasks on this Dask scheduler, e.g. tcp://host:8786",
    )
    c.add_argument(
        "--workers",
        type=int,
        default=None,
        help="fit blocks on a local Dask cluster of N processes",
    )
    c.add_argument(
        "--no-quality",
        action="store_true",
        help="block-streamed runs (Zarr input, --scheduler, --workers): skip the quality pass",
    )
    _config_arguments(c, config_cls)

    d = sub.add_parser("decompress", help="decode an .inif file (or a region of it) to TIFF")
    d.add_argument("input", help=".inif file")
    d.add_argument(
        "-o", "--output", help="output TIFF (default: INPUT.decoded.tif, never the original)"
    )
    d.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    d.add_argument(
        "--roi",
        default=None,
        help="ranges on the last non-channel axes, e.g. 0:64,100:164,100:164",
    )
    d.add_argument("--zoom", type=float, default=1.0, help="sample K times finer in Y and X")

    i = sub.add_parser("info", help="print the header of an .inif file")
    i.add_argument("input", help=".inif file")
    i.add_argument("--json", action="store_true", help="print the raw JSON header")

    m = sub.add_parser("demo", help="the quick-start job: napari with the sample, or the CLI")
    m.add_argument("--no-viewer", action="store_true", help="compress in the terminal only")
    m.add_argument("--ratio", type=float, default=64.0)
    m.add_argument("--steps", type=int, default=2400, help="optimisation steps (default 2400)")

    b = sub.add_parser(
        "bench",
        help="benchmark against plain SIREN and classic codecs (tables, CSV, plots)",
        description="Rate-distortion against JPEG XL, JPEG 2000, HTJ2K, AVIF and HEVC at "
        "equal file size, plain SIREN at equal parameter count; speed and memory.  Writes "
        "rd.csv, speed.csv, machine.json, results.md and PNG plots into --out.  Exits "
        "non-zero if any number is not finite or a codec overran its byte budget.",
    )
    b.add_argument(
        "--quick",
        action="store_true",
        help="one tiny crop, 2 ratios, 200 steps (CI, under a minute)",
    )
    b.add_argument("--out", default="docs/benchmarks", help="output folder")
    b.add_argument("--data", default=None, help="folder of the images (default ../shared/data)")
    b.add_argument(
        "--files", nargs="+", default=None, help="file or case names (default: the built-in crops)"
    )
    b.add_argument("--ratios", nargs="+", type=float, default=None)
    b.add_argument("--steps", type=int, default=None, help="steps of every fitted row")
    b.add_argument("--methods", nargs="+", default=None, help="napari-inif rows to run")
    b.add_argument("--codecs", nargs="+", default=None, help="classic codecs to run")
    b.add_argument("--device", default="auto", help="device of the fits (auto, cpu, cuda)")
    b.add_argument("--threads", type=int, default=None, help="torch threads")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra CompressionConfig field for every napari-inif row, e.g. "
        "--set lr=5e-4 (repeatable)",
    )
    b.add_argument("--no-speed", action="store_true", help="skip the speed/memory section")
    b.add_argument(
        "--speed-steps",
        type=int,
        default=None,
        help="steps of the default-config compression timing (default: --steps; "
        "0: the config's own default)",
    )
    b.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p


#: Flags of config fields besides ``--field-name``, as README.md and docs/ name them.
FLAG_ALIASES: dict[str, tuple[str, ...]] = {
    "time_limit": ("--time",),
    "guidance_model": ("--cellpose-model",),
}


def _flags(name: str) -> list[str]:
    return [*FLAG_ALIASES.get(name, ()), "--" + name.replace("_", "-")]


def _config_arguments(c: argparse.ArgumentParser, config_cls: type | None) -> None:
    """One flag per field of ``config_cls``, in argument groups, from the fields' metadata.

    Every flag defaults to "not given" (``argparse.SUPPRESS``) so the config's own default
    applies; the help says what that default is and lists a registry's names.
    """
    from napari_inif.core.config import GROUPS, settings

    found = settings(config_cls)
    order = [*GROUPS, *sorted({s.group for s in found} - set(GROUPS))]
    for group in order:
        members = [s for s in found if s.group == group]
        if not members:
            continue
        g = c.add_argument_group(GROUPS.get(group, group))
        for s in members:
            kwargs: dict = {"dest": s.name, "default": argparse.SUPPRESS, "help": _flag_help(s)}
            if s.type is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["type"] = s.type if s.type in (int, float, str) else str
                kwargs["choices"] = s.choices() or None
                if not kwargs["choices"]:
                    kwargs["metavar"] = {int: "N", float: "X"}.get(s.type, "NAME")
            g.add_argument(*_flags(s.name), **kwargs)


def _flag_help(s) -> str:  # s: Setting
    text = s.help
    if s.registry is not None:
        names = [f"{n}: {s.describe(n)}" if s.describe(n) else n for n in s.choices()]
        text += ". " + "; ".join(names)
    if s.default is None:
        text += f" (default: {s.none or 'none'})"
    else:
        text += f" (default: {s.default:g})" if s.type is float else f" (default: {s.default})"
    if s.range is not None:
        text += f"; {s.range}"
    return text.replace("%", "%%")  # argparse formats help with %


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status.

    Every error prints one line and exits 2: a bad file (``InifFormatError``, which also
    covers decodes beyond the memory budget), a bad argument, an unwritable output.
    Ctrl-C (or SIGTERM) at any moment prints one line, leaves no output file and exits
    130.
    """
    previous = _sigterm_as_interrupt()
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        try:
            args = _parser().parse_args(argv)
        except SystemExit as exc:  # --help, or a usage error argparse has already printed
            return exc.code if isinstance(exc.code, int) else EXIT_ERROR
        args.argv = argv
        handlers = {
            "compress": _compress,
            "decompress": _decompress,
            "info": _info,
            "demo": _demo,
            "bench": _bench,
        }
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("inif: cancelled; no output written", file=sys.stderr)
        return EXIT_CANCELLED
    except MemoryError:
        print("inif: error: out of memory", file=sys.stderr)
        return EXIT_ERROR
    except (ValueError, OSError, ImportError) as exc:  # InifFormatError is a ValueError
        print(f"inif: error: {_printable(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _sigterm_as_interrupt():  # -> previous handler or None
    """Let ``kill`` (SIGTERM) clean up like Ctrl-C: temporary files are removed."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _printable(text: str) -> str:
    """``text`` with control characters, lone surrogates and other unprintable
    characters escaped (``\\x1b``, ``\\ud800``): what a file says cannot drive the
    terminal."""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _config(args: argparse.Namespace, config_cls: type | None = None):  # -> CompressionConfig
    """The config of the flags given (the others keep the config's defaults)."""
    from napari_inif.core.config import CompressionConfig, settings

    config_cls = CompressionConfig if config_cls is None else config_cls
    given = vars(args)
    return config_cls(**{s.name: given[s.name] for s in settings(config_cls) if s.name in given})


def _compress(args: argparse.Namespace) -> int:
    from napari_inif.core.codec.container import check_writable

    from .core import read_image

    src = Path(args.input)
    out = Path(args.output) if args.output else src.with_suffix(".inif")
    if _same_file(src, out):
        raise ValueError(f"the output {out} would overwrite the input")
    if not src.exists():
        raise FileNotFoundError(f"no such file: {src}")
    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers must be at least 1")
    check_writable(out, overwrite=args.overwrite)  # before the fit, not after it
    if args.scheduler or args.workers or _is_zarr(src):
        return _compress_source(args, src, out)
    image = read_image(src)
    if args.axes:
        image = image._replace(axes=args.axes.upper())
    encoded = _run_fit(image, _config(args), quiet=args.quiet, name=src.name)
    encoded.save(out, overwrite=args.overwrite)
    print(_summary(encoded, out))
    return 0


def _is_zarr(path: Path) -> bool:
    from napari_inif.core.io.source import is_zarr

    return is_zarr(path)


def _compress_source(args: argparse.Namespace, src: Path, out: Path) -> int:
    """Block-streamed compression: Zarr / TIFF read block by block, optionally on Dask."""
    from napari_inif.core.engine import fit
    from napari_inif.core.engine.distributed import cluster
    from napari_inif.core.io.source import open_source

    from .core import drive

    config = _config(args)
    with (
        open_source(src, axes=args.axes) as source,
        cluster(args.scheduler, args.workers) as client,
    ):
        threads = max(1, (os.cpu_count() or 1) // args.workers) if args.workers else None
        gen = fit(
            source,
            config,
            client=client,
            streamed=True,
            quality=not args.no_quality,
            torch_threads=threads,
        )
        encoded = drive(gen, None if args.quiet else _Progress())  # drive closes gen
    encoded.save(out, overwrite=args.overwrite)
    record = encoded.header.fit
    if "psnr" in record:
        print(_summary(encoded, out))
    else:
        print(
            f"ratio {encoded.ratio:.1f}x  (quality pass skipped)  {record['seconds']:.1f} s on "
            f"{record['device']} -> {out} ({encoded.nbytes / 1024:.1f} KiB)"
        )
    return 0


PLAIN_EVERY = 5.0  # seconds between progress lines when stderr is not a terminal


class _Progress:
    """Fit progress on stderr, called with each :class:`~napari_inif.core.engine.progress.Progress`.

    On a terminal: a tqdm bar. Elsewhere (CI logs, pipes, files) a bar's carriage returns
    pile up into one huge line, so a plain line is printed on the first step, every
    :data:`PLAIN_EVERY` seconds, at each phase change, and at the end.
    """

    def __init__(self, stream=None, every: float = PLAIN_EVERY) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every
        self.bar: Any = None  # a tqdm bar, made on the first step
        self.last: float | None = None
        self.phase: str | None = None

    def __call__(self, p) -> None:
        if self.tty:
            from tqdm import tqdm

            if self.bar is None:  # made on the first step, after the input was accepted
                self.bar = tqdm(total=p.steps, unit="step", file=self.stream, dynamic_ncols=True)
            self.bar.total = p.steps
            self.bar.set_postfix_str(f"{p.phase} PSNR {p.psnr:.2f} dB", refresh=False)
            self.bar.update(p.step - self.bar.n)
            if p.phase == "done":
                self.close()
            return
        import time

        now = time.monotonic()
        due = self.last is None or now - self.last >= self.every
        if due or p.phase != self.phase:
            self.last, self.phase = now, p.phase
            print(
                f"{p.phase}: step {p.step}/{p.steps}  PSNR {p.psnr:.2f} dB  "
                f"{p.elapsed:.0f} s elapsed, ~{p.eta:.0f} s left",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        """Close the bar (terminal only)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _run_fit(image, config, *, quiet: bool, name: str):  # -> Encoded
    from .core import drive

    gen = image.fit(config, name)
    if quiet:
        return drive(gen)
    progress = _Progress()
    try:
        return drive(gen, progress)  # drive closes the generator, also on Ctrl-C
    finally:
        progress.close()


def _summary(encoded, path: Path | None) -> str:
    fit = encoded.header.fit
    where = f" -> {path} ({encoded.nbytes / 1024:.1f} KiB)" if path else ""
    line = (
        f"ratio {encoded.ratio:.1f}x  PSNR {fit['psnr']:.2f} dB  "
        f"(dtype range {fit['psnr_dtype']:.2f} dB)  SSIM {fit['ssim']:.4f}  "
        f"max error {fit['max_error']:g}  {fit['seconds']:.1f} s on {fit['device']}{where}"
    )
    agreement = (fit.get("guidance") or {}).get("agreement")
    if agreement:
        line += f"\nsegmentation agreement F1 {agreement['f1']:.3f} ({agreement['method']})"
    return line


def _parse_roi(text: str, shape: tuple[int, ...], axes: list[int]) -> list[slice]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > len(axes):
        raise ValueError(f"--roi has {len(parts)} ranges but the image has {len(axes)} axes")
    out = [slice(None)] * len(shape)
    for part, axis in zip(parts, axes[len(axes) - len(parts) :], strict=True):
        lo, sep, hi = part.partition(":")
        if not sep:
            raise ValueError(f"--roi range {part!r} is not of the form start:stop")
        try:
            start = int(lo) if lo else 0
            stop = int(hi) if hi else shape[axis]
        except ValueError:
            raise ValueError(f"--roi range {part!r} is not of the form start:stop") from None
        if not 0 <= start < stop <= shape[axis]:
            raise ValueError(f"--roi range {part!r} is outside the axis of length {shape[axis]}")
        out[axis] = slice(start, stop)
    return out


def _decompress(args: argparse.Namespace) -> int:
    from napari_inif.core.codec.container import check_writable

    from .core import load, write_tiff

    src = Path(args.input)
    # Never next to the input under a name the original may have (stack.inif from
    # stack.tif): the lossy decode must not replace a lossless original.
    out = Path(args.output) if args.output else src.with_suffix(".decoded.tif")
    if _same_file(src, out):
        raise ValueError(f"the output {out} would overwrite the input")
    encoded = load(src)
    check_writable(out, overwrite=args.overwrite)  # before decoding
    layout = encoded.header.layout
    arr = encoded.array()
    non_channel = [i for i in range(len(layout.shape)) if i != layout.channel_axis]
    roi = (
        _parse_roi(args.roi, layout.shape, non_channel)
        if args.roi
        else [slice(None)] * len(layout.shape)
    )
    if args.zoom != 1.0:
        arr = arr.zoom(args.zoom)
        plane = set(layout.coord_axes[-2:])
        roi = [
            slice(round((s.start or 0) * args.zoom), round((s.stop or n) * args.zoom))
            if i in plane
            else s
            for i, (s, n) in enumerate(zip(roi, layout.shape, strict=True))
        ]
    data = arr[tuple(roi)]
    write_tiff(out, data, layout.axes, overwrite=args.overwrite)
    print(_printable(f"wrote {out} {data.shape} {data.dtype}"))
    return 0


def _info(args: argparse.Namespace) -> int:
    from .core import load

    path = Path(args.input)
    encoded = load(path)
    h = encoded.header
    if args.json:
        print(json.dumps(h.to_json(), indent=2))
        return 0
    fit = h.fit
    lines = [
        f"file        {path} ({encoded.nbytes} bytes)",
        f"image       {h.layout.shape} {h.layout.axes} {h.layout.dtype}"
        f" ({h.layout.raw_bytes} bytes raw)",
        f"ratio       {encoded.ratio:.1f}x",
        f"field       {_field_line(encoded)}",
    ]
    if fit:
        lines.append(
            f"quality     PSNR {fit.get('psnr')} dB (dtype range {fit.get('psnr_dtype')} dB), "
            f"SSIM {fit.get('ssim')}, max error {fit.get('max_error')}"
        )
        lines.append(
            f"fit         {fit.get('architecture')}, {fit.get('steps')} steps, "
            f"{fit.get('seconds')} s on {fit.get('device')}"
        )
    if fit.get("guidance"):
        from napari_inif.core.guidance.losses import guidance_summary

        lines.append(f"guidance    {guidance_summary(fit['guidance'])}")
    if h.prior:
        p = h.prior
        nbytes = p.get("nbytes", 0)
        lines.append(
            f"prior       hybrid: {p.get('codec')} codes the image, the field its residual; "
            f"{nbytes} bytes ({100 * nbytes / encoded.nbytes:.0f}% of the file), "
            f"tiles {p.get('tile')} x {p.get('planes')} plane(s), {p.get('bits')}-bit samples, "
            f"quality {p.get('quality')}"
        )
    if h.metadata:
        lines.append(f"metadata    {json.dumps(h.metadata)}")
    print("\n".join(_printable(line) for line in lines))
    return 0


def _field_line(encoded) -> str:
    """What ``inif info`` says about the field: blocks of a SIREN file, levels of a grid."""
    from napari_inif.core.codec.gridfile import GridEncoded

    if isinstance(encoded, GridEncoded):
        spec = encoded.decoder().field.code.spec
        hidden = "-".join(map(str, spec.hidden)) or "linear"
        features = f" x {spec.features} features" if spec.features > 1 else ""
        return (
            f"latent grid, {spec.levels} levels{features}, {spec.num_latents} latents, synthesis "
            f"{hidden}; stream {len(encoded.stream)} bytes, container and JSON "
            f"{encoded.nbytes - len(encoded.stream) - len(encoded.prior)} bytes"
        )
    h = encoded.header
    levels = {k: 2 * q + 1 for k, q in zip(h.tensor_kinds(), h.tensor_halves(), strict=True)}
    return (
        f"{h.grid.n_blocks} blocks {h.grid_counts}, depth {h.depth}, "
        f"widths {min(h.widths)}-{max(h.widths)}, {h.n_params} parameters, "
        f"{levels['weight']} quantiser levels (first layers {levels['first']}, "
        f"biases {levels['bias']})"
    )


def _demo(args: argparse.Namespace) -> int:
    from ._sample_data import sample_image

    image = sample_image()
    if not args.no_viewer and _has_display():
        try:
            import napari
        except ImportError:
            print("napari is not installed; running the terminal demo", file=sys.stderr)
        else:
            viewer = napari.Viewer()
            viewer.add_image(image.data, name="cancer cells (sample)")
            viewer.window.add_plugin_dock_widget("napari-inif", "Compress")
            napari.run()
            return 0
    from .core import CompressionConfig

    config = CompressionConfig(ratio=args.ratio, **({"steps": args.steps} if args.steps else {}))
    print(
        f"compressing the sample {image.data.shape} {image.axes} {image.data.dtype} "
        f"at {config.ratio:g}x ({config.steps} steps)",
        file=sys.stderr,
    )
    encoded = _run_fit(image, config, quiet=False, name="sample")
    print(_summary(encoded, None))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import BenchSettings, quick_settings, run_bench
    from .bench.cases import case_for_file, find_data_dir

    values: dict = {
        "out": Path(args.out),
        "data_dir": Path(args.data) if args.data else None,
        "seed": args.seed,
        "device": args.device,
        "threads": args.threads,
        "speed": not args.no_speed,
        "plots": not args.no_plots,
    }
    if args.files:
        data_dir = find_data_dir(args.data)
        values["cases"] = tuple(case_for_file(name, data_dir) for name in args.files)
        stacks = [c for c in values["cases"] if c.is_stack]
        if stacks and not args.quick:
            values["speed_case"] = stacks[0]
    if args.ratios:
        values["ratios"] = tuple(args.ratios)
    if args.steps is not None:
        values["steps"] = args.steps
    if args.set:
        values["config"] = dict(_key_value(text) for text in args.set)
    if args.speed_steps is not None:
        values["speed_steps"] = args.speed_steps
    if args.methods:
        values["methods"] = tuple(args.methods)
    if args.codecs:
        values["codecs"] = tuple(args.codecs)
    if args.quick:
        settings = quick_settings(**values)
    else:
        settings = BenchSettings(**values)
    if settings.speed and not settings.speed_case.is_stack:
        raise ValueError("the speed section needs a 3D stack; add one to --files or --no-speed")
    result = run_bench(settings, command=shlex.join(["inif", *args.argv]))
    return 0 if result.ok else 1


def _key_value(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set takes KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def _has_display() -> bool:
    return sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
