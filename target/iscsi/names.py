"""iSCSI names (RFC 3720 §3.2.6.3, RFC 7143 §4.2.7): iqn., eui. and naa. forms, in their lower-cased form."""
from __future__ import annotations

import re

_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_IQN_RE = re.compile(rf"iqn\.\d{{4}}-(?:0[1-9]|1[0-2])\.{_LABEL}(?:\.{_LABEL})*(?::[a-z0-9.:-]+)?")
_EUI_RE = re.compile(r"eui\.[0-9a-f]{16}")
_NAA_NAME_RE = re.compile(r"naa\.(?:[0-9a-f]{16}|[0-9a-f]{32})")


def is_iscsi_name(name: str) -> bool:
    """True if the lower-cased `name` is an iqn., eui. or naa. name."""
    return any(r.fullmatch(name) for r in (_IQN_RE, _EUI_RE, _NAA_NAME_RE))
