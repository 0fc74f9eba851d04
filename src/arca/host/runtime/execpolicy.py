"""The execution policy as the host runtime applies it: what it measures, and ``exec``.

The init-data a container is created with (annotation ``io.arca.init-data``) may carry an
execution policy (:class:`arca.wire.initdata.ExecPolicy`); its hash is bound into the TD's
evidence, so the policy is measured too. Two host-side rules follow from it:

* **What is measured.** Parts of the process the measured policy declares variable are not part
  of the TD's identity, exactly like the orchestrator-injected variables already left out of
  :func:`arca.host.runtime.bundle.measured_env`:

  - environment variables whose names match ``allow_env`` are left out of the measured env;
  - when the host's arguments match an ``allow_args`` entry (same matching as the agent,
    :func:`arca.guest.policy.args_allowed`), the *entry itself* is measured as the args, so
    every command the entry allows yields one measurement the tenant can predict
    (``arca policy generate`` lists it).

  A host gains nothing by not applying these rules: it only gets a measurement the broker does
  not know. The agent checks the host-supplied process against the measured descriptor and the
  same policy, whatever the runtime did.

* **exec.** ``arca-runtime exec`` into a TD is refused unless the measured policy sets
  ``allow_exec``. On ``sim`` this is a convenience an honest host enforces (a hostile one can
  call runc directly); a VM backend's guest checks every exec again against the measured
  policy it holds (ADR 0040), see ``docs/secrets.md``.

What it does not do: decide anything for containers without init-data other than "no exec".
"""

from __future__ import annotations

import fnmatch
import pathlib
from typing import Any

from arca._internal.records import replace as replace_record
from arca.guest.policy import args_allowed
from arca.wire.descriptor import ProcessSpec
from arca.wire.errors import InvalidInput, PolicyDenied
from arca.wire.initdata import ExecPolicy, InitData

INIT_DATA_FILE = "init-data.toml"


def policy_of(init_data: bytes | None) -> ExecPolicy:
    return InitData.parse(init_data).policy if init_data is not None else ExecPolicy()


def measured_process(spec: ProcessSpec, policy: ExecPolicy) -> ProcessSpec:
    """``spec`` (already without orchestrator variables) as measured under ``policy``."""
    args = next((tuple(p) for p in policy.allow_args if args_allowed(spec.args, tuple(p))),
                spec.args)
    env = tuple(e for e in spec.env
                if not any(fnmatch.fnmatchcase(e.split("=", 1)[0], p)
                           for p in (*policy.allow_env, *policy.orchestrator_env)))
    if args == spec.args and env == spec.env:
        return spec
    return replace_record(spec, args=args, env=env)


def check_exec(container_id: str, td_dir: pathlib.Path, process: dict[str, Any]) -> None:
    """Refuse ``exec`` of ``process`` into the TD unless its measured policy sets
    ``allow_exec``. ``td_dir`` holds the init-data the TD was registered with."""
    try:
        raw: bytes | None = (td_dir / INIT_DATA_FILE).read_bytes()
    except FileNotFoundError:
        raw = None
    except OSError as e:
        raise PolicyDenied(f"exec into TEE container {container_id} refused: cannot read its "
                           f"init-data: {e.strerror}") from None
    try:
        policy = policy_of(raw)
    except InvalidInput as e:
        raise PolicyDenied(f"exec into TEE container {container_id} refused: {e}") from None
    if not policy.allow_exec:
        args = process.get("args")
        what = " ".join(map(str, args)) if isinstance(args, list) else "a process"
        origin = "no init-data" if raw is None else "its init-data policy"
        raise PolicyDenied(
            f"exec of {what[:200]!r} into TEE container {container_id} refused by the "
            f"execution policy: allow_exec is not set ({origin})")
