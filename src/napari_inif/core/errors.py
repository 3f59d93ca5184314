"""The exceptions napari-inif raises on purpose, in one torch-free module.

* :class:`InifFormatError`: a file (or a stream inside it) is not a valid ``.inif``;
* :class:`DecodeBudgetError`: a file's declared sizes would take more memory to decode
  than the decode budget allows (an :class:`InifFormatError`, so one ``except`` catches
  every problem a file can cause);
* :class:`BudgetError`: the asked ratio cannot be reached for this image;
* :class:`Cancelled`: a run was cancelled by its ``cancel`` callback (nothing written).
"""

from __future__ import annotations

__all__ = ["BudgetError", "Cancelled", "DecodeBudgetError", "InifFormatError"]


class InifFormatError(ValueError):
    """A file is not a valid ``.inif`` file (wrong magic, version, sizes or checksum)."""


class DecodeBudgetError(InifFormatError):
    """Decoding what a file declares would exceed the decode memory budget.

    Raised before anything is allocated; the message names the sizes and the budget
    (``INIF_DECODE_BUDGET`` or the ``budget`` argument of ``load``).
    """


class BudgetError(ValueError):
    """The asked ratio cannot be met for this image."""

    def __init__(self, message: str, max_ratio: float):
        super().__init__(message)
        self.max_ratio = max_ratio


class Cancelled(Exception):
    """The run was cancelled by its ``cancel`` callback; nothing was written."""
