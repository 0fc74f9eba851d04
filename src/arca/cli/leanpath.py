"""``arca version``, ``arca images`` / ``arca image ls [--json]`` and the ``arca kbs admin``
commands without typer.

Typed often, and typer (with rich and pydantic) costs ~0.2 s to import: these exact forms run
here; any other form (help, unknown options) returns None and goes to typer, whose commands
call the same bodies. The container commands have their own lean parser
(:mod:`arca.cli.fastpath`).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def dispatch(argv: list[str]) -> int | None:
    if argv in (["--version"], ["-v"]):  # podman's spelling
        from arca import __version__

        print(f"arca version {__version__}")
        return 0
    if argv == ["version"]:
        from arca import __version__

        print(__version__)
        return 0
    if argv[:1] == ["images"] or argv[:2] == ["image", "ls"]:
        from arca.cli.fastpath import parse

        kwargs = parse(IMAGES, argv[1:] if argv[0] == "images" else argv[2:])
        if kwargs is None:
            return None
        from arca.cli.image_ops import images

        return images(**kwargs)
    if argv[:2] == ["kbs", "admin"]:
        return kbs_admin(argv)
    if argv[:1] == ["pull"] or argv[:2] == ["image", "pull"]:
        return pull(argv[1:] if argv[0] == "pull" else argv[2:])
    return None


def _images_command() -> Any:
    from arca.cli.fastpath import Command, Opt

    return Command("images", (), (
        Opt("as_json", ("--json",), "flag", False),
        Opt("quiet", ("--quiet", "-q"), "flag", False),
        Opt("format_", ("--format",), "value"),
        Opt("noheading", ("--noheading", "-n"), "flag", False),
        Opt("no_trunc", ("--no-trunc",), "flag", False),
        Opt("all_", ("--all", "-a"), "flag", False)))


#: ``arca images`` / ``arca image ls`` options (image_cmd.ls's).
IMAGES = _images_command()

#: ``arca pull`` / ``arca image pull`` options: flag or takes a value (image_cmd.pull's).
PULL_OPTIONS = {"-q": False, "--quiet": False, "--insecure": False, "--creds": True,
                "--ca-cert": True}


def pull(args: list[str]) -> int | None:
    """``[OPTIONS] REFERENCE`` in any order; anything else (help, ``--``, an unknown or
    incomplete option, no or two references) is typer's."""
    opts: dict[str, str | bool] = {}
    refs: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        name, eq, val = a.partition("=") if a.startswith("--") else (a, "", "")
        if not a.startswith("-"):
            refs.append(a)
        elif name not in PULL_OPTIONS or eq and not PULL_OPTIONS[name]:
            return None
        elif PULL_OPTIONS[name]:
            if not eq:
                if i + 1 >= len(args):
                    return None
                i += 1
                val = args[i]
            opts[name] = val
        else:
            opts[name] = True
        i += 1
    if len(refs) != 1:
        return None
    from arca.cli.image_ops import pull as do_pull

    creds, ca = opts.get("--creds"), opts.get("--ca-cert")
    return do_pull(refs[0], creds if isinstance(creds, str) else None,
                   bool(opts.get("--insecure")), ca if isinstance(ca, str) else None,
                   bool(opts.get("-q") or opts.get("--quiet")))


#: ``arca kbs admin`` subcommands: (positionals: a count, or -1 for NAME VALUE...; takes
#: ``--file``). Their typer twins are in :mod:`arca.cli.kbs_cmd`.
ADMIN_COMMANDS = {
    "set-resource": (1, True), "get-resource": (1, False), "delete-resource": (1, False),
    "set-resource-policy": (0, True), "set-attestation-policy": (0, True),
    "get-policy": (1, False), "set-reference-value": (-1, False),
    "set-reference-values": (0, True), "get-reference-values": (0, False),
}


def _admin_options(argv: list[str]) -> tuple[dict[str, str], list[str]] | None:
    """The group options and the rest, or None for a form left to typer."""
    from arca.cli.kbs_admin_args import ADMIN_OPTIONS, hoist_admin

    args = hoist_admin(argv)[2:]
    opts: dict[str, str] = {}
    while args and args[0].startswith("--"):
        name, eq, val = args[0].partition("=")
        if name not in ADMIN_OPTIONS:
            return None
        if not eq:
            if len(args) < 2:
                return None
            val, args = args[1], args[1:]
        opts[name] = val
        args = args[1:]
    return opts, args


def kbs_admin(argv: list[str]) -> int | None:
    import os

    parsed = _admin_options(argv)
    if parsed is None or not parsed[1] or parsed[1][0] not in ADMIN_COMMANDS:
        return None
    opts, (cmd, *rest) = parsed
    npos, takes_file = ADMIN_COMMANDS[cmd]
    file = None
    if takes_file:
        if len(rest) < 2 or rest[-2] != "--file" or rest[-1].startswith("-"):
            return None
        file, rest = rest[-1], rest[:-2]
    if any(a.startswith("-") for a in rest) or (len(rest) != npos if npos >= 0
                                                 else len(rest) < 1):
        return None
    if cmd == "get-policy" and rest[0] not in ("resource", "attestation"):
        return None  # typer's usage error
    from arca.cli.kbs_admin_args import ADMIN_ENV, admin_client

    client = admin_client(opts.get("--url") or os.environ.get(ADMIN_ENV["url"]),
                          opts.get("--admin-key") or os.environ.get(ADMIN_ENV["admin_key"]),
                          opts.get("--cacert") or os.environ.get(ADMIN_ENV["cacert"]))
    try:
        from arca.cli import kbs_admin_args as ops

        return ops.run(client, cmd, rest, file)
    finally:
        client.close()
