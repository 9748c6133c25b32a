"""API keys for the HTTP service: only their sha256 hashes are stored, each with a name.

    dfd serve keys add ci-pipeline          # prints a new key once; appends "ci-pipeline sha256:<hex>" to the file
    curl -H "Authorization: Bearer <key>" ...   # or -H "X-API-Key: <key>"

The file (serve.api_keys_file) holds one `NAME sha256:HEX` per line; blank lines and `#` comments are
ignored. A request's key is hashed and compared with every stored hash in constant time; the request log
records the key's name, never the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class KeysError(ValueError):
    """A keys file that cannot be read, or a name that cannot be used."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_keys(path: str | Path) -> dict[str, str]:
    """{sha256 hex: name} from a keys file."""
    path = Path(path)
    if not path.is_file():
        raise KeysError(f"API keys file not found: {path} (create keys with `dfd serve keys add NAME`)")
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].startswith("sha256:") or len(parts[1]) != 71:
            raise KeysError(f"{path}:{n}: expected `NAME sha256:<64 hex digits>`")
        out[parts[1][7:].lower()] = parts[0]
    return out


def add_key(path: str | Path, name: str) -> str:
    """Make a new key for `name`, store its hash (file mode 600) and return the key: it is shown only once."""
    if not NAME.match(name):
        raise KeysError(f"key name {name!r}: letters, digits, . _ @ - (at most 64)")
    path = Path(path)
    if path.is_file() and name in load_keys(path).values():
        raise KeysError(f"{path} already has a key named {name!r}")
    key = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as fh:
        fh.write(f"{name} sha256:{digest(key)}\n")
    return key


def key_name(keys: dict[str, str], presented: str | None) -> str | None:
    """The name of the presented key, or None when it is missing or matches no stored hash."""
    if not presented:
        return None
    d = digest(presented)
    found = None
    for stored, name in keys.items():  # every hash compared, in constant time each
        if hmac.compare_digest(stored, d):
            found = name
    return found


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    """The key of `Authorization: Bearer <key>` or `X-API-Key: <key>` (ASGI header dict)."""
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    key = headers.get(b"x-api-key")
    return key.decode("latin-1").strip() if key else None
