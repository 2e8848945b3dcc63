"""The kernels' index math at real sizes past 2^31 elements, without allocating the tensors:
32k tokens × a 128k vocabulary of logits (4.2e9), a 128256 × 4096 weight under a 16-block mask.
A 32-bit product anywhere in these functions gives a wrong (wrapped) value here. The kernels at
those sizes, for real: tests/test_large.py (-m large)."""

import pytest

import ember

TOKENS, VOCAB, DIM = 32768, 128256, 4096


@pytest.mark.parametrize("block", [16, 128])
def test_index_math_is_64_bit(block):
    got = ember._C._index_math(TOKENS, VOCAB, DIM, block)
    assert got["ce_last_row_start"] == (TOKENS - 1) * VOCAB > 2**31
    assert got["fp8_blockwise_last_scale"] == (TOKENS - 1) * -(-VOCAB // 128) + (VOCAB - 1) // 128
    assert (got["sparse_wgrad_last_r1"], got["sparse_wgrad_last_c1"]) == (VOCAB, DIM)
    assert got["sparse_wgrad_last_offset"] == VOCAB * DIM - 1  # × 4 bytes: past 2^31


@pytest.mark.parametrize(
    "args, name",
    [
        ((TOKENS, VOCAB, DIM, 0), "block"),
        ((0, VOCAB, DIM, 16), "tokens"),
        ((TOKENS, 0, DIM, 16), "vocab"),
        ((TOKENS, VOCAB, 0, 16), "dim"),
        ((TOKENS, VOCAB, DIM, -16), "block"),
    ],
)
def test_index_math_refuses_sizes_it_cannot_use(args, name):
    # a block of 0 divided by zero; an empty schedule had no last tile to read
    with pytest.raises(RuntimeError, match=rf"_index_math: {name} must be"):
        ember._C._index_math(*args)
