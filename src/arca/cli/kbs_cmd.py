"""``arca kbs``: serve the key broker, create admin keys, administer it, fetch a resource.

Argument handling only; the work is in :mod:`arca.kbs.server`, :mod:`arca.kbs.admin_client`
and (for ``get-resource``) the guest's :class:`arca.guest.kbs_client.KbsClient`.
"""

from __future__ import annotations

import base64
import json
import pathlib
import shlex
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import typer

from arca.cli.kbs_admin_args import ADMIN_ENV, admin_client, hoist_admin
from arca.wire.errors import ConfigError, EvidenceError

__all__ = ["hoist_admin", "register"]

kbs_app = typer.Typer(help="Key broker service (Trustee KBS protocol v0.4.0).",
                      no_args_is_help=True)
admin_app = typer.Typer(help="Administer a KBS with the admin key (EdDSA tokens).",
                        no_args_is_help=True)


def _read(path: pathlib.Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{what} {path}: {e.strerror}") from None


@kbs_app.command("serve")
def serve(
    config: pathlib.Path | None = typer.Option(
        None, "--config", help="TOML config file: Arca's keys or a Trustee kbs-config.toml "
        "(mapping in docs/kbs.md)."),
    listen: str | None = typer.Option(None, "--listen", help="HOST:PORT (default 127.0.0.1:8080)."),
    db: str | None = typer.Option(None, "--db", help="sqlite:///FILE or postgresql://... URL."),
    data_dir: str | None = typer.Option(
        None, "--data-dir", help="State directory (default: the directory of a sqlite:///FILE "
        "--db, else ~/.local/state/arca-kbs, /var/lib/arca-kbs as root)."),
    admin_public_key: str | None = typer.Option(None, "--admin-public-key",
                                                help="Ed25519 public key (PEM) of the admin."),
    kek_file: str | None = typer.Option(None, "--kek-file",
                                        help="Key-encryption key (default DATA_DIR/kek.bin)."),
    trust_sim_root: list[str] = typer.Option([], "--trust-sim-root",  # noqa: B006
                                             help="Trusted Arca sim root certificate (PEM)."),
    collateral: str | None = typer.Option(None, "--collateral",
                                          help="Collateral directory for sgx/tdx/snp."),
    collateral_online: bool | None = typer.Option(
        None, "--collateral-online",
        help="Fetch sgx/tdx collateral from Intel PCS and snp CRLs from AMD KDS (cached)."),
    pcs_url: str | None = typer.Option(None, "--pcs-url",
                                       help="Intel PCS (or mirror) base URL; implies online."),
    kds_url: str | None = typer.Option(None, "--kds-url",
                                       help="AMD KDS (or mirror) base URL; implies online."),
    snp_min_tcb: list[str] = typer.Option(  # noqa: B006
        [], "--snp-min-tcb",
        help="Minimum SNP TCB, e.g. Milan:bootloader=4,tee=0,snp=22,microcode=213 "
             "(required to accept snp; repeatable per product)."),
    insecure_dcap_root: list[str] = typer.Option(  # noqa: B006
        [], "--insecure-dcap-root",
        help="Trust SGX/TDX quotes under this root instead of Intel's (testing only)."),
    insecure_amd_ark: list[str] = typer.Option(  # noqa: B006
        [], "--insecure-amd-ark",
        help="Trust SNP reports under this ARK instead of AMD's (testing only)."),
    insecure_allow_sample: bool | None = typer.Option(
        None, "--insecure-allow-sample", help="Accept unsigned 'sample' evidence (testing)."),
    insecure_http: bool | None = typer.Option(None, "--insecure-http",
                                              help="Serve plain HTTP instead of HTTPS."),
    tls_cert: str | None = typer.Option(
        None, "--tls-cert", help="TLS certificate (PEM). Required unless --insecure-http."),
    tls_key: str | None = typer.Option(
        None, "--tls-key", help="TLS private key (PEM). Required unless --insecure-http."),
    workers: int | None = typer.Option(
        None, "--workers", help="Worker processes (forked, sharing the listening socket)."),
    session_timeout: int | None = typer.Option(None, "--session-timeout",
                                               help="Session lifetime in seconds (300)."),
    admin_token_max_lifetime: int | None = typer.Option(
        None, "--admin-token-max-lifetime",
        help="Refuse admin tokens whose exp lies further ahead, in seconds (7200, what "
        "Trustee's kbs-client mints)."),
    no_access_log: bool = typer.Option(False, "--no-access-log",
                                       help="Do not log one line per request."),
) -> None:
    """Run the KBS. Nothing is required: HTTPS needs --tls-cert and --tls-key (or
    --insecure-http); without --admin-public-key the admin API is off; without
    --trust-sim-root, --insecure-allow-sample or --collateral only the TEEs whose verifiers
    need nothing more are accepted (the start-up line lists them)."""
    from arca.kbs import config as kbs_config
    from arca.kbs.server import serve as run

    cfg = kbs_config.load(str(config) if config else None, {
        "listen": listen, "db": db, "data_dir": data_dir, "admin_public_key": admin_public_key,
        "kek_file": kek_file, "trust_sim_root": tuple(trust_sim_root), "collateral": collateral,
        "collateral_online": collateral_online, "pcs_url": pcs_url, "kds_url": kds_url,
        "snp_min_tcb": snp_min_tcb or None, "insecure_dcap_root": tuple(insecure_dcap_root),
        "insecure_amd_ark": tuple(insecure_amd_ark),
        "insecure_allow_sample": insecure_allow_sample, "insecure_http": insecure_http,
        "tls_cert": tls_cert, "tls_key": tls_key, "workers": workers,
        "session_timeout": session_timeout, "admin_token_max_lifetime": admin_token_max_lifetime,
        "access_log": False if no_access_log else None}, data_dir_default=True)
    run(cfg)


@kbs_app.command("keygen")
def keygen(prefix: pathlib.Path = typer.Option(pathlib.Path("kbs-admin"), "--out",
                                               help="Writes PREFIX.key and PREFIX.pub.")) -> None:
    """Create an Ed25519 admin key pair."""
    from arca.kbs.admin_client import keygen as make

    priv, pub = make(prefix)
    print(f"admin private key: {priv}\nadmin public key:  {pub} (give to 'kbs serve')")


@admin_app.callback()
def admin(
    ctx: typer.Context,
    url: str | None = typer.Option(None, "--url", envvar=ADMIN_ENV["url"],
                                   help="KBS URL (else $ARCA_KBS_URL)."),
    admin_key: pathlib.Path | None = typer.Option(
        None, "--admin-key", envvar=ADMIN_ENV["admin_key"],
        help="Admin private key (PEM; else $ARCA_KBS_ADMIN_KEY)."),
    cacert: str | None = typer.Option(None, "--cacert", envvar=ADMIN_ENV["cacert"],
                                      help="CA certificate of the KBS (else "
                                      "$ARCA_KBS_CACERT)."),
) -> None:
    """The client is made when a command needs it: --help needs no credentials."""
    ctx.obj = (url, admin_key, cacert)


def _client(ctx: typer.Context) -> Any:
    # click hands the group's object down to its subcommands
    url, admin_key, cacert = ctx.obj if isinstance(ctx.obj, tuple) else (None, None, None)
    client = admin_client(url, str(admin_key) if admin_key else None, cacert)
    ctx.call_on_close(client.close)
    return client


@admin_app.command("set-resource")
def set_resource(ctx: typer.Context, path: str,
                 file: pathlib.Path = typer.Option(..., "--file")) -> None:
    """Store a resource (repo/type/tag)."""
    _client(ctx).set_resource(path, _read(file, "resource file"))


@admin_app.command("get-resource")
def get_resource(ctx: typer.Context, path: str) -> None:
    """Print a stored resource (raw bytes)."""
    sys.stdout.buffer.write(_client(ctx).get_resource(path))


@admin_app.command("delete-resource")
def delete_resource(ctx: typer.Context, path: str) -> None:
    """Delete a resource."""
    _client(ctx).delete_resource(path)


@admin_app.command("set-resource-policy")
def set_resource_policy(ctx: typer.Context,
                        file: pathlib.Path = typer.Option(..., "--file")) -> None:
    """Install a Rego resource policy (package policy, rule allow)."""
    _client(ctx).set_policy("resource", _read(file, "policy file").decode())


@admin_app.command("set-attestation-policy")
def set_attestation_policy(ctx: typer.Context,
                           file: pathlib.Path = typer.Option(..., "--file")) -> None:
    """Install a Rego attestation policy (package policy, trust claims)."""
    _client(ctx).set_policy("attestation", _read(file, "policy file").decode())


@admin_app.command("get-policy")
def get_policy(ctx: typer.Context, kind: str = typer.Argument(..., help="resource|attestation")
               ) -> None:
    """Print the policy in force."""
    if kind not in ("resource", "attestation"):
        raise typer.BadParameter("kind must be resource or attestation")
    print(_client(ctx).get_policy(kind), end="")


@admin_app.command("set-reference-value")
def set_reference_value(ctx: typer.Context, name: str, values: list[str]) -> None:
    """Set the accepted values of NAME (e.g. sim.measurement HEX...)."""
    _client(ctx).set_reference_value(name, values)


@admin_app.command("set-reference-values")
def set_reference_values(ctx: typer.Context,
                         file: pathlib.Path = typer.Option(..., "--file", help="JSON object "
                                                           "NAME -> [VALUE...], e.g. the "
                                                           "reference-values.json of arca "
                                                           "policy generate.")) -> None:
    """Set every reference value a JSON file lists (one call per name)."""
    try:
        values = json.loads(_read(file, "reference values file"))
    except ValueError as e:
        raise ConfigError(f"reference values file {file}: not JSON ({e})") from None
    names = _client(ctx).set_reference_values(values)
    print(f"set {len(names)} reference value(s): {', '.join(names)}")


@admin_app.command("get-reference-values")
def get_reference_values(ctx: typer.Context) -> None:
    """Print all reference values as JSON."""
    print(json.dumps(_client(ctx).get_reference_values(), indent=2, sort_keys=True))


def _evidence_fn(tee: str, sim_socket: str | None, command: str | None
                 ) -> Callable[[bytes], bytes]:
    if command:
        def run(report_data: bytes) -> bytes:
            out = subprocess.run([*shlex.split(command), report_data.hex()], capture_output=True,
                                 check=False, timeout=60)
            if out.returncode:
                raise EvidenceError(f"evidence command failed: {out.stderr.decode()[:300]}")
            return out.stdout
        return run
    if tee == "sample":
        return lambda rd: json.dumps({"svn": "1",
                                      "report_data": base64.b64encode(rd).decode()}).encode()
    if tee == "sim":
        from arca.guest.evidence import SimDevice

        return (SimDevice(sim_socket) if sim_socket else SimDevice()).get_evidence
    raise typer.BadParameter(f"--tee {tee} needs --evidence-command")


@kbs_app.command("get-resource")
def client_get_resource(
    path: str,
    url: str = typer.Option(..., "--url", help="KBS URL."),
    tee: str = typer.Option("sample", "--tee", help="sample, sim, or any with --evidence-command."),
    cacert: pathlib.Path | None = typer.Option(None, "--cacert", help="CA of the KBS (PEM)."),
    init_data: pathlib.Path | None = typer.Option(None, "--init-data", help="Init-data TOML."),
    sim_socket: str | None = typer.Option(None, "--sim-socket", help="sim device socket."),
    evidence_command: str | None = typer.Option(
        None, "--evidence-command", help="Command printing evidence for report data (hex arg)."),
    out: pathlib.Path | None = typer.Option(None, "--out", help="Write here, not stdout."),
) -> None:
    """Attest like a guest and fetch one resource (repo/type/tag), decrypted."""
    from arca.guest.kbs_client import KbsClient

    client = KbsClient(url, tee=tee, evidence=_evidence_fn(tee, sim_socket, evidence_command),
                       ca_pem=_read(cacert, "CA file") if cacert else None,
                       init_data_toml=_read(init_data, "init-data").decode() if init_data else None)
    data = client.get_resource(path)
    if out:
        out.write_bytes(data)
    else:
        sys.stdout.buffer.write(data)


kbs_app.add_typer(admin_app, name="admin")


def register(app: typer.Typer) -> None:
    app.add_typer(kbs_app, name="kbs")
