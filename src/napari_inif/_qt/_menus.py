"""Menu commands of the plugin (``napari.yaml`` names them; napari injects the viewer).

napari 0.9 lets plugins contribute to the *Layers* menu (``napari/layers/visualize``) but
not to the layer list's context menu (``napari/layers/context`` is not in its
``MenuId.contributables()``, so such an entry would be dropped silently).  The viewport
toggle therefore lives in *Layers > Visualize* and in the Inspect widget.

No ``from __future__ import annotations`` here: app-model reads the annotation to inject
the viewer.
"""

from napari.viewer import Viewer

from .._layers import FIELD_KEY
from ._parts import unwrap
from .viewport import auto_sample, sampler_of

__all__ = ["toggle_viewport_sampling"]


def toggle_viewport_sampling(viewer: Viewer) -> list[bool]:
    """Turn sampling at screen resolution off for the selected INIF layers where it is on,
    on where it is off; returns the new state of each (a notification says it)."""
    from napari.utils.notifications import show_info

    auto = auto_sample(viewer)
    decoded = [
        unwrap(layer)
        for layer in viewer.layers.selection
        if isinstance(layer.metadata, dict) and layer.metadata.get(FIELD_KEY) is not None
    ]
    if not decoded:
        show_info("Select an INIF layer to turn its viewport sampling on or off")
        return []
    states = []
    for layer in decoded:
        on = sampler_of(viewer, layer) is None
        auto.set_sampling(layer, on)
        states.append(on)
    said = ", ".join(
        f"{layer.name!r} {'on' if on else 'off'}" for layer, on in zip(decoded, states, strict=True)
    )
    show_info(f"Sampling at screen resolution: {said}")
    return states
