"""Hypothesis strategies for snapshots: reached by running the replica, or built by hand."""

from __future__ import annotations

from hypothesis import strategies as st

from block.prefix import chain_hashes
from block.replica import Replica, ReplicaConfig, Request, RequestState, Snapshot
from block.request import RoutingRequest
from tests.conftest import make_test_profile

PROFILE = make_test_profile()

configs = st.builds(
    ReplicaConfig,
    max_num_seqs=st.integers(1, 12),
    max_num_batched_tokens=st.integers(8, 160),
    block_size=st.sampled_from([1, 4, 16]),
    num_gpu_blocks=st.integers(16, 100),
    max_model_len=st.just(384),
)


def _fit(config: ReplicaConfig, prompt: int, output: int) -> tuple[int, int]:
    cap = min(config.num_gpu_blocks * config.block_size, config.max_model_len)
    prompt = min(prompt, cap - 1)
    return prompt, max(1, min(output, cap - prompt))


_uids = iter(range(1, 1 << 62))


@st.composite
def prompt_hashes(draw, prompt: int, block_size: int, share: bool = True) -> tuple[int, ...]:
    """Prefix hashes of a prompt that shares its first tokens with one of three families of prompts
    (`share` False: a prompt of its own)."""
    family = draw(st.integers(0, 2))
    shared = draw(st.integers(0, prompt)) if share else 0
    uid = next(_uids)
    tokens = [family * 10_000 + i if i < shared else (10 + uid) * 10_000 + i for i in range(prompt)]
    return chain_hashes(tokens, block_size)


@st.composite
def hashed_requests(
    draw,
    config: ReplicaConfig,
    prompts=st.integers(1, 200),
    outputs=st.integers(1, 150),
    max_tokens=st.none(),
    share: bool = True,
) -> RoutingRequest:
    """A candidate fitted to `config`, its prompt named by block hashes at the config's block size (sharing
    one of three families unless `share` is False)."""
    prompt = min(draw(prompts), config.room - 1)
    return RoutingRequest(
        prompt,
        draw(outputs),
        draw(max_tokens),
        prefix_hashes=draw(prompt_hashes(prompt, config.block_size, share)),
        prefix_block_size=config.block_size,
    )


@st.composite
def hashed_pending(
    draw, snapshot: Snapshot, shapes: list[tuple[int, int]], share: bool = True
) -> list[RequestState]:
    """Requests routed since `snapshot`, one per (prompt, output) of `shapes`, their prompts named as
    `hashed_requests` names them."""
    cfg = snapshot.config
    pending = []
    for i, (p, o) in enumerate(shapes):
        p = min(p, cfg.room - 1)
        hashes = draw(prompt_hashes(p, cfg.block_size, share))
        pending.append(RequestState(f"p{i}", snapshot.now, p, expected_output_tokens=o, prefix_hashes=hashes))
    return pending


@st.composite
def reached_snapshots(draw, caching: bool = False, share: bool = True) -> Snapshot:
    """A replica's own state after some steps: prefills in progress, preemptions, a full cache;
    `caching`: prompts share prefixes (unless `share` is False) and the replica caches them."""
    config = draw(configs)
    replica = Replica(config, PROFILE)
    n = draw(st.integers(0, 24))
    for i in range(n):
        prompt, output = _fit(config, draw(st.integers(1, 200)), draw(st.integers(1, 150)))
        known = draw(st.booleans())
        hashes = draw(prompt_hashes(prompt, config.block_size, share)) if caching else ()
        replica.add(
            Request(
                f"r{i}",
                prompt,
                output,
                expected_output_tokens=output if known else None,
                prefix_hashes=hashes,
            )
        )
    for _ in range(draw(st.integers(0, 80))):
        if replica.step() is None:
            break
    replica.now = draw(st.sampled_from([0.0, 12.5]))
    return replica.snapshot()


@st.composite
def odd_snapshots(draw, caching: bool = False, share: bool = True) -> Snapshot:
    """Hand-built states the replica would rarely reach: prefills mid-queue, unknown lengths, overruns;
    `caching`: prompts share prefixes (requests holding the same block share it) and some blocks
    nobody holds are cached (`share` False: every prompt its own, cached or not)."""
    config = draw(configs)
    cap_blocks = config.num_gpu_blocks
    running, waiting, used = [], [], 0
    for i in range(draw(st.integers(0, 14))):
        prompt, _ = _fit(config, draw(st.integers(1, 150)), 1)
        g = draw(st.integers(0, 60))
        g = max(0, min(g, min(config.max_model_len, cap_blocks * config.block_size) - prompt - 1))
        total = prompt + g
        c = total - 1 if g > 0 and draw(st.booleans()) else draw(st.integers(0, total - 1))
        blocks = -(-c // config.block_size)
        expected = draw(st.one_of(st.none(), st.integers(1, 120)))
        hashes = draw(prompt_hashes(prompt, config.block_size, share)) if caching else ()
        state = RequestState(f"s{i}", 0.0, prompt, c, g, expected, hashes)
        if used + blocks + 1 > cap_blocks:
            continue
        used += blocks
        if c == 0 and draw(st.booleans()):
            waiting.append(state)
        else:
            running.append(state)
    free_cached = None
    if caching:  # blocks of finished prompts, still cached; anonymous free blocks between them
        free_cached = []
        for _ in range(draw(st.integers(0, 6))):
            prompt = draw(st.integers(config.block_size, 200))
            for h in draw(prompt_hashes(prompt, config.block_size, share))[::-1]:
                gap = draw(st.integers(0, 2))
                if used + gap + 1 >= cap_blocks:
                    break
                free_cached.append((gap, h))
                used += gap + 1
    return Snapshot(config, draw(st.sampled_from([0.0, 3.25])), running, waiting, free_cached=free_cached)
