from block.length.split import is_held_out, split
from block.workload import Sample


def _samples(n: int) -> list[Sample]:
    return [Sample(f"prompt number {i}", 3, 10 + i) for i in range(n)]


def test_split_is_deterministic_and_order_independent():
    samples = _samples(2000)
    a_train, a_held = split(samples, seed=3)
    b_train, b_held = split(list(reversed(samples)), seed=3)
    assert {s.prompt for s in a_held} == {s.prompt for s in b_held}
    assert {s.prompt for s in a_train} == {s.prompt for s in b_train}
    assert 0.15 < len(a_held) / len(samples) < 0.25  # about the 20% asked for


def test_seed_changes_the_split():
    samples = _samples(500)
    assert {s.prompt for s in split(samples, 0)[1]} != {s.prompt for s in split(samples, 1)[1]}


def test_no_held_out_prompt_is_trained_on_even_duplicated():
    samples = _samples(300) + [Sample("hi", 1, n) for n in range(50)]  # ShareGPT repeats "hi" a lot
    train, held = split(samples, seed=0)
    assert not {s.prompt for s in train} & {s.prompt for s in held}
    side = is_held_out("hi", 0)
    assert all((s in held) == side for s in samples if s.prompt == "hi")


def test_real_split_has_no_leak(sharegpt_split):
    train, held = sharegpt_split
    assert len(held) > 1000 and len(train) > 4 * len(held) * 0.9
    assert not {s.prompt for s in train} & {s.prompt for s in held}
