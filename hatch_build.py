"""Hatchling build hook: make ``pip install -e .`` expose the napari manifest.

npe2 finds a plugin's manifest by looking for ``napari.yaml`` in the folders of the module
named by the ``napari.manifest`` entry point (``napari_inif``). The one manifest lives at
the repository root; a wheel gets a copy through ``force-include`` in ``pyproject.toml``.
An editable install imports ``src/napari_inif`` in place, so this hook links
``src/napari_inif/napari.yaml`` to the root file (a copy where links are not allowed).
The link is git-ignored.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class ManifestLinkHook(BuildHookInterface):  # type: ignore[misc]
    """Link the root ``napari.yaml`` into the package folder for editable builds."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Only editable builds need it; wheels use force-include."""
        if version != "editable":
            return
        root = Path(self.root)
        target = root / "src" / "napari_inif" / "napari.yaml"
        if target.is_symlink() and target.resolve() == (root / "napari.yaml").resolve():
            return
        if target.exists() or target.is_symlink():
            target.unlink()
        try:
            os.symlink(os.path.join("..", "..", "napari.yaml"), target)
        except OSError:  # e.g. Windows without the symlink privilege
            shutil.copyfile(root / "napari.yaml", target)
