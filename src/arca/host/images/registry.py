"""A client for the OCI distribution API (pull side only), on httpx.

Authentication follows the registry's ``WWW-Authenticate`` challenge: ``Basic`` sends the
credentials; ``Bearer`` fetches a token from the named realm (anonymously, or with the
credentials) for the requested scope and retries. TLS is verified (against ``ca_file`` when
given); nothing here ever disables certificate checks.

Plain HTTP, and where credentials may go:

- ``plain_http=True`` (the registry was named ``http://HOST/...`` and ``--insecure`` given):
  plain HTTP from the start, credentials included; the user asked for exactly that.
- ``insecure=True`` alone: HTTPS is tried first and *any* failure to connect over TLS falls
  back to plain HTTP, as for a local ``docker-registry``. That failure may be an attacker on the
  path breaking TLS on purpose, so after such a fallback no credentials are sent: a ``Basic``
  challenge is refused, a ``Bearer`` token is fetched anonymously (enough for public images),
  and the error says why and what to do. The content itself stays safe either way: every blob
  is verified by digest.
- Credentials go to a token realm only over HTTPS (or when plain HTTP was asked for).

Everything received is untrusted: callers verify digests (:mod:`.store`) and parse documents
(:mod:`.manifest`). Not here: retries of broken transfers (a broken transfer is an error; the
store stays consistent and the pull can be repeated).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from arca.host.images.digest import Digest
from arca.host.images.errors import (
    BadManifest,
    RegistryError,
    RegistryNotFound,
    RegistryUnauthorized,
    RegistryUnavailable,
)
from arca.host.images.manifest import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
)

log = logging.getLogger(__name__)

ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
#: Connect/read timeout per request; a stalled layer download fails after this much silence.
TIMEOUT_S = 60.0
CHUNK = 1 << 20
_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    @classmethod
    def parse(cls, creds: str) -> Credentials:
        user, sep, pw = creds.partition(":")
        if not sep or not user:
            raise RegistryError("credentials must be given as USER:PASSWORD")
        return cls(user, pw)


class RegistryClient:
    def __init__(self, host: str, *, credentials: Credentials | None = None,
                 insecure: bool = False, ca_file: str | None = None,
                 plain_http: bool = False) -> None:
        if plain_http and not insecure:
            raise RegistryError(f"registry http://{host}: plain HTTP was asked for; confirm "
                                "with --insecure (transfers and credentials travel in clear)")
        self.host = host
        self.credentials = credentials
        self.insecure = insecure
        self.plain_http = plain_http
        #: why plain HTTP is in use without having been asked for (the TLS error), if it is
        self._fallback_reason: str | None = None
        #: why the credentials were not sent, for the error when access is then denied
        self._withheld: str | None = None
        verify: ssl.SSLContext | bool = True
        if ca_file:
            verify = ssl.create_default_context(cafile=ca_file)
        self._http = httpx.Client(verify=verify, timeout=TIMEOUT_S, follow_redirects=True)
        self._base: str | None = None
        self._auth: str | None = None  # Authorization header value once negotiated

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------
    def _base_url(self) -> str:
        if self._base is None and self.plain_http:
            log.warning("registry %s: plain HTTP as asked (http://, --insecure): transfers "
                        "and credentials are not protected", self.host)
            self._base = f"http://{self.host}"
        if self._base is None:
            try:
                self._http.get(f"https://{self.host}/v2/")
                self._base = f"https://{self.host}"
            except httpx.ConnectError as e:  # includes every TLS handshake failure
                if not self.insecure:
                    raise RegistryUnavailable(
                        f"registry {self.host}: cannot connect over HTTPS: {e} "
                        "(a plain-HTTP registry needs --insecure)") from None
                log.warning("registry %s: HTTPS failed (%s), plain HTTP (--insecure): "
                            "transfers are not protected, no credentials will be sent; "
                            "content is still verified by digest", self.host, e)
                self._fallback_reason = str(e) or type(e).__name__
                self._base = f"http://{self.host}"
            except httpx.HTTPError as e:
                raise RegistryUnavailable(f"registry {self.host}: {e}") from None
        return self._base

    def _credentials_for(self, url: str) -> Credentials | None:
        """The credentials if they may travel to ``url``, else None (reason in _withheld)."""
        if self.credentials is None or self.plain_http:
            return self.credentials
        if self._fallback_reason is not None:
            self._withheld = (
                f"credentials were not sent: {self.host} answered only over plain HTTP after "
                f"HTTPS failed ({self._fallback_reason}), which is what an attacker on the "
                "path breaking TLS would cause. Fix the registry's TLS (or pass --ca-cert), "
                f"or if plain HTTP is really intended, name it: http://{self.host}/REPOSITORY")
            return None
        if not url.lower().startswith("https://"):
            self._withheld = (
                f"credentials were not sent to the token service {url[:100]!r}: it is not "
                f"HTTPS (name the registry as http://{self.host}/... with --insecure to allow "
                "credentials over plain HTTP)")
            return None
        return self.credentials

    def _authenticate(self, resp: httpx.Response) -> None:
        challenge = resp.headers.get("www-authenticate", "")
        scheme, _, rest = challenge.partition(" ")
        params = dict(_PARAM.findall(rest))
        if scheme.lower() == "basic":
            creds = self._credentials_for(self._base or f"https://{self.host}")
            if creds is None and self._withheld:
                raise RegistryUnauthorized(f"registry {self.host} requires credentials (Basic) and "
                                    f"{self._withheld}")
            if creds is None:
                raise RegistryUnauthorized(f"registry {self.host} requires credentials (--creds)")
            raw = f"{creds.username}:{creds.password}".encode()
            self._auth = "Basic " + base64.b64encode(raw).decode()
            return
        if scheme.lower() != "bearer" or "realm" not in params:
            raise RegistryError(f"registry {self.host}: unsupported authentication "
                                f"challenge {challenge[:100]!r}")
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        creds = self._credentials_for(params["realm"])
        auth = httpx.BasicAuth(creds.username, creds.password) if creds else None
        try:
            tr = self._http.get(params["realm"], params=query, auth=auth)
        except httpx.HTTPError as e:
            raise RegistryUnavailable(f"token service {params['realm']}: {e}") from None
        if tr.status_code != 200:
            raise RegistryUnauthorized(f"registry {self.host}: token request refused "
                                f"(HTTP {tr.status_code}): "
                                f"{self._withheld or 'check the credentials'}")
        try:
            body = tr.json()
            token = body.get("token") or body.get("access_token")
        except ValueError:
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"registry {self.host}: token service returned no token")
        self._auth = f"Bearer {token}"

    @contextlib.contextmanager
    def _get(self, path: str, accept: str | None = None) -> Iterator[httpx.Response]:
        url = self._base_url() + path
        for attempt in (1, 2):
            headers = {"Accept": accept} if accept else {}
            if self._auth:
                headers["Authorization"] = self._auth
            try:
                with self._http.stream("GET", url, headers=headers) as resp:
                    if resp.status_code == 401 and attempt == 1:
                        resp.read()
                        self._authenticate(resp)
                        continue
                    if resp.status_code == 401:
                        raise RegistryUnauthorized(f"registry {self.host}: access denied to {path} "
                                            f"({self._withheld or 'check the credentials'})")
                    if resp.status_code == 404:
                        raise RegistryNotFound(f"registry {self.host}: {path} not found")
                    if resp.status_code != 200:
                        raise RegistryError(
                            f"registry {self.host}: GET {path}: HTTP {resp.status_code}")
                    yield resp
                    return
            except httpx.HTTPError as e:
                raise RegistryUnavailable(f"registry {self.host}: GET {path}: {e}") from None
        raise RegistryUnauthorized(f"registry {self.host}: authentication failed for {path}")

    # -- API -----------------------------------------------------------------------------------
    def get_manifest(self, repository: str, ref: str) -> tuple[bytes, str]:
        """(raw bytes, Content-Type) of a manifest or index, bounded in size."""
        with self._get(f"/v2/{repository}/manifests/{ref}", ACCEPT) as resp:
            data = _read_bounded(resp, MAX_MANIFEST_BYTES, f"manifest {ref}")
            return data, resp.headers.get("content-type", "")

    def get_blob(self, repository: str, digest: Digest, limit: int) -> bytes:
        with self._get(f"/v2/{repository}/blobs/{digest}") as resp:
            return _read_bounded(resp, limit, f"blob {digest}")

    def blob_chunks(self, repository: str, digest: Digest) -> Iterator[bytes]:
        """The blob as a stream of chunks; a broken connection raises RegistryUnavailable."""
        with self._get(f"/v2/{repository}/blobs/{digest}") as resp:
            try:
                yield from resp.iter_raw(CHUNK)
            except httpx.HTTPError as e:
                raise RegistryUnavailable(
                    f"registry {self.host}: download of {digest} broke off: {e}") from None


def _read_bounded(resp: httpx.Response, limit: int, what: str) -> bytes:
    buf = bytearray()
    try:
        for chunk in resp.iter_raw(CHUNK):
            buf += chunk
            if len(buf) > limit:
                raise BadManifest(f"{what} is larger than the limit of {limit} bytes")
    except httpx.HTTPError as e:
        raise RegistryUnavailable(f"download of {what} broke off: {e}") from None
    return bytes(buf)
