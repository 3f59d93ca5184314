"""Decoding of .inif layers off the GUI thread: napari never waits for the field."""

from __future__ import annotations

import threading

import numpy as np

from napari_inif import _layers


def test_browsing_an_opened_file_decodes_nothing_on_the_gui_thread(
    viewer, qtbot, cells_inif, cells_encoded, monkeypatch
):
    calls: list[tuple[str, int, tuple]] = []
    decode = _layers.Tiles.decode

    def recording(self, key):
        calls.append((threading.current_thread().name, self.token, tuple(map(str, key))))
        return decode(self, key)

    monkeypatch.setattr(_layers.Tiles, "decode", recording)
    [layer] = viewer.open(str(cells_inif), plugin=None)
    assert layer.metadata[_layers.LAZY_KEY] is layer.metadata[_layers.FIELD_KEY]
    for t in (1, 2, 3, 5):
        viewer.dims.set_current_step(0, t)
        expected = cells_encoded.array()[t]
        qtbot.waitUntil(
            lambda e=expected: np.array_equal(np.asarray(layer._slice.image.raw), e),
            timeout=10_000,
        )
    assert calls, "nothing was decoded"
    assert {name for name, *_ in calls} == {"inif-decode"}  # never the GUI thread
    # The view and the thumbnail share the decoded tiles: no tile is decoded twice.
    assert len(calls) == len(set(calls))
    # The thumbnail was made from the decoded plane, not from stand-in zeros.
    assert layer.thumbnail[..., :3].max() > 0


def test_a_slice_is_served_at_once_with_stand_ins_then_refreshed(viewer, qtbot, cells_inif):
    [layer] = viewer.open(str(cells_inif), plugin=None)
    decoder = _layers.background_decoder()
    assert decoder is not None
    decoder.idle()
    decoder.clear()  # nothing cached: the next slice must not wait for a decode
    viewer.dims.set_current_step(0, 2)
    field = layer.metadata[_layers.FIELD_KEY]
    exact = np.asarray(field[2])
    qtbot.waitUntil(
        lambda: np.array_equal(np.asarray(layer._slice.image.raw), exact), timeout=10_000
    )
    assert np.array_equal(np.asarray(_layers.field_of(layer)[2]), exact)  # exact on demand


def test_without_a_window_layers_decode_on_demand(cells_encoded):
    _layers.set_refresher(lambda owner: None, lambda: False)
    try:
        data, meta, _ = _layers.decoded_layer_data(cells_encoded, name="x")
        assert "cache" not in meta
        np.testing.assert_array_equal(np.asarray(data[0][3]), cells_encoded.array()[3])
    finally:
        _layers.set_refresher(None, lambda: False)


def test_a_tile_that_fails_to_decode_is_reported_once_per_layer(
    viewer, qtbot, cells_inif, monkeypatch, notifications
):
    viewer.open(str(cells_inif), plugin=None)
    decoder = _layers.background_decoder()
    decoder.idle()
    decoder.clear()  # nothing cached: every tile is decoded again

    def broken(self, key):
        raise RuntimeError("damaged weights")

    monkeypatch.setattr(_layers.Tiles, "decode", broken)
    for t in (1, 2, 3):
        viewer.dims.set_current_step(0, t)
        decoder.idle()
        qtbot.wait(100)
    qtbot.waitUntil(lambda: any("damaged weights" in m for m in notifications), timeout=5000)
    qtbot.wait(200)
    warned = [m for m in notifications if "damaged weights" in m]
    assert len(warned) == 1 and "'cells'" in warned[0]
    assert len(decoder.errors) >= 1
