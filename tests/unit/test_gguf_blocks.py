"""PITFALLS 17: the GGUF block layouts, built by hand byte for byte and checked against `gguf.quants`
(and, when llama.cpp is installed, against llama.cpp's own quantizer in test_gguf_llama_cpp.py)."""

import numpy as np
import pytest

import gguf  # noqa: E402
from gguf import GGMLQuantizationType as T  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402


def q8_0_block():
    """Values k/2 for k = 127, -3, 0, 1, ..., 28: max |x| = 63.5, so d = 63.5/127 = 0.5 and q = 2x."""
    ks = np.array([127, -3] + list(range(0, 30)), dtype=np.float32)
    return ks / 2, ks.astype(np.int8)


def test_q8_0_block_is_fp16_scale_then_32_int8():
    """Q8_0 = 34 bytes: fp16 d = 0.5 (0x3800, little endian: 00 38), then q = round(x / d) as int8:
    63.5/0.5 = 127 (0x7f), -1.5/0.5 = -3 (0xfd), 0, 1, 2, ..."""
    x, q = q8_0_block()
    want = np.frombuffer(np.float16(0.5).tobytes() + q.tobytes(), dtype=np.uint8)
    assert want[:4].tolist() == [0x00, 0x38, 0x7F, 0xFD]
    got = quantize(x.reshape(1, 32), T.Q8_0)
    assert got.shape == (1, 34)
    assert got.reshape(-1).tolist() == want.tolist()
    # and back: d * q is exact here
    assert dequantize(want.reshape(1, 34), T.Q8_0).reshape(-1).tolist() == x.tolist()


def q4_0_block():
    """Integers in [-7, 8] with x[0] = 8 the largest magnitude: d = 8 / -8 = -1, and q = x/d + 8 = 8 - x."""
    x = np.array([8, 3, -7, 0] + [1] * 12 + [-7, 0, 5, -2] + [2] * 12, dtype=np.float32)
    q = (8 - x).astype(np.uint8)
    return x, q


def test_q4_0_block_packs_element_j_and_j_plus_16_into_byte_j():
    """Q4_0 = 18 bytes: fp16 d = -1 (0xbc00: 00 bc), then 16 bytes, byte j = q[j] | q[j+16] << 4.
    q[0] = 8-8 = 0, q[16] = 8-(-7) = 15 -> byte 0 = 0x0 | 0xf << 4 = 0xf0;
    q[1] = 8-3 = 5, q[17] = 8-0 = 8 -> byte 1 = 0x85;  q[2] = 15, q[18] = 3 -> byte 2 = 0x3f."""
    x, q = q4_0_block()
    packed = (q[:16] | (q[16:] << 4)).astype(np.uint8)
    want = np.frombuffer(np.float16(-1.0).tobytes() + packed.tobytes(), dtype=np.uint8)
    assert want[:5].tolist() == [0x00, 0xBC, 0xF0, 0x85, 0x3F]
    got = quantize(x.reshape(1, 32), T.Q4_0)
    assert got.shape == (1, 18)
    assert got.reshape(-1).tolist() == want.tolist()
    assert dequantize(want.reshape(1, 18), T.Q4_0).reshape(-1).tolist() == x.tolist()


def test_rows_that_do_not_split_into_blocks_are_refused_by_gguf():
    """The reason the exporter falls back to F16 for a 176-wide row (176 = 5.5 blocks of 32)."""
    with pytest.raises(gguf.quants.QuantError):
        quantize(np.zeros((2, 176), dtype=np.float32), T.Q8_0)


def test_q8_0_error_is_at_most_half_a_step():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 64)).astype(np.float32)
    back = dequantize(quantize(x, T.Q8_0), T.Q8_0)
    d = np.abs(x.reshape(-1, 32)).max(1, keepdims=True) / 127
    assert np.all(np.abs(back.reshape(-1, 32) - x.reshape(-1, 32)) <= d * 0.5 + 1e-3 * d + 1e-7)
