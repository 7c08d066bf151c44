"""An emulated engine on 127.0.0.1 (free port, own thread and loop), shared by the HTTP tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from block.engine.server import BackgroundEngine, background_engine
from block.engine.settings import EngineSettings, replica_config
from tests.conftest import make_test_profile

# make_test_profile(): 8 sequences, 64-token steps of about 12 ms, 64 blocks of 16 tokens (1,024
# tokens of KV cache) under a 4,096-token model length, so both length limits can be hit.
TEST_MODEL = "test-model"


def engine_settings(**overrides: int) -> EngineSettings:
    profile = make_test_profile()
    return EngineSettings(profile, replica_config(profile, **overrides), noise=0.0, seed=7, model=TEST_MODEL)


@pytest.fixture(scope="session")
def engine() -> Iterator[BackgroundEngine]:
    with background_engine(engine_settings()) as e:
        yield e
