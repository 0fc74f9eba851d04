"""The tdx/snp launch options ``arca measure`` and ``arca policy generate`` share (one
definition, so the two commands cannot describe or spell them differently); the values go
through :func:`arca.cli._common.launch_options`."""

from __future__ import annotations

import typer

FIRMWARE = typer.Option(None, "--firmware", help="tdx/snp: TEE firmware (TDVF / AmdSev OVMF) "
                        "the VM boots.")
KERNEL = typer.Option(None, "--kernel", help="tdx/snp: guest kernel (bzImage).")
INITRD = typer.Option(None, "--initrd", help="tdx/snp: guest initramfs.")
VCPUS = typer.Option(None, "--vcpus", help="tdx/snp: vCPU count.")
MEMORY = typer.Option(None, "--memory", help="tdx/snp: guest memory (MiB).")
CPU = typer.Option(None, "--cpu", help="snp: vCPU model (EPYC-v4, EPYC-Milan...).")
GUEST_FEATURES = typer.Option(None, "--guest-features", help="snp: VMSA SEV features "
                              "(default 0x1).")
SNP_POLICY = typer.Option(None, "--snp-policy", help="snp: guest policy (default 0x30000).")
RTMR0 = typer.Option(None, "--rtmr0", help="tdx: RTMR0 of a reference TD of this platform and "
                     "VM shape (else not pinned; ADR 0035).")
CMDLINE = typer.Option(None, "--cmdline", help="tdx/snp: kernel command line before Arca's "
                       "measured parameters.")
VOLUME = typer.Option([], "--volume", "-v", help="Destination of an `arca run -v` volume "
                      "(repeatable): the init-data `arca run -v` generates.")
