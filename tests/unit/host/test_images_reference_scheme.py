"""``http://`` / ``https://`` in an image reference: how to reach the registry, not part of the
image's name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arca.host.images.errors import BadReference, RegistryError
from arca.host.images.reference import Reference
from arca.host.images.registry import Credentials, RegistryClient
from arca.wire.errors import ArcaError


@pytest.mark.parametrize(("ref", "scheme", "name"), [
    ("http://127.0.0.1:5000/team/app:v1", "http", "127.0.0.1:5000/team/app:v1"),
    ("HTTPS://quay.io/x/y", "https", "quay.io/x/y:latest"),
    ("localhost:5000/app", None, "localhost:5000/app:latest"),
])
def test_scheme_is_kept_apart_from_the_name(ref: str, scheme: str | None, name: str) -> None:
    r = Reference.parse(ref)
    assert (r.scheme, str(r)) == (scheme, name)
    assert Reference.parse(name) == r  # same image either way


@pytest.mark.parametrize("ref", ["http://busybox", "http://user/app", "https://http://x/y",
                                 "http://", "ftp://host/x"])
def test_scheme_needs_a_registry_host(ref: str) -> None:
    with pytest.raises(BadReference):
        Reference.parse(ref)


@given(st.sampled_from(["http://", "https://", "HTTP://", ""]), st.text(max_size=60))
def test_fuzz_schemes(prefix: str, rest: str) -> None:
    try:
        r = Reference.parse(prefix + rest)
    except ArcaError:
        return
    assert Reference.parse(str(r)) == r
    if prefix:
        assert r.scheme == prefix[:-3].lower()


def test_plain_http_by_name_needs_insecure() -> None:
    with pytest.raises(RegistryError, match="confirm with --insecure"):
        RegistryClient("127.0.0.1:1", plain_http=True, credentials=Credentials("u", "p"))
