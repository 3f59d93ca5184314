import numpy as np
import pytest

from napari_inif.core.codec.quant import (
    LEVEL_FACTORS,
    MAX_HALF,
    decode_payload,
    dequantise,
    encode_payload,
    halves_for,
    quantise,
    rate_control,
)


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return [
        rng.uniform(-0.2, 0.2, s).astype(np.float32)
        for s in [(2, 24), (24,), (24, 24), (24,), (24, 1), (1,)]
    ]


@pytest.mark.parametrize("half", [1, 7, 127, 128, 2000, 32767])
def test_payload_round_trip(half):
    w = _weights()
    q = quantise(w, half)
    back = decode_payload(encode_payload(q), [t.shape for t in w], half)
    for a, b in zip(q.values, back.values, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(q.scales, back.scales)


def test_quantisation_error_is_bounded_by_half_a_step():
    w = _weights()
    q = quantise(w, 127)
    for orig, deq, s in zip(w, dequantise(q), q.scales, strict=True):
        assert np.max(np.abs(orig - deq)) <= float(s) / 2 + 1e-7


def test_rate_control_fills_the_budget():
    w = _weights()
    budget = 900
    q, payload = rate_control(w, budget)
    assert len(payload) <= budget
    finer = quantise(w, q.halves[0] + 1)  # the next level is too big
    assert len(encode_payload(finer)) > budget
    assert len(payload) > 0.8 * budget


def test_hostile_payload_is_refused():
    w = _weights()
    payload = encode_payload(quantise(w, 127))
    with pytest.raises(ValueError):
        decode_payload(payload[:-3], [t.shape for t in w], 127)
    with pytest.raises(ValueError):  # declares far more weights than the bytes can hold
        decode_payload(payload, [(10_000, 10_000)], 127)
    with pytest.raises(ValueError):  # values outside the declared quantiser range
        decode_payload(encode_payload(quantise(w, 500)), [t.shape for t in w], 100)


KINDS = ["first", "first", "weight", "bias", "weight", "bias"]  # _weights(): depth 3


def test_per_tensor_half_ranges_round_trip_and_are_enforced():
    w = _weights()
    halves = halves_for(KINDS, 100)
    assert halves == tuple(100 * LEVEL_FACTORS[k] for k in KINDS)
    assert LEVEL_FACTORS["first"] > LEVEL_FACTORS["bias"] > LEVEL_FACTORS["weight"] == 1
    q = quantise(w, halves)
    assert int(np.abs(q.values[0]).max()) == 100 * LEVEL_FACTORS["first"]  # finer, full range
    back = decode_payload(encode_payload(q), [t.shape for t in w], halves)
    for a, b in zip(q.values, back.values, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="outside"):  # first layer read at the coarse range
        decode_payload(encode_payload(q), [t.shape for t in w], 100)
    assert halves_for(["first"], MAX_HALF) == (MAX_HALF,)  # capped at 16 bits


def test_rate_control_keeps_first_layers_and_biases_finer_within_the_budget():
    w = _weights()
    q, payload = rate_control(w, 900, KINDS)
    assert len(payload) <= 900
    assert q.halves == halves_for(KINDS, q.halves[2])
    uniform, _ = rate_control(w, 900)
    assert q.halves[2] <= uniform.halves[2] < q.halves[3] < q.halves[0]  # matrices pay for it
