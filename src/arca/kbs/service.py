"""The KBS's logic, independent of HTTP: RCAR sessions, attestation, release, administration.

Every refusal is a :class:`KbsProblem` (status chosen in ``problems.STATUS``). The verification
path for ``attest``, in order:

1. the session cookie is authentic and ``challenged`` (unexpired), and ``runtime-data``
   echoes its nonce (Trustee protocol, "Challenge");
2. ``tee-pubkey`` is an acceptable JWK (X25519 or EC P-256 ``ECDH-ES+A256KW``, or RSA >= 2048
   ``RSA-OAEP-256``);
3. expected report data = SHA-384 of the RFC 8785 runtime-data as Trustee and CoCo guests
   bind it (with ``additional-evidence``; the older form without it while that is empty),
   zero-padded to the TEE's field or exact, per TEE (``arca.kbs.evidence_formats``);
   expected init data = init-data digest padded to the TEE's field (when init-data is sent);
4. the TEE's verifier checks signature, chain and both bindings; the KBS re-checks the bound
   values in the returned claims at exact length (defence in depth);
5. the init-data body is checked against the verified evidence's init-data claim and only then
   parsed (:mod:`arca.kbs.initdata`): policies get that document or ``null``, never raw text;
6. the attestation policy maps claims, init-data and reference values to an EAR trust vector;
7. an EAR token is signed; recording the session as ``attested`` is an atomic insert, so a
   nonce is usable exactly once, across workers and replicas (see ``arca.kbs.sessions``).

Policies and reference values are cached for :data:`CACHE_SECONDS`: an admin change is
effective at once in the process that took it and within that time in the others.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from typing import Any

from arca import __version__
from arca.kbs import evidence as ev
from arca.kbs import evidence_formats as formats
from arca.kbs import initdata
from arca.kbs import jwe as kbs_jwe
from arca.kbs.config import KbsConfig
from arca.kbs.metrics import Metrics
from arca.kbs.policy import PolicyEngine, PolicyError, check_policy, default_policy, ear_status
from arca.kbs.problems import KbsProblem, from_error
from arca.kbs.protocol import parse_attestation, parse_request
from arca.kbs.sessions import Challenged, SessionCodec, State, cookie_key, state_of
from arca.kbs.store import AttestedSession, Store, load_kek
from arca.kbs.tokens import TokenError, TokenSigner, load_admin_key, split, verify_admin
from arca.verifier.base import Claims, Expected, Verifier
from arca.wire import kbs_protocol as proto
from arca.wire import tees
from arca.wire.errors import (
    ArcaError,
    BindingMismatch,
    ConfigError,
    InvalidInput,
    WireFormatError,
)

log = logging.getLogger("arca.kbs")

EAT_PROFILE = "tag:github.com,2023:veraison/ear"
VERIFIER_ID = {"developer": "https://github.com/arca-project/arca",
               "build": f"arca-kbs {__version__}"}
#: Accepted protocol versions: 0.4.x (semver-compatible with the 0.4.0 this KBS speaks).
_VERSION = re.compile(r"0\.4\.\d+")
_SEGMENT = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_REF_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
#: Reference values per name: bounded so a policy's data stays small.
MAX_REFERENCE_VALUES = 1024
#: Purge expired sessions at most this often (seconds).
_PURGE_EVERY = 30.0
#: How long policies and reference values read from the database are reused.
CACHE_SECONDS = 1.0
#: Attested sessions remembered per process for the release that follows (see ``__init__``).
ATTESTED_CACHE_SIZE = 4096
#: A JSON escape of a UTF-16 surrogate (``\ud800``-``\udfff``); pairs decode to one
#: character, lone ones are refused (see ``_json``).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def resource_path(path: str) -> str:
    """Validate ``repo/type/tag``: three plain segments, no dot-segments, nothing encoded."""
    parts = path.split("/")
    if len(parts) != 3 or not all(_SEGMENT.fullmatch(p) and p not in (".", "..") for p in parts):
        raise KbsProblem("InvalidRequestPath", f"resource path {path[:200]!r} is not "
                         "repo/type/tag with segments of [A-Za-z0-9_.-]")
    return path


def _check_reference_value(name: Any, values: Any) -> None:
    if not isinstance(name, str) or not _REF_NAME.fullmatch(name):
        raise KbsProblem("SerdeError", "reference value name must match [A-Za-z0-9_.:-]+")
    if (not isinstance(values, list) or len(values) > MAX_REFERENCE_VALUES
            or not all(isinstance(v, str) and len(v) <= 1024 for v in values)):
        raise KbsProblem("SerdeError", f"reference values must be a list of at most "
                         f"{MAX_REFERENCE_VALUES} strings")


def _tee_key(jwk: Any) -> tuple[kbs_jwe.TeeKey, str]:
    """Step 2: the TEE's key and the key-management algorithm to encrypt to it."""
    try:
        return kbs_jwe.tee_key(jwk)
    except kbs_jwe.TeeKeyError as e:
        raise KbsProblem("SerdeError", f"tee-pubkey is not an acceptable JWK: {e}") from None


def encrypt_to(jwk: Any, plaintext: bytes) -> dict[str, str]:
    """Flattened JWE of ``plaintext`` to the TEE key (see :mod:`arca.kbs.jwe`)."""
    try:
        return kbs_jwe.encrypt_to(jwk, plaintext)
    except kbs_jwe.TeeKeyError as e:
        raise KbsProblem("SerdeError", f"tee-pubkey is not an acceptable JWK: {e}") from None


def _json(body: bytes, what: str) -> Any:
    """Parse a request body; anything that is not well-formed I-JSON (RFC 7493) is SerdeError.

    Invalid UTF-8 (overlong forms, stray continuation bytes, encoded surrogates) fails a
    strict decoding. A ``\\uD800``-style escape of a lone UTF-16 surrogate is valid JSON syntax, but
    not a Unicode string (RFC 8259 section 8.2, RFC 7493 section 2.1): Python would carry it
    as a ``str`` that no encoder accepts, so every later ``encode()`` (nonce comparison,
    canonical JSON, TOML, policy input) would fail. Such bodies are refused here, once, for
    every field.
    """
    try:
        # Strict UTF-8 first: json.loads(bytes) would decode with "surrogatepass" (and guess
        # UTF-16/32), letting encoded surrogates through; RFC 8259 section 8.1 says UTF-8.
        text = body.decode("utf-8")
        obj = json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: deeply nested JSON
        raise KbsProblem("SerdeError", f"{what} body is not JSON in UTF-8: {e}") from None
    if _SURROGATE_ESCAPE.search(text):  # rare: only then walk the document
        try:
            json.dumps(obj, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise KbsProblem("SerdeError", f"{what} body holds a lone UTF-16 surrogate escape "
                             "(not a Unicode string: RFC 8259 section 8.2)") from None
    return obj


def _b64_policy(obj: Any, what: str) -> str:
    if not isinstance(obj, dict) or not isinstance(obj.get("policy"), str):
        raise KbsProblem("SerdeError", f"{what} body must be {{\"policy\": <base64>}}")
    try:
        text = base64.b64decode(obj["policy"], validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        try:  # Trustee clients send URL-safe base64 without padding
            raw = obj["policy"]
            text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise KbsProblem("SerdeError", f"{what} policy is not base64 UTF-8") from None
    try:
        check_policy(text)
    except InvalidInput as e:
        raise KbsProblem("SerdeError", f"{what}: {e}") from None
    return text


class KbsService:
    def __init__(self, cfg: KbsConfig, *, verifiers: dict[str, Verifier] | None = None) -> None:
        self.cfg = cfg
        self.store = Store(cfg.db_url, cfg.data_dir, load_kek(cfg.kek_path))
        self.signer = TokenSigner.from_pem(
            self.store.get_or_create_secret("token-key", TokenSigner.generate_pem))
        self.verifiers = ev.build_verifiers(cfg) if verifiers is None else verifiers
        self.admin_key = None
        if cfg.admin_public_key:
            try:
                with open(cfg.admin_public_key, "rb") as f:
                    self.admin_key = load_admin_key(f.read())
            except (OSError, ValueError) as e:
                raise ConfigError(f"admin public key {cfg.admin_public_key}: {e}") from None
        self.policies = PolicyEngine()
        self.metrics = Metrics()
        self.sessions = SessionCodec(cookie_key(self.store.kek))
        self._last_purge = 0.0
        self._cache: dict[str, tuple[float, Any]] = {}
        # Sessions this process attested: id -> (row expiry, token claims). A release on the
        # same keep-alive connection (hence the same worker) then needs neither the database
        # nor a signature check: the row never changes after its insert and we signed the
        # claims ourselves. Other workers and replicas take the database path.
        self._attested: dict[str, tuple[float, dict[str, Any]]] = {}

    def _cached(self, name: str, load: Any) -> Any:
        hit = self._cache.get(name)
        now = time.monotonic()
        if hit is None or now - hit[0] > CACHE_SECONDS:
            hit = self._cache[name] = (now, load())
        return hit[1]

    def _invalidate(self) -> None:
        self._cache.clear()

    def close(self) -> None:
        self.store.close()

    # -- protocol ----------------------------------------------------------------------------
    def auth(self, body: bytes) -> tuple[proto.Challenge, str]:
        """Start a session: the challenge and the ``kbs-session-id`` cookie value."""
        try:
            req = parse_request(_json(body, "auth"))
        except WireFormatError as e:
            raise KbsProblem("SerdeError", f"auth: {e}") from None
        if not _VERSION.fullmatch(req.version):
            raise KbsProblem("AttestationError", f"protocol version {req.version[:32]!r} is "
                             f"incompatible with {proto.PROTOCOL_VERSION}")
        if req.tee not in self.verifiers:
            raise KbsProblem("AttestationError",
                             f"tee {req.tee[:32]!r} is not accepted by this KBS "
                             f"(enabled: {', '.join(sorted(self.verifiers)) or 'none'})")
        now = time.time()
        if now - self._last_purge > _PURGE_EVERY:
            self._last_purge = now
            self.store.purge_sessions()
        nonce = base64.b64encode(secrets.token_bytes(32)).decode()
        cookie, _ = self.sessions.issue(req.tee, nonce, self.cfg.session_timeout)
        return proto.Challenge(nonce, {}), cookie

    def attest(self, cookie: str | None, body: bytes) -> str:
        started = time.perf_counter()
        session = self.sessions.open(cookie)
        tee = session.tee if session else "unknown"  # authentic, so one of ours
        try:
            token = self._attest(cookie, session, body)
        except KbsProblem as p:
            self.metrics.attestation(tee, p.name, time.perf_counter() - started)
            raise
        self.metrics.attestation(tee, "ok", time.perf_counter() - started)
        return token

    def _attest(self, cookie: str | None, session: Challenged | None, body: bytes) -> str:
        """``session`` is ``self.sessions.open(cookie)``."""
        if not cookie:
            raise KbsProblem("AttestationError", f"no {proto.SESSION_COOKIE} cookie: call auth")
        state = state_of(session, None)
        if session is None or state is not State.CHALLENGED:  # step 1
            raise KbsProblem("AttestationError", "session is unknown, forged or expired")
        try:
            att = parse_attestation(_json(body, "attest"))
        except WireFormatError as e:
            raise KbsProblem("SerdeError", f"attest: {e}") from None
        if not hmac.compare_digest(str(att.runtime_data["nonce"]).encode(), session.nonce.encode()):
            raise KbsProblem("AttestationError", "runtime-data nonce is not this session's")
        try:
            _tee_key(att.runtime_data["tee-pubkey"])  # step 2
            token, claims = self._appraise(session, att)
        except KbsProblem:
            # A failed attempt spends the nonce too (a row without a token is "expired").
            self.store.record_attested(AttestedSession(session.sid, session.tee, session.nonce,
                                                       session.expires_at, ""))
            raise
        expires = time.time() + self.cfg.session_timeout
        if not self.store.record_attested(AttestedSession(session.sid, session.tee,
                                                          session.nonce, expires, token)):
            raise KbsProblem("AttestationError", "session already attested: nonce replayed")
        if len(self._attested) >= ATTESTED_CACHE_SIZE:
            self._attested.pop(next(iter(self._attested)), None)
        self._attested[session.sid] = (expires, claims)
        return token

    def _appraise(self, session: Challenged, att: proto.Attestation
                  ) -> tuple[str, dict[str, Any]]:
        """Steps 3 to 7: the signed EAR token and its claims."""
        tee = session.tee
        verifier = self.verifiers.get(tee)
        if verifier is None:  # configuration changed between auth and attest
            raise KbsProblem("AttestationError", f"tee {tee} is not accepted by this KBS")
        try:  # step 3
            try:
                candidates = formats.report_data_candidates(
                    tee, att.runtime_data, att.additional_evidence,
                    legacy_first=tees.get(tee).legacy_runtime_data)
            except (TypeError, ValueError) as e:
                raise WireFormatError(f"runtime-data has no canonical JSON form: {e}") from None
            init_hash = None
            if att.init_data is not None:
                init_hash = initdata.expected_hash(att.init_data.body, ev.INIT_DATA_FIELD[tee])
            raw = ev.evidence_bytes(tee, att.primary_evidence)
            claims, report_data = self._verify_bound(verifier, raw, candidates, init_hash)
            replayed = formats.event_log_claims(tee, att.primary_evidence, claims.values)
            if replayed is not None:  # an event log, replayed to the verified RTMRs
                claims = dataclasses.replace(claims, values={**claims.values, "ccel": replayed})
            self._recheck(claims.values, "report_data", report_data)
            init_doc = None  # step 5: the policy sees init-data only once it is bound
            if att.init_data is not None and init_hash is not None:
                init_doc = initdata.bound_document(att.init_data.body, init_hash, claims.values)
        except WireFormatError as e:
            raise KbsProblem("AttestationError", f"{tee} evidence is malformed: {e}") from None
        except ArcaError as e:
            raise from_error(e, during="attest") from None
        except (ValueError, TypeError) as e:  # a verifier's own parse errors
            raise KbsProblem("AttestationError", f"{tee} evidence rejected: {e}") from None
        claim_doc = claims.to_dict()
        policy_text, policy_id = self._policy("attestation")
        try:  # step 6
            vector = self.policies.trust_vector(policy_text, self._policy_data(), {
                "tee": tee, "claims": claim_doc, "init_data": init_doc})
        except PolicyError as e:
            raise KbsProblem("PolicyEngine", str(e)) from None
        now = int(time.time())
        ear: dict[str, Any] = {  # step 7
            "eat_profile": EAT_PROFILE,
            "iat": now,
            "exp": now + self.cfg.token_lifetime,
            "iss": self.cfg.issuer,
            "jti": secrets.token_urlsafe(16),
            "ear.verifier-id": VERIFIER_ID,
            "submods": {"cpu0": {
                "ear.status": ear_status(vector),
                "ear.trustworthiness-vector": vector,
                "ear.appraisal-policy-id": policy_id,
                "ear.veraison.annotated-evidence": claim_doc,
            }},
            "tee-pubkey": att.runtime_data["tee-pubkey"],
        }
        return self.signer.sign(ear), ear

    @staticmethod
    def _verify_bound(verifier: Verifier, raw: bytes, candidates: list[bytes],
                      init_hash: bytes | None) -> tuple[Claims, bytes]:
        """Step 4: full verification against each accepted report-data value in turn (see
        :func:`arca.kbs.evidence_formats.report_data_candidates`); only a report-data
        mismatch moves on to the next value, any other refusal is final."""
        for i, report_data in enumerate(candidates):
            try:
                return verifier.verify(raw, expected=Expected(
                    report_data=report_data, init_data_hash=init_hash)), report_data
            except BindingMismatch as e:
                if e.fields.get("field") != "report_data" or i == len(candidates) - 1:
                    raise
        raise AssertionError("no report-data candidates")

    @staticmethod
    def _recheck(values: dict[str, Any], name: str, want: bytes) -> None:
        got = values.get(name)
        if not isinstance(got, str) or not hmac.compare_digest(got.encode(), want.hex().encode()):
            raise BindingMismatch(f"verified claims carry another {name} than expected",
                                  field=name, expected=want.hex(), actual=str(got))

    def _policy(self, name: str) -> tuple[str, str]:
        text = self._cached("policy:" + name, lambda: self.store.get_policy(name))
        if text is None:
            return default_policy(name), "arca-default"
        return text, "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    def _policy_data(self) -> str:
        """The policies' ``data`` document, as the JSON text the policy engine keys on."""
        # "plugin": Trustee's resource policies test data.plugin == "resource"
        # (kbs/sample_policies/allow_all.rego); Arca's only plugin is the resource store.
        data: str = self._cached("data", lambda: json.dumps(
            {"reference": self.store.reference_values(), "plugin": "resource",
             "config": {"allow_sim": "sim" in self.verifiers,
                        "allow_sample": self.cfg.insecure_allow_sample}}, sort_keys=True))
        return data

    def token_claims(self, bearer: str | None, cookie: str | None) -> dict[str, Any]:
        """Who is asking: the claims of a verified token from the header or the session."""
        token = bearer
        if token is None and cookie:
            session = self.sessions.open(cookie)
            hit = self._attested.get(session.sid) if session else None
            if hit is not None:
                now = time.time()
                if hit[0] > now and hit[1]["exp"] > now:
                    return hit[1]
            row = self.store.get_attested(session.sid) if session else None
            until = (row.expires_at if row.token else 0.0) if row else None
            if state_of(session, until) is not State.ATTESTED:
                raise KbsProblem("TokenNotFound", "session is unknown, expired or not attested")
            assert row is not None
            token = row.token
        if token is None:
            raise KbsProblem("TokenNotFound", "no attestation token (Bearer) or session cookie")
        try:
            return self.signer.verify(token)
        except TokenError as e:
            raise KbsProblem("TokenVerifierError", str(e)) from None

    def release(self, path: str, bearer: str | None, sid: str | None) -> dict[str, str]:
        """Resource policy, then the resource as JWE to the token's ``tee-pubkey``."""
        started = time.perf_counter()
        try:
            out = self._release(resource_path(path), bearer, sid)
        except KbsProblem as p:
            self.metrics.release(p.name, time.perf_counter() - started)
            raise
        self.metrics.release("ok", time.perf_counter() - started)
        return out

    def _release(self, path: str, bearer: str | None, sid: str | None) -> dict[str, str]:
        claims = self.token_claims(bearer, sid)
        text, _ = self._policy("resource")
        try:
            allowed = self.policies.allow(text, self._policy_data(),
                                          {**claims, "resource-path": path})
        except PolicyError as e:
            raise KbsProblem("PolicyEngine", str(e)) from None
        if not allowed:
            from arca.kbs.refusal import denial_detail  # refusals only

            raise KbsProblem("PolicyDeny", denial_detail(path, claims,
                                                         self.store.reference_values()))
        data = self.store.get_resource(path)
        if data is None:
            raise KbsProblem("ResourceNotFound", f"no resource {path}")
        key = claims.get("tee-pubkey")
        if not isinstance(key, dict):
            raise KbsProblem("TokenVerifierError", "token carries no tee-pubkey")
        return encrypt_to(key, data)

    # -- administration ----------------------------------------------------------------------
    @staticmethod
    def is_admin_token(bearer: str | None) -> bool:
        if not bearer:
            return False
        try:
            return split(bearer)[0].get("alg") == "EdDSA"
        except TokenError:
            return False

    def check_admin(self, bearer: str | None, path: str | None = None) -> None:
        """An admin token signed by the admin key, within its lifetime bound; then, when
        configured (Trustee config file), its ``iss``, ``aud`` and the ``role`` ACL for
        ``path`` (Trustee ``kbs/src/admin/authentication/bearer_jwt.rs``,
        ``kbs/src/admin/authorization/regex_acl.rs``)."""
        if self.admin_key is None:
            raise KbsProblem("AdminAuth", "admin API disabled: no admin public key configured")
        if not bearer:
            raise KbsProblem("AdminAuth", "admin token (Authorization: Bearer) missing")
        try:
            claims = verify_admin(bearer, self.admin_key,
                                  max_lifetime=self.cfg.admin_token_max_lifetime)
        except TokenError as e:
            raise KbsProblem("AdminAuth", str(e)) from None
        cfg = self.cfg
        if cfg.admin_token_issuer is not None and claims.get("iss") != cfg.admin_token_issuer:
            raise KbsProblem("AdminAuth", "admin token issuer is not the configured one")
        if cfg.admin_token_audience is not None:
            aud = claims.get("aud")
            auds = aud if isinstance(aud, list) else [aud]
            if cfg.admin_token_audience not in auds:
                raise KbsProblem("AdminAuth", "admin token audience is not the configured one")
        if cfg.admin_acls is not None:  # configured, even empty: only what a rule allows
            role = claims.get("role")
            # fullmatch: the rules are anchored (^/kbs...$, checked at load) and Rust's "$",
            # unlike Python's, never matches before a trailing newline
            if not any(role == r and path is not None and re.fullmatch(rx, path)
                       for r, rx in cfg.admin_acls):
                raise KbsProblem("AdminAuth", f"admin token role {str(role)[:64]!r} may not "
                                 f"call {str(path)[:200]}")

    def admin_get_resource(self, path: str) -> bytes:
        data = self.store.get_resource(resource_path(path))
        if data is None:
            raise KbsProblem("ResourceNotFound", f"no resource {path}")
        return data

    def admin_set_resource(self, path: str, data: bytes) -> None:
        self.store.put_resource(resource_path(path), data)

    def admin_delete_resource(self, path: str) -> None:
        if not self.store.delete_resource(resource_path(path)):
            raise KbsProblem("ResourceNotFound", f"no resource {path}")

    def admin_set_resource_policy(self, body: bytes) -> None:
        self.store.put_policy("resource", _b64_policy(_json(body, "resource-policy"),
                                                      "resource-policy"))
        self._invalidate()

    def admin_set_attestation_policy(self, body: bytes) -> None:
        obj = _json(body, "attestation-policy")
        if isinstance(obj, dict) and obj.get("type", "rego") != "rego":
            raise KbsProblem("SerdeError", "attestation-policy type must be rego")
        self.store.put_policy("attestation", _b64_policy(obj, "attestation-policy"))
        self._invalidate()

    def admin_get_policy(self, name: str) -> dict[str, str]:
        text, policy_id = self._policy(name)
        return {"policy": base64.b64encode(text.encode()).decode(), "policy_id": policy_id}

    def admin_set_reference_value(self, body: bytes) -> None:
        obj = _json(body, "reference-value")
        if not isinstance(obj, dict) or set(obj) != {"name", "values"}:
            raise KbsProblem("SerdeError", "reference-value body must be {\"name\", \"values\"}")
        name, values = obj["name"], obj["values"]
        _check_reference_value(name, values)
        self.store.put_reference_value(name, values)
        self._invalidate()

    def admin_register_reference_value(self, body: bytes) -> None:
        """Trustee's RVPS registration message ``{"version", "type", "payload"}`` with the
        ``sample`` extractor: ``payload`` = base64 of ``{"<name>": <value or list>}``
        (Trustee ``rvps/src/extractors/sample/mod.rs``; what ``kbs-client config
        set-sample-reference-value`` sends, ``tools/kbs-client/src/lib.rs`` ``set_sample_rv``).
        Values must be strings: Arca's claims are strings (hex, decimal)."""
        obj = _json(body, "reference-value")
        if not isinstance(obj, dict) or set(obj) != {"version", "type", "payload"}:
            raise KbsProblem("SerdeError", "reference-value body must be {\"version\", "
                             "\"type\", \"payload\"} (Trustee RVPS message)")
        if obj["version"] != "0.1.0":
            raise KbsProblem("SerdeError", f"RVPS message version {str(obj['version'])[:32]!r}"
                             " is not 0.1.0")
        if obj["type"] != "sample":
            raise KbsProblem("SerdeError", f"RVPS provenance type {str(obj['type'])[:32]!r} "
                             "is not supported (only sample)")
        try:
            payload = json.loads(base64.b64decode(str(obj["payload"]), validate=True))
        except (binascii.Error, ValueError, RecursionError):
            raise KbsProblem("SerdeError", "RVPS payload is not base64 of a JSON object"
                             ) from None
        if not isinstance(payload, dict) or not payload:
            raise KbsProblem("SerdeError", "RVPS payload must be a non-empty JSON object")
        pairs = [(name, value if isinstance(value, list) else [value])
                 for name, value in payload.items()]
        for name, values in pairs:  # all checked before any is stored: never half a message
            if not all(isinstance(v, str) for v in values):
                raise KbsProblem("SerdeError", f"reference value {name[:128]!r} must be a "
                                 "string or a list of strings (Arca's claims are strings)")
            _check_reference_value(name, values)
        for name, values in pairs:
            self.store.put_reference_value(name, values)
        self._invalidate()

    def admin_get_reference_value(self, name: str) -> list[str]:
        """``GET /kbs/v0/reference-value/<name>`` (Trustee ``kbs/src/api_server.rs``)."""
        values = self.store.reference_values().get(name)
        if values is None:
            raise KbsProblem("ResourceNotFound", f"no reference value {name[:128]}")
        return list(values)

    def admin_delete_reference_value(self, name: str) -> None:
        deleted = self.store.delete_reference_value(name)
        self._invalidate()
        if not deleted:
            raise KbsProblem("ResourceNotFound", f"no reference value {name[:128]}")
