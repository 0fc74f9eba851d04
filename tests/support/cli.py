"""``arca`` run in the test's own process (``arca.cli.main.main``), for tests that need no
subprocess: faster, and what the command printed comes back through pytest's ``capsys``."""

from __future__ import annotations

import pytest

from arca.cli.main import main


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``arca ARGV``: its exit code, stdout and stderr."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
