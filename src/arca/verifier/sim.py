"""Verifier for ``sim`` evidence (Arca's simulated TEE, :mod:`arca.wire.simreport`).

``sim`` evidence proves only that the holder of a sim platform key — the host that runs the
sim daemon — vouched for a TD. It protects TDs from each other, never from that host, which is
why a relying party accepts it only for sim roots it configured explicitly (deny by default:
no trusted root, no verifier).

Steps of :meth:`SimVerifier.verify`, each failing with its own typed error:

1. parse the evidence document and its report (``MalformedEvidence``);
2. the certificate chain: leaf = platform certificate; every certificate signed by the next;
   every issuer a CA; the last one is, or is directly issued by, a trusted root
   (``ChainInvalid`` / ``UntrustedRoot``); each valid at ``at`` (``Expired``);
3. the platform key is ECDSA P-384 and signs the exact report bytes with SHA-384
   (``SignatureInvalid``) — nothing is re-serialized before checking;
4. report data and init-data hash equal the expected values at exact length, compared in
   constant time (``BindingMismatch``).

What it does not do: judge the measurement, the SVN or the debug flag (policy does).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import pathlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from arca.errors import (
    BindingMismatch,
    ChainInvalid,
    ConfigError,
    Expired,
    MalformedEvidence,
    SignatureInvalid,
    UntrustedRoot,
    WireFormatError,
)
from arca.verifier.base import Claims, Expected, VerifierOptions
from arca.wire.simreport import INIT_DATA_HASH_SIZE, REPORT_DATA_SIZE, SimEvidence, SimReport

TEE = "sim"
#: The ``vm`` backend's reports: the sim platform plays the VM's security processor.
VM_TEE = "vm"
#: Platform certificate + at most two intermediates + root: a longer chain is not ours and
#: only costs signature checks.
MAX_CHAIN_LENGTH = 4
#: A PEM certificate of a P-384 key is under 1 KiB; bigger entries are refused before parsing.
MAX_CERT_PEM_BYTES = 16 * 1024

#: Verified chains remembered per verifier (a platform has one chain; a fleet has a few).
CHAIN_CACHE_SIZE = 256

RootInput = x509.Certificate | bytes | str


@dataclass(frozen=True)
class _Window:
    """A validity period still to check at each use of a cached chain, and what to say if
    ``at`` falls outside it."""

    not_before: dt.datetime
    not_after: dt.datetime
    index: int | None  # position in cert_chain; None for the issuing trusted root
    subject: str


@dataclass(frozen=True)
class _VerifiedChain:
    """What remains of a chain whose signatures, CA flags and root were verified once."""

    windows: tuple[_Window, ...]
    platform_key: ec.EllipticCurvePublicKey


def _chain_digest(chain: Iterable[str]) -> bytes:
    h = hashlib.sha256()
    for pem in chain:  # length-prefixed, so entry boundaries are part of the digest
        raw = pem.encode()
        h.update(len(raw).to_bytes(8, "big"))
        h.update(raw)
    return h.digest()


def _load_root(root: RootInput) -> x509.Certificate:
    if isinstance(root, x509.Certificate):
        return root
    data = root.encode() if isinstance(root, str) else root
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise ConfigError(f"trusted sim root is not a PEM certificate: {e}") from None


class SimVerifier:
    """Verifies ``sim`` evidence against explicitly configured sim roots; with ``tee="vm"``
    the sim platform's reports about VMs it measured (same format and keys, a different TEE in
    the signed report: a report for one is never accepted as the other)."""

    tee = TEE

    def __init__(self, trusted_roots: Iterable[RootInput], tee: str = TEE) -> None:
        if tee not in (TEE, VM_TEE):
            raise ValueError(f"the sim platform signs sim and vm reports, not {tee!r}")
        self.tee = tee
        self.trusted_roots = tuple(_load_root(r) for r in trusted_roots)
        if not self.trusted_roots:
            raise ConfigError("the sim verifier needs at least one trusted sim root")
        # Chain verification (parsing, CA flags, signatures up to a root) is the costly part
        # of a verification and depends only on the chain's bytes and our fixed roots, so it is
        # done once per distinct chain (keyed by its SHA-256); validity times are still checked
        # at every use, and failed chains are never remembered.
        self._chains: OrderedDict[bytes, _VerifiedChain] = OrderedDict()
        self._chains_lock = threading.Lock()

    def verify(
        self,
        evidence: bytes,
        *,
        expected: Expected = Expected(),  # noqa: B008 - frozen, immutable default
        at: dt.datetime | None = None,
    ) -> Claims:
        at = at or dt.datetime.now(dt.UTC)
        if at.tzinfo is None:
            raise ValueError("at must be timezone-aware")
        # 1. Parse.
        try:
            ev = SimEvidence.from_bytes(evidence)
            report = ev.report()
        except WireFormatError as e:
            raise MalformedEvidence(str(e), tee=TEE) from None
        if len(ev.cert_chain) > MAX_CHAIN_LENGTH:
            raise MalformedEvidence(f"certificate chain longer than {MAX_CHAIN_LENGTH}", tee=TEE,
                                    field="cert_chain")
        # 2. Chain to a trusted root, validity at ``at``.
        key = self._verified_chain(ev.cert_chain, at)
        # 3. Signature over the exact report bytes.
        try:
            key.verify(ev.signature, ev.report_bytes, ec.ECDSA(hashes.SHA384()))
        except InvalidSignature:
            raise SignatureInvalid("report signature does not verify with the platform key",
                                   tee=TEE, field="signature") from None
        # 4. Bindings.
        _binding("report_data", expected.report_data, report.report_data, REPORT_DATA_SIZE)
        _binding("init_data", expected.init_data_hash, report.init_data_hash, INIT_DATA_HASH_SIZE)
        if report.tee != self.tee:
            raise BindingMismatch(f"report is for tee {report.tee!r}, not {self.tee!r}",
                                  tee=self.tee, field="tee", expected=self.tee,
                                  actual=report.tee)
        return claims_of(report)

    def _verified_chain(self, pems: tuple[str, ...], at: dt.datetime
                        ) -> ec.EllipticCurvePublicKey:
        """The platform key of a chain that leads to a trusted root and is valid at ``at``."""
        digest = _chain_digest(pems)
        with self._chains_lock:
            hit = self._chains.get(digest)
            if hit is not None:
                self._chains.move_to_end(digest)
        if hit is None:
            hit = self._verify_chain(pems, at)
            with self._chains_lock:
                self._chains[digest] = hit
                while len(self._chains) > CHAIN_CACHE_SIZE:
                    self._chains.popitem(last=False)
        for w in hit.windows:
            if not w.not_before <= at <= w.not_after:
                if w.index is None:
                    raise Expired("trusted sim root is not valid at " + at.isoformat(), tee=TEE)
                raise Expired(f"cert_chain[{w.index}] ({w.subject}) is not valid at "
                              f"{at.isoformat()}", tee=TEE, field=f"cert_chain[{w.index}]")
        return hit.platform_key

    def _verify_chain(self, pems: tuple[str, ...], at: dt.datetime) -> _VerifiedChain:
        chain = [self._parse_cert(pem, i) for i, pem in enumerate(pems)]
        issuing_root = self._check_chain(chain, at)
        key = chain[0].public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
            raise SignatureInvalid("platform key is not ECDSA P-384", tee=TEE,
                                   field="cert_chain[0]")
        windows = [_Window(c.not_valid_before_utc, c.not_valid_after_utc, i,
                           c.subject.rfc4514_string()) for i, c in enumerate(chain)]
        if issuing_root is not None:
            windows.append(_Window(issuing_root.not_valid_before_utc,
                                   issuing_root.not_valid_after_utc, None, ""))
        return _VerifiedChain(tuple(windows), key)

    @staticmethod
    def _parse_cert(pem: str, index: int) -> x509.Certificate:
        if len(pem) > MAX_CERT_PEM_BYTES:
            raise MalformedEvidence(f"cert_chain[{index}] exceeds {MAX_CERT_PEM_BYTES} bytes",
                                    tee=TEE, field=f"cert_chain[{index}]")
        try:
            cert = x509.load_pem_x509_certificate(pem.encode())
            # cryptography parses some fields lazily; parse everything the checks read now,
            # so a malformed field is "malformed evidence", not an error deep in a check.
            cert.subject, cert.issuer, cert.extensions, cert.public_key()  # noqa: B018
            cert.not_valid_before_utc, cert.not_valid_after_utc  # noqa: B018
            return cert
        except (ValueError, TypeError, x509.InvalidVersion, x509.DuplicateExtension,
                x509.UnsupportedGeneralNameType, UnsupportedAlgorithm) as e:
            raise MalformedEvidence(f"cert_chain[{index}] is not a valid certificate: {e}",
                                    tee=TEE, field=f"cert_chain[{index}]") from None

    def _check_chain(self, chain: list[x509.Certificate], at: dt.datetime
                     ) -> x509.Certificate | None:
        """Check the chain; the trusted root that issued its last certificate, or ``None``
        when that certificate is itself a trusted root."""
        for i, cert in enumerate(chain):
            if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
                raise Expired(f"cert_chain[{i}] ({cert.subject.rfc4514_string()}) is not valid "
                              f"at {at.isoformat()}", tee=TEE, field=f"cert_chain[{i}]")
        for i in range(len(chain) - 1):
            _issued_by(chain[i], chain[i + 1], f"cert_chain[{i}]")
        last = chain[-1]
        for root in self.trusted_roots:
            if last == root:
                return None
        for root in self.trusted_roots:
            if last.issuer == root.subject:
                if not root.not_valid_before_utc <= at <= root.not_valid_after_utc:
                    raise Expired("trusted sim root is not valid at " + at.isoformat(), tee=TEE)
                _issued_by(last, root, f"cert_chain[{len(chain) - 1}]")
                return root
        raise UntrustedRoot(
            f"certificate chain ends in {last.subject.rfc4514_string()}, not a trusted sim root",
            tee=TEE, field="cert_chain")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate, where: str) -> None:
    try:
        bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = bc.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ChainInvalid(f"issuer of {where} is not a CA certificate", tee=TEE, field=where)
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise ChainInvalid(f"{where} is not signed by the next certificate: {e or 'bad signature'}",
                           tee=TEE, field=where) from None


def _binding(name: str, want: bytes | None, got: bytes, size: int) -> None:
    if want is None:
        return
    if len(want) != size:
        raise ValueError(f"expected {name} must be exactly {size} bytes, got {len(want)}")
    if not hmac.compare_digest(want, got):
        raise BindingMismatch(f"{name} in the report does not match the expected value",
                              tee=TEE, field=name, expected=want.hex(), actual=got.hex())


def claims_of(report: SimReport) -> Claims:
    return Claims(
        tee=report.tee,
        values={
            "measurement": report.measurement.hex(),
            "init_data": report.init_data_hash.hex(),
            "report_data": report.report_data.hex(),
            "td_id": report.td_id,
            "platform_id": report.platform_id,
            "svn": report.svn,
        },
        debug=report.debug,
        format_version=report.version,
    )


def from_options(options: VerifierOptions) -> SimVerifier:
    """Registry factory: ``options.extra["sim_root"]`` is a PEM file path (or a list of them)."""
    roots = options.extra.get("sim_root")
    if not roots:
        raise ConfigError("sim evidence is accepted only with a trusted sim root (--sim-root)")
    paths = [roots] if isinstance(roots, str | pathlib.Path) else list(roots)
    pems = []
    for p in paths:
        try:
            pems.append(pathlib.Path(p).read_bytes())
        except OSError as e:
            raise ConfigError(f"cannot read sim root {p}: {e.strerror}") from None
    return SimVerifier(pems)
