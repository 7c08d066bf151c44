"""Bad input to the commands: one line naming what is wrong, exit code 2, never a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from block.cli import app

CASES = [
    (["engine", "--port", "99999"], "--port"),
    (["router", "--port", "70000", "--instance", "http://127.0.0.1:1"], "--port"),
    (["router", "decide-bench", "--instances", "0"], "--instances"),
    (["bench", "--url", "notaurl", "--num-requests", "2"], "server URL must be http(s)://"),
    (["bench", "--url", "http://127.0.0.1:1,ftp://x", "--num-requests", "2"], "'ftp://x'"),
]


@pytest.mark.parametrize(("args", "says"), CASES, ids=[" ".join(a[:2]) + " " + a[-1] for a, _ in CASES])
def test_bad_input_is_one_line(args: list[str], says: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert "Traceback" not in result.output
