"""Optional API keys: `Authorization: Bearer <key>` on HTTP, metadata `authorization` on gRPC."""

from __future__ import annotations

import hmac

from models.errors import Unauthenticated


def check_bearer(keys: frozenset[str], header: str | None) -> None:
    """Raises Unauthenticated unless `header` carries one of `keys` (no keys: open)."""
    if not keys:
        return
    token = ""
    if header:
        scheme, _, value = header.partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else ""
    # Compare against every key, always, in constant time per key.
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(token.encode(), key.encode())
    if not ok:
        raise Unauthenticated(
            "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>'." if header
            else "Missing API key. Send it as 'Authorization: Bearer <key>'."
        )
