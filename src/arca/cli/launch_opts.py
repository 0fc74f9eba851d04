"""The tdx/snp launch options ``arca measure`` and ``arca policy generate`` share (one
definition, so the two commands cannot describe or spell them differently); the values go
through :func:`arca.cli._common.launch_options`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from arca.host.backends import DEFAULT as DEFAULT_TEE
from arca.host.backends import names

#: Parameter name -> (type, typer option), in the order ``--help`` lists them.
OPTIONS: dict[str, tuple[type, Any]] = {
    "firmware": (Path, typer.Option(None, "--firmware", help="tdx/snp: TEE firmware (TDVF / "
                                    "AmdSev OVMF) the VM boots.")),
    "kernel": (Path, typer.Option(None, "--kernel", help="tdx/snp: guest kernel (bzImage).")),
    "initrd": (Path, typer.Option(None, "--initrd", help="tdx/snp: guest initramfs.")),
    "vcpus": (int, typer.Option(None, "--vcpus", help="tdx/snp: vCPU count.")),
    "memory": (int, typer.Option(None, "--memory", help="tdx/snp: guest memory (MiB).")),
    "cpu": (str, typer.Option(None, "--cpu", help="snp: vCPU model (EPYC-v4, EPYC-Milan...).")),
    "guest_features": (str, typer.Option(None, "--guest-features", help="snp: VMSA SEV "
                                         "features (default 0x1).")),
    "snp_policy": (str, typer.Option(None, "--snp-policy", help="snp: guest policy (default "
                                     "0x30000).")),
    "rtmr0": (str, typer.Option(None, "--rtmr0", help="tdx: RTMR0 of a reference TD of this "
                                "platform and VM shape (else not pinned; ADR 0035).")),
    "cmdline": (str, typer.Option(None, "--cmdline", help="tdx/snp: kernel command line before "
                                  "Arca's measured parameters.")),
}
TEE = typer.Option(DEFAULT_TEE, "--tee", help=f"TEE backend ({', '.join(names())}).")
VOLUME = typer.Option([], "--volume", "-v", help="Destination of an `arca run -v` volume "
                      "(repeatable): the init-data `arca run -v` generates.")


def with_launch_options(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` with the launch options as its last typer parameters, called with
    ``launch=`` their values as a dict instead (for :func:`arca.cli._common.launch_options`,
    which ``command`` calls where it checks its other input, so errors come in that order).

    Typer reads a command's options off its signature, so the signature it sees is
    ``command``'s without ``launch`` plus :data:`OPTIONS`: written once here, not in each
    command."""
    sig = inspect.signature(command)
    params = [p for p in sig.parameters.values() if p.name != "launch"]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                 annotation=kind) for name, (kind, option) in OPTIONS.items()]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        launch = {name: kwargs.pop(name) for name in OPTIONS}
        command(**kwargs, launch=launch)

    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return wrapper
