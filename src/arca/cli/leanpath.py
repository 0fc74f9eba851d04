"""``arca version`` and ``arca images`` / ``arca image ls [--json]`` without typer.

Typed often, and typer (with rich and pydantic) costs ~0.2 s to import: these exact forms run
here; any other form (help, unknown options) returns None and goes to typer, whose commands
call the same bodies. The container commands have their own lean parser
(:mod:`arca.cli.fastpath`).
"""

from __future__ import annotations


def dispatch(argv: list[str]) -> int | None:
    if argv == ["version"]:
        from arca import __version__

        print(__version__)
        return 0
    if argv[:1] == ["images"] or argv[:2] == ["image", "ls"]:
        rest = argv[1:] if argv[0] == "images" else argv[2:]
        if rest in ([], ["--json"]):
            from arca.cli.image_ops import images

            return images(rest == ["--json"])
    return None
