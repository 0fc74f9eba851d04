"""Put a DCAP certificate chain in leaf → root order by issuer and subject names.

Real platforms and caching services (PCCS, cloud quote providers) hand out the PCK chain in a
quote, and the issuer chains of TCB info / QE identity, in either order (leaf first, root
first) or with the intermediate elsewhere; Intel's QVL finds the leaf, intermediate and root
by their names rather than by position. This does the same, and nothing more: it decides the
order only. :class:`arca.verifier.dcap.pck.ChainVerifier` then checks every signature along it,
that issuers are CAs and that the root's public key is pinned, exactly as before.

Refused (``error``, naming the defect): a set with no single leaf (every certificate issues
another one, or two are not issuers of anything: an extra certificate), a link whose issuer is
absent (a missing certificate) or present twice (ambiguous), a chain that does not end in a
self-issued certificate, and any certificate left over once the path is built (an extra one).
"""

from __future__ import annotations

from cryptography import x509

from arca.errors import ArcaError, ChainInvalid


def order_chain(certs: tuple[x509.Certificate, ...], item: str,
                error: type[ArcaError] = ChainInvalid) -> tuple[x509.Certificate, ...]:
    """``certs`` as leaf, intermediates..., self-issued root."""
    def bad(detail: str) -> ArcaError:
        return error(f"{item}: {detail}", tee="dcap", field=item)

    try:
        subjects, issuers = [c.subject for c in certs], [c.issuer for c in certs]
    except (ValueError, TypeError) as e:  # names are parsed lazily
        raise bad(f"a certificate name does not parse ({e})") from None
    self_issued = [s == i for s, i in zip(subjects, issuers, strict=True)]
    # The leaf issues none of the others (a self-issued root "issues" itself only).
    leaves = [i for i in range(len(certs)) if not self_issued[i] and not any(
        j != i and issuers[j] == subjects[i] for j in range(len(certs)))]
    if len(leaves) != 1:
        raise bad(f"{len(leaves)} certificates issue no other certificate of the chain; "
                  "expected exactly one leaf (extra or missing certificates)")
    path, used = [leaves[0]], {leaves[0]}
    while not self_issued[path[-1]]:
        issuer = issuers[path[-1]]
        found = [j for j, name in enumerate(subjects) if j != path[-1] and name == issuer]
        if not found:
            raise bad(f"the issuer of certificate {len(path) - 1} ({issuer.rfc4514_string()})"
                      " is missing")
        if len(found) > 1:
            raise bad(f"{len(found)} certificates are named {issuer.rfc4514_string()}")
        if found[0] in used:
            raise bad("the chain loops")
        path.append(found[0])
        used.add(found[0])
    if len(used) != len(certs):
        raise bad(f"{len(certs) - len(used)} certificate(s) are not part of the chain")
    return tuple(certs[i] for i in path)
