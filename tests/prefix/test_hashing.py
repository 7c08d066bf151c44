import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from block.prefix import chain_hashes

tokens = st.lists(st.integers(min_value=0, max_value=200_000), max_size=200)


@given(tokens, tokens, st.integers(min_value=1, max_value=32))
def test_blocks_share_a_hash_exactly_when_the_prompts_agree_up_to_their_end(a, b, block_size):
    ha, hb = chain_hashes(a, block_size), chain_hashes(b, block_size)
    assert len(ha) == len(a) // block_size
    for i in range(min(len(ha), len(hb))):
        same_prefix = a[: (i + 1) * block_size] == b[: (i + 1) * block_size]
        assert (ha[i] == hb[i]) == same_prefix


def test_a_salt_keeps_equal_prompts_apart():
    ids = list(range(64))
    assert set(chain_hashes(ids, 16, salt=1)).isdisjoint(chain_hashes(ids, 16, salt=2))


def test_hashes_do_not_depend_on_the_process_hash_seed():
    code = "from block.prefix import chain_hashes; print(chain_hashes(list(range(50)), 16))"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1
