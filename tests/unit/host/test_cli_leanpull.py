"""``arca pull`` on the lean path (no typer): the forms it takes, and everything else left to
typer (help, usage errors) untouched."""

from __future__ import annotations

import pytest

from arca.cli import image_ops, leanpath


@pytest.mark.parametrize("argv", [
    ["pull", "--help"], ["pull"], ["pull", "a", "b"], ["pull", "--creds"], ["pull", "--", "a"],
    ["pull", "-x", "a"], ["pull", "--insecure=yes", "a"], ["image", "pull", "-h"],
])
def test_forms_left_to_typer(argv: list[str]) -> None:
    assert leanpath.dispatch(argv) is None


@pytest.mark.parametrize("argv, want", [
    (["pull", "reg/app:v1"], ("reg/app:v1", None, False, None, False)),
    (["pull", "-q", "--insecure", "reg/app:v1"], ("reg/app:v1", None, True, None, True)),
    (["image", "pull", "reg/app:v1", "--creds", "u:p", "--ca-cert=/ca.pem", "--quiet"],
     ("reg/app:v1", "u:p", False, "/ca.pem", True)),
])
def test_forms_taken(argv: list[str], want: tuple[object, ...],
                     monkeypatch: pytest.MonkeyPatch) -> None:
    got: list[tuple[object, ...]] = []
    monkeypatch.setattr(image_ops, "pull", lambda *a: got.append(a) or 0)
    assert leanpath.dispatch(argv) == 0
    assert got == [want]
