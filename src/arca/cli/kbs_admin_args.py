"""``arca kbs admin`` without typer: where its options may be, their environment variables,
the client, and the bodies of its commands (the typer commands of :mod:`arca.cli.kbs_cmd`
and the lean parser of :mod:`arca.cli.leanpath` both call them)."""

from __future__ import annotations

import sys

from arca.wire.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: The admin client's settings, from options or (like a Trustee client's config) the
#: environment, so a shell can say once which KBS and key it administers.
ADMIN_ENV = {"url": "ARCA_KBS_URL", "admin_key": "ARCA_KBS_ADMIN_KEY",
             "cacert": "ARCA_KBS_CACERT"}
#: The admin group's options, accepted before or after the subcommand (:func:`hoist_admin`).
ADMIN_OPTIONS = ("--url", "--admin-key", "--cacert")


def hoist_admin(args: list[str]) -> list[str]:
    """``arca kbs admin SUBCOMMAND ... --url U`` as ``arca kbs admin --url U SUBCOMMAND ...``:
    the group's options may come anywhere (click reads a group's options only before its
    subcommand). Nothing else moves; ``--`` ends the options."""
    if args[:2] != ["kbs", "admin"]:
        return args
    head, tail = args[:2], args[2:]
    rest: list[str] = []
    moved: list[str] = []
    i = 0
    while i < len(tail):
        a = tail[i]
        if a == "--":
            rest += tail[i:]
            break
        if a.partition("=")[0] in ADMIN_OPTIONS:
            n = 1 if "=" in a else 2
            moved += tail[i:i + n]
            i += n
            continue
        rest.append(a)
        i += 1
    return [*head, *moved, *rest]


def admin_client(url: str | None, admin_key: str | None, cacert: str | None) -> Any:
    """The :class:`~arca.kbs.admin_client.AdminClient`; a missing setting is named."""
    if not url:
        raise ConfigError(f"arca kbs admin needs the KBS URL: --url URL or ${ADMIN_ENV['url']}")
    if not admin_key:
        raise ConfigError("arca kbs admin needs the admin private key: --admin-key FILE or "
                          f"${ADMIN_ENV['admin_key']}")
    from arca.kbs.admin_client import AdminClient, load_admin_private_key

    return AdminClient(url, load_admin_private_key(admin_key), cacert=cacert)


def read_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"{what} {path}: {e.strerror}") from None


def pretty_values(values: Any) -> str:
    """``json.dumps(values, indent=2, sort_keys=True)`` for ``{NAME: [VALUE, ...]}`` without
    importing json (and re): ~10 ms of `arca kbs admin get-reference-values`."""
    from arca._internal.fastjson import json_dumps

    if not isinstance(values, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
            for k, v in values.items()):
        import json

        return json.dumps(values, indent=2, sort_keys=True)
    if not values:
        return "{}"
    items = []
    for name in sorted(values):
        vals = values[name]
        body = ("[\n" + ",\n".join(f"    {json_dumps(v)}" for v in vals) + "\n  ]"
                if vals else "[]")
        items.append(f"  {json_dumps(name)}: {body}")
    return "{\n" + ",\n".join(items) + "\n}"


def run(client: Any, cmd: str, args: list[str], file: str | None) -> int:
    """One admin command; its exit code (errors are ArcaErrors)."""
    if cmd == "set-resource":
        client.set_resource(args[0], read_file(str(file), "resource file"))
    elif cmd == "get-resource":
        sys.stdout.buffer.write(client.get_resource(args[0]))
    elif cmd == "delete-resource":
        client.delete_resource(args[0])
    elif cmd in ("set-resource-policy", "set-attestation-policy"):
        client.set_policy(cmd.split("-")[1], read_file(str(file), "policy file").decode())
    elif cmd == "get-policy":
        print(client.get_policy(args[0]), end="")
    elif cmd == "set-reference-value":
        client.set_reference_value(args[0], list(args[1:]))
    elif cmd == "set-reference-values":
        import json

        try:
            values = json.loads(read_file(str(file), "reference values file"))
        except ValueError as e:
            raise ConfigError(f"reference values file {file}: not JSON ({e})") from None
        names = client.set_reference_values(values)
        print(f"set {len(names)} reference value(s): {', '.join(names)}")
    elif cmd == "get-reference-values":
        print(pretty_values(client.get_reference_values()))
    else:
        raise ValueError(f"unknown admin command {cmd!r}")
    return 0
