"""RCAR sessions as an explicit state machine: ``challenged -> attested -> expired``.

* ``challenged``: after ``auth``. Nothing is stored: the ``kbs-session-id`` cookie itself
  carries session id, TEE, nonce and expiry, authenticated with HMAC-SHA256 under a key derived
  from the key-encryption key (so every replica sharing the KEK accepts it, and any worker can
  serve any step).
* ``attested``: after a successful ``attest``, one database row keyed by the session id holds
  the token. Inserting that row is the single-use check: a second attestation of the same
  session (a replayed nonce) collides on the primary key and is refused.
* ``expired``: when the cookie's or the row's time has passed (default 5 minutes), or after
  a failed attestation (its row has no token: the nonce is spent either way); rows are purged
  lazily.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: Longest cookie value accepted (a real one is about 200 characters).
MAX_COOKIE_CHARS = 1024


class State(enum.Enum):
    CHALLENGED = "challenged"
    ATTESTED = "attested"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Challenged:
    sid: str
    tee: str
    nonce: str
    expires_at: float


def cookie_key(kek: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, None, b"arca-kbs session cookie v1").derive(kek)


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SessionCodec:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, payload: str) -> str:
        return _b64u(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, tee: str, nonce: str, timeout: float) -> tuple[str, Challenged]:
        c = Challenged(secrets.token_urlsafe(24), tee, nonce, time.time() + timeout)
        payload = _b64u(json.dumps([c.sid, c.tee, c.nonce, c.expires_at]).encode())
        return f"{payload}.{self._mac(payload)}", c

    def open(self, cookie: str | None) -> Challenged | None:
        """The session a cookie names, or ``None`` if it is absent, malformed or forged."""
        if not cookie or len(cookie) > MAX_COOKIE_CHARS or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return None
        try:
            sid, tee, nonce, exp = json.loads(base64.urlsafe_b64decode(payload + "=="))
        except (ValueError, TypeError, binascii.Error):
            return None
        return Challenged(str(sid), str(tee), str(nonce), float(exp))


def state_of(challenged: Challenged | None, attested_until: float | None,
             now: float | None = None) -> State:
    """The state of a session from its cookie and its row (``None`` when there is none)."""
    now = time.time() if now is None else now
    if challenged is None:
        return State.EXPIRED
    if attested_until is not None:
        return State.ATTESTED if attested_until > now else State.EXPIRED
    return State.CHALLENGED if challenged.expires_at > now else State.EXPIRED
