"""The compressed form of an image: header + quantised weights, in memory or in a file.

:func:`load` and :func:`loads` read every kind of ``.inif`` file: the SIREN block fields
(format 1.x/2.x, :class:`Encoded`) and the latent-grid field (formats 3.x and 4.x,
:class:`~napari_inif.core.codec.gridfile.GridEncoded`).  Both give the same surface
(``header.layout``/``fit``/``metadata``, ``to_bytes``, ``nbytes``, ``ratio``, ``save``,
``array()``).
"""

from __future__ import annotations

import lzma
import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_inif.core.codec.container import (
    GRID_MAJORS,
    Container,
    pack,
    read_file,
    unpack_version,
    write_atomic,
)
from napari_inif.core.codec.decode import FieldDecoder, InifArray, _human, decode_budget
from napari_inif.core.codec.header import FieldHeader
from napari_inif.core.codec.quant import QuantisedWeights, decode_payload, dequantise
from napari_inif.core.errors import DecodeBudgetError, InifFormatError

if TYPE_CHECKING:
    from napari_inif.core.codec.gridfile import GridEncoded

#: Peak bytes per stored weight while a file is read and its decoder built: the decoded
#: LZMA body (2), the int16 values (2) and a temporary (2), then float32 weights (4) kept
#: by the decoder; rounded up.
BYTES_PER_WEIGHT = 12
#: Bytes per stored tensor beyond its values (numpy and torch objects, scales).
BYTES_PER_TENSOR = 512

__all__ = ["Encoded", "decompress", "load", "loads"]


@dataclass(frozen=True)
class Encoded:
    """A compressed image.  Decoding in memory and from its file gives identical values.

    Attributes
    ----------
    header
        The typed header.
    weights
        The quantised network weights.
    payload
        Their entropy-coded bytes, exactly as stored in the file.
    prior
        Bytes of a classic-codec prior section (hybrid mode), else empty.
    budget
        Decode memory budget in bytes (``None``: :func:`.decode.decode_budget`, i.e.
        ``INIF_DECODE_BUDGET`` or 1 GiB); selections beyond it are refused.
    """

    header: FieldHeader
    weights: QuantisedWeights
    payload: bytes
    prior: bytes = b""
    budget: int | None = field(default=None, compare=False)
    _decoder: list[FieldDecoder] = field(default_factory=list, repr=False, compare=False)

    def to_bytes(self) -> bytes:
        """The complete ``.inif`` file."""
        return pack(self.header.to_json(), _join_sections(self.payload, self.prior))

    @cached_property
    def nbytes(self) -> int:
        """Size of the whole file in bytes."""
        return len(self.to_bytes())

    @property
    def ratio(self) -> float:
        """``raw bytes / file bytes``, the whole file counted."""
        return self.header.layout.raw_bytes / self.nbytes

    def with_header(self, header: FieldHeader) -> Encoded:
        """The same weights under another header (e.g. with fit results)."""
        return replace(self, header=header, _decoder=[])

    def decoder(self, device: str = "cpu") -> FieldDecoder:
        """The (cached) decoder of this field."""
        if not self._decoder:
            self._decoder.append(
                FieldDecoder(
                    self.header,
                    dequantise(self.weights),
                    device,
                    prior=self.prior,
                    budget=self.budget,
                )
            )
        return self._decoder[0]

    def array(self) -> InifArray:
        """Lazy, numpy-like full-resolution view of the decoded image."""
        return InifArray(self.decoder())

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
        """Write the file atomically; returns its path.

        ``overwrite=False`` raises ``FileExistsError`` instead of replacing a file.
        """
        return write_atomic(Path(path), self.to_bytes(), overwrite=overwrite)

    @classmethod
    def from_bytes(cls, data: bytes, budget: int | str | None = None) -> Encoded:
        """Parse and validate the bytes of a SIREN ``.inif`` file (see :func:`load`);
        :func:`loads` reads grid-field files too."""
        version, header_obj, body = unpack_version(data)
        if version[0] in GRID_MAJORS:
            raise InifFormatError(
                f"this is a grid-field file (format {version[0]}.{version[1]}); "
                "read it with napari_inif.core.loads() or load()"
            )
        assert isinstance(header_obj, dict)  # formats 1.x-2.x: a JSON header
        return cls._from_parts(header_obj, body, budget)

    @classmethod
    def _from_parts(cls, header_obj: dict, body: bytes, budget: int | str | None) -> Encoded:
        limit = decode_budget(budget)
        header = FieldHeader.from_json(header_obj, payload_bytes=len(body))
        payload, prior = _split_sections(body, header)
        if header.prior is not None:
            from napari_inif.core.hybrid.prior import check_section

            check_section(header.layout, header.prior, prior)
        n_tensors = 2 * header.depth * len(header.widths)
        need = BYTES_PER_WEIGHT * header.n_params + BYTES_PER_TENSOR * n_tensors
        if need > limit:
            raise DecodeBudgetError(
                f"the file declares {header.n_params} weights in {len(header.widths)} blocks; "
                f"reading them would take about {_human(need)}, over the decode budget of "
                f"{_human(limit)} (INIF_DECODE_BUDGET or load(budget=))"
            )
        try:
            weights = decode_payload(payload, header.tensor_shapes(), header.tensor_halves())
        except (ValueError, lzma.LZMAError, EOFError) as exc:
            raise InifFormatError(f"invalid payload: {exc}") from None
        except MemoryError:
            raise DecodeBudgetError(
                f"out of memory reading {header.n_params} weights; this machine cannot "
                "hold what the file declares"
            ) from None
        return cls(header, weights, payload, prior, limit)


def _join_sections(payload: bytes, prior: bytes) -> bytes:
    return prior + payload


def _split_sections(body: bytes, header: FieldHeader) -> tuple[bytes, bytes]:
    n_prior = 0 if header.prior is None else header.prior.get("nbytes", 0)
    if not isinstance(n_prior, int) or not 0 <= n_prior <= len(body):
        raise InifFormatError(f"codec prior size {n_prior!r} does not fit the payload")
    return body[n_prior:], body[:n_prior]


def load(path: str | os.PathLike[str], budget: int | str | None = None) -> Encoded | GridEncoded:
    """Read an ``.inif`` file of any field kind; raises :class:`InifFormatError` for
    anything invalid.

    ``budget`` bounds the memory decoding may take, in bytes (or a string such as
    ``"2G"``); ``None`` takes ``INIF_DECODE_BUDGET`` or 1 GiB.  Sizes the file declares
    are checked against it before anything is allocated (:class:`DecodeBudgetError`,
    an :class:`InifFormatError`), and so is every decoded selection: decode a region
    of a file whose whole image is beyond it.
    """
    return _from_container(read_file(path), budget)


def loads(data: bytes, budget: int | str | None = None) -> Encoded | GridEncoded:
    """:func:`load` of the bytes of an ``.inif`` file."""
    return _from_container(unpack_version(data), budget)


def _from_container(parts: Container, budget: int | str | None) -> Encoded | GridEncoded:
    """The result of a parsed container: by its major version, a grid field or blocks."""
    if parts.version[0] in GRID_MAJORS:
        from napari_inif.core.codec.gridfile import GridEncoded

        return GridEncoded.from_parts(parts.header, parts.payload, budget, parts.version)
    assert isinstance(parts.header, dict)  # formats 1.x-2.x: a JSON header
    return Encoded._from_parts(parts.header, parts.payload, budget)


def decompress(source: Any) -> InifArray:
    """Lazy decoded view of an :class:`Encoded` (or a grid result) or an ``.inif`` path."""
    encoded = load(source) if isinstance(source, str | os.PathLike) else source
    return encoded.array()
