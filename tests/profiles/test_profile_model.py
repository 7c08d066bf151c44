"""The Profile model itself: prefill arithmetic, JSON round trip, rejection of malformed profiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from block.profiles import BatchShape, Profile, load_profile


def test_prefill_time_is_the_sum_of_its_chunks(profile: Profile) -> None:
    chunk, prompt = 64, 200
    expected, done = 0.0, 0
    while done < prompt:
        n = min(chunk, prompt - done)
        pairs = sum(done + i + 1 for i in range(n))  # query i of the chunk sees done + i + 1 keys
        expected += profile.step_time(BatchShape(n, 1, 0, 0, pairs))
        done += n
    assert profile.prefill_time(prompt, chunk) == pytest.approx(expected)


def test_prefill_in_one_chunk_is_one_step(profile: Profile) -> None:
    n = 300
    one_step = profile.step_time(BatchShape(n, 1, 0, 0, n * (n + 1) // 2))
    assert profile.prefill_time(n, n) == pytest.approx(one_step)
    assert profile.prefill_time(n, 4096) == pytest.approx(one_step)


def test_smaller_chunks_cost_more_and_longer_prompts_cost_more() -> None:
    p = load_profile("llama-2-7b-a100")
    assert p.prefill_time(2048, 512) > p.prefill_time(2048, 2048)
    assert p.prefill_time(2048, 512) > p.prefill_time(1024, 512) > p.prefill_time(512, 512) > 0
    assert p.prefill_time(0, 512) == 0


def test_json_round_trip(tmp_path: Path) -> None:
    for name in ("llama-2-7b-a30", "tiny-fast"):
        p = load_profile(name)
        assert Profile.from_dict(json.loads(json.dumps(p.to_dict()))) == p
        path = tmp_path / f"{name}.json"
        p.save(path)
        assert load_profile(path) == p


def _good() -> dict:
    return load_profile("tiny-fast").to_dict()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("step_overhead_s"),
        lambda d: d.pop("linear"),
        lambda d: d.pop("name"),
        lambda d: d.update(decode_kv_token_s=None),
        lambda d: d.update(linear={"tokens": [1, 64], "seconds": [0.001]}),
        lambda d: d.update(linear={"tokens": [64, 1], "seconds": [0.001, 0.002]}),
        lambda d: d.update(linear={"tokens": [1], "seconds": [0.001]}),
    ],
)
def test_malformed_profile_is_a_value_error(mutate, tmp_path: Path) -> None:
    d = _good()
    mutate(d)
    with pytest.raises(ValueError):
        Profile.from_dict(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError):
        load_profile(path)


def test_invalid_json_text_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError):  # json.JSONDecodeError is a ValueError
        load_profile(path)


def test_unknown_name_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        load_profile("no-such-profile")


def test_request_overhead_is_optional_and_round_trips(tmp_path: Path) -> None:
    d = _good()
    assert "request_overhead_s" not in d  # profiles without it keep their JSON as it was
    assert Profile.from_dict(d).request_overhead_s == 0.0
    p = Profile.from_dict({**d, "request_overhead_s": 0.0187})
    assert p.request_overhead_s == 0.0187
    p.save(tmp_path / "p.json")
    assert load_profile(tmp_path / "p.json") == p
    # Outside the engine steps: it never changes a step's time.
    shape = BatchShape(64, 4, 3, 900, 64)
    assert p.step_time(shape) == Profile.from_dict(d).step_time(shape)
    with pytest.raises(ValueError, match="request_overhead_s"):
        Profile.from_dict({**d, "request_overhead_s": -0.001})
