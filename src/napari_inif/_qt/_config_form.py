"""Controls for a config dataclass, generated from its fields' metadata (magicgui widgets).

:class:`ConfigForm` reads :func:`napari_inif.core.config.settings`: one magicgui control
per field (a combo box of a registry's names or of fixed choices, a spin box bounded by
the field's range, a line edit, a check box), one form layout per group of the metadata.
The ``"basic"`` group is shown as is (a widget may add its own rows to it, see
:attr:`ConfigForm.layouts`); the others are collapsible sections, ``"advanced"``
collapsed.  A field that does not matter for the other values (guidance settings when
guidance is ``"none"``, the codec prior outside hybrid mode) is disabled and left out of
:meth:`ConfigForm.values`, so the config's default applies to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, LineEdit, SpinBox
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QFormLayout, QLabel, QVBoxLayout, QWidget
from superqt import QCollapsible

from napari_inif.core.config import GROUPS, Setting, settings

__all__ = ["LABELS", "ConfigForm"]

#: Labels of fields whose name reads badly as a label (others: the name, spaced).
LABELS = {
    "lr": "Learning rate",
    "w0": "w0 (hidden layers)",
    "w0_first": "w0 (first layer)",
    "freq_lr_scale": "Frequency lr scale",
    "guidance": "Guidance",
    "guidance_model": "Cellpose model",
    "guidance_weight": "Weight",
    "guidance_diameter": "Cell diameter",
    "guidance_channel": "Channel",
    "guidance_patch": "Window",
    "guidance_every": "Every K steps",
    "prior": "Codec prior",
    "prior_fraction": "Prior share",
    "target_psnr": "Target PSNR",
}
_BIG_INT = 2**31 - 1
_BIG_FLOAT = 1e9


class ConfigForm(QWidget):
    """The controls of the fields of ``config_cls`` (default ``CompressionConfig``).

    Parameters
    ----------
    config_cls
        The config dataclass whose fields become controls.
    exclude
        Fields the caller sets itself (e.g. the ratio of a dedicated slider).
    initial
        Starting values other than the fields' defaults.
    collapsed
        Groups whose section starts collapsed.
    """

    #: Emitted when any control changes.
    changed = Signal()

    def __init__(
        self,
        config_cls: type | None = None,
        *,
        exclude: Iterable[str] = (),
        initial: Mapping[str, Any] | None = None,
        collapsed: Iterable[str] = ("advanced",),
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        skip = set(exclude)
        initial = dict(initial or {})
        self.settings: dict[str, Setting] = {
            s.name: s for s in settings(config_cls) if s.name not in skip
        }
        self._defaults = {s.name: s.default for s in settings(config_cls)}
        self.widgets: dict[str, Any] = {}
        self.sections: dict[str, QCollapsible] = {}
        self.layouts: dict[str, QFormLayout] = {}  # group -> its rows
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        groups = [*GROUPS, *sorted({s.group for s in self.settings.values()} - set(GROUPS))]
        for group in groups:
            members = [s for s in self.settings.values() if s.group == group]
            if not members and group != "basic":
                continue
            box = QWidget(self)
            rows = self.layouts[group] = QFormLayout(box)
            rows.setContentsMargins(0, 0, 0, 0)
            for s in members:
                control = self.widgets[s.name] = _control(s, initial.get(s.name, s.default))
                control.changed.connect(self._on_changed)
                label = QLabel(_label(s), box)
                label.setToolTip(control.tooltip)
                rows.addRow(label, control.native)
            if group == "basic":
                layout.addWidget(box)
                continue
            section = QCollapsible(group.capitalize(), self)
            section.setToolTip(GROUPS.get(group, group))
            section.addWidget(box)
            if group not in set(collapsed):
                section.expand(animate=False)
            layout.addWidget(section)
            self.sections[group] = section
        self._update_enabled()

    def __getitem__(self, name: str) -> Any:
        """The magicgui control of field ``name``."""
        return self.widgets[name]

    def raw_values(self) -> dict[str, Any]:
        """What every control shows (``None`` where an optional field says auto/off)."""
        return {name: _read(self.settings[name], w) for name, w in self.widgets.items()}

    def values(self) -> dict[str, Any]:
        """Values of the fields that matter now (inactive ones keep the config's default)."""
        raw = self.raw_values()
        everything = {**self._defaults, **raw}
        return {k: v for k, v in raw.items() if self.settings[k].is_active(everything)}

    def set_value(self, name: str, value: Any) -> None:
        """Show ``value`` in the control of ``name`` (``None``: auto/off)."""
        _write(self.settings[name], self.widgets[name], value)

    def reset_choices(self) -> None:
        """Re-read the registries (names registered since the form was made)."""
        for name, widget in self.widgets.items():
            if isinstance(widget, ComboBox) and self.settings[name].registry is not None:
                widget.reset_choices()
                _describe_items(self.settings[name], widget)

    def _on_changed(self, *_: Any) -> None:
        self._update_enabled()
        self.changed.emit()

    def _update_enabled(self) -> None:
        everything = {**self._defaults, **self.raw_values()}
        for name, widget in self.widgets.items():
            widget.enabled = self.settings[name].is_active(everything)


def _label(s: Setting) -> str:
    return LABELS.get(s.name, s.name.replace("_", " ").capitalize())


def _tooltip(s: Setting) -> str:
    text = s.help[:1].upper() + s.help[1:]
    if s.range is not None:
        text += f"; {s.range}"
    if s.optional and s.none:
        text += f"; lowest value: {s.none}"
    return text


def _control(s: Setting, value: Any) -> Any:
    """One magicgui control for setting ``s``, showing ``value``."""
    common: dict[str, Any] = {"name": s.name, "tooltip": _tooltip(s)}
    if s.registry is not None or s.fixed_choices:

        def choices(_widget: Any, s: Setting = s) -> list[str]:
            return list(s.choices())  # read again on reset_choices(): new registered names

        combo = ComboBox(choices=choices, **common)
        combo.value = value
        _describe_items(s, combo)
        return combo
    if s.suggestions:
        options = list(s.suggestions) + ([value] if value not in s.suggestions else [])
        return ComboBox(choices=options, value=value, **common)
    if s.type is bool:
        return CheckBox(value=bool(value), **common)
    if s.type in (int, float):
        lo, hi, step = _bounds(s)
        if s.type is int and not s.optional:
            return SpinBox(value=value, min=int(lo), max=int(hi), step=int(step), **common)
        box = FloatSpinBox(min=lo, max=hi, step=step, **common)
        if s.type is int:
            box.native.setDecimals(0)
        if s.optional:
            box.native.setSpecialValueText(s.none or "none")  # shown at the minimum
        _write(s, box, value)
        return box
    return LineEdit(value="" if value is None else str(value), nullable=s.optional, **common)


def _bounds(s: Setting) -> tuple[float, float, float]:
    """Spin box minimum, maximum and step; an optional field's ``None`` sits one step
    below its smallest allowed value."""
    step = s.step or (1 if s.type is int else 1.0)
    big = _BIG_INT if s.type is int else _BIG_FLOAT
    r = s.range
    lo = -big if r is None or r.lo is None else r.lo + (step if r.lo_open else 0)
    hi = big if r is None or r.hi is None else r.hi - (step if r.hi_open else 0)
    if s.optional:
        lo -= step
    return lo, hi, step


def _read(s: Setting, widget: Any) -> Any:
    value = widget.value
    if s.type in (int, float) and isinstance(widget, FloatSpinBox):
        if s.optional and value <= widget.min + 1e-9:
            return None
        return round(value) if s.type is int else float(value)
    if isinstance(widget, LineEdit):
        return (value or None) if s.optional else value
    return value


def _write(s: Setting, widget: Any, value: Any) -> None:
    if isinstance(widget, FloatSpinBox) and value is None:
        widget.value = widget.min
    elif isinstance(widget, LineEdit):
        widget.value = "" if value is None else str(value)
    else:
        widget.value = value


def _describe_items(s: Setting, combo: ComboBox) -> None:
    """Each registered name's description as the tooltip of its item."""
    native = combo.native
    for i in range(native.count()):
        text = s.describe(native.itemText(i))
        if text:
            native.setItemData(i, text, Qt.ItemDataRole.ToolTipRole)
