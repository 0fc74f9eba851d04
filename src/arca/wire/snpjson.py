"""An SEV-SNP report (AMD pub. 56860 Table 23) as the sev crate's JSON, which Trustee reads."""
# What guest-components' SNP attester sends: byte arrays as lists of integers, TCB versions as
# objects, fields absent from older report versions as null.

from __future__ import annotations

REPORT_SIZE = 0x4A0
#: (name, offset, kind) in serde order. Kinds: 4/8 little-endian integer of that many bytes,
#: "aN" N-byte array, "tcb" TCB_VERSION, "ver" 3-byte version, "oN@V" N-byte integer present
#: from report version V, "sig" the signature's R and S. Gaps are reserved (zero) bytes.
FIELDS = (
    ("version", 0x000, 4), ("guest_svn", 0x004, 4), ("policy", 0x008, 8),
    ("family_id", 0x010, "a16"), ("image_id", 0x020, "a16"), ("vmpl", 0x030, 4),
    ("sig_algo", 0x034, 4), ("current_tcb", 0x038, "tcb"), ("plat_info", 0x040, 8),
    ("key_info", 0x048, 4), ("report_data", 0x050, "a64"), ("measurement", 0x090, "a48"),
    ("host_data", 0x0C0, "a32"), ("id_key_digest", 0x0E0, "a48"),
    ("author_key_digest", 0x110, "a48"), ("report_id", 0x140, "a32"),
    ("report_id_ma", 0x160, "a32"), ("reported_tcb", 0x180, "tcb"),
    ("cpuid_fam_id", 0x188, "o1@3"), ("cpuid_mod_id", 0x189, "o1@3"),
    ("cpuid_step", 0x18A, "o1@3"), ("chip_id", 0x1A0, "a64"), ("committed_tcb", 0x1E0, "tcb"),
    ("current", 0x1E8, "ver"), ("committed", 0x1EC, "ver"), ("launch_tcb", 0x1F0, "tcb"),
    ("launch_mit_vector", 0x1F8, "o8@5"), ("current_mit_vector", 0x200, "o8@5"),
    ("signature", 0x2A0, "sig"),
)


def turin(raw: bytes) -> bool:
    # TCB_VERSION in the Turin layout (FMC first)? CPUID family 1Ah (version 3+), else a
    # CHIP_ID of 8 bytes (version 2), as the sev crate decides.
    if int.from_bytes(raw[:4], "little") >= 3:
        return raw[0x188] == 0x1A
    return any(raw[0x1A0:0x1A8]) and not any(raw[0x1A8:0x1E0])


def to_json(raw: bytes) -> dict[str, object]:
    if len(raw) != REPORT_SIZE:
        raise ValueError(f"an SNP report is {REPORT_SIZE} bytes, not {len(raw)}")
    version, t = int.from_bytes(raw[:4], "little"), turin(raw)
    out: dict[str, object] = {}
    for name, off, kind in FIELDS:
        if isinstance(kind, int):
            out[name] = int.from_bytes(raw[off:off + kind], "little")
        elif kind[0] == "a":
            out[name] = list(raw[off:off + int(kind[1:])])
        elif kind == "tcb":
            b = raw[off:off + 8]
            out[name] = {"fmc": b[0] if t else None, "bootloader": b[t], "tee": b[1 + t],
                         "snp": b[3 if t else 6], "microcode": b[7]}
        elif kind == "ver":
            out[name] = {"major": raw[off + 2], "minor": raw[off + 1], "build": raw[off]}
        elif kind[0] == "o":
            size, since = (int(x) for x in kind[1:].split("@"))
            value = int.from_bytes(raw[off:off + size], "little")
            out[name] = value if version >= since else None
        else:
            out[name] = {"r": list(raw[off:off + 72]), "s": list(raw[off + 72:off + 144])}
    return out
