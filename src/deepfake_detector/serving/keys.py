"""API keys for the HTTP service: only their sha256 hashes are stored, each with a name.

    dfd serve keys add ci-pipeline          # prints a new key once; appends "ci-pipeline sha256:<hex>" to the file
    dfd serve keys list                     # names only
    dfd serve keys revoke ci-pipeline       # a running service refuses the key from its next request on
    curl -H "Authorization: Bearer <key>" ...   # or -H "X-API-Key: <key>"

The file (serve.api_keys_file) holds one `NAME sha256:HEX` per line; blank lines and `#` comments are
ignored. It must not be readable by group or others (mode 600, as `keys add` creates it): a looser file is
refused on load. A running service re-reads it when it changes (`KeyRing`), so add, revoke and rotate (add the
new key, move clients, revoke the old one) need no restart. A request's key is hashed and compared with every
stored hash in constant time; the request log records the key's name, never the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from pathlib import Path

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class KeysError(ValueError):
    """A keys file that cannot be read, or a name that cannot be used."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_keys(path: str | Path) -> dict[str, str]:
    """{sha256 hex: name} from a keys file (mode 600 or stricter)."""
    path = Path(path)
    if not path.is_file():
        raise KeysError(f"API keys file not found: {path} (create keys with `dfd serve keys add NAME`)")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeysError(f"API keys file {path} has mode {mode:o}: group or others can read it; "
                        f"`chmod 600 {path}`")
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


def list_keys(path: str | Path) -> list[str]:
    """The names in a keys file, in file order."""
    return list(load_keys(path).values()) if Path(path).is_file() else []


def revoke_key(path: str | Path, name: str) -> None:
    """Remove NAME's line (the file is rewritten atomically, mode 600); KeysError when there is none."""
    path = Path(path)
    if name not in list_keys(path):
        raise KeysError(f"{path} has no key named {name!r} (`dfd serve keys list`)")
    kept = [ln for ln in path.read_text().splitlines(keepends=True) if ln.split("#", 1)[0].split()[:1] != [name]]
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(kept)
    os.replace(tmp, path)


class KeyRing:
    """The keys of a running service: re-read when the file changes (inode, size, mtime or mode: one stat per
    request, at most once per `check_s`). A file that becomes unreadable or too open keeps the last good keys and
    says so in `error`. `KeyRing.of({sha256: name})` is a fixed ring, read from no file."""

    def __init__(self, path: str | Path | None, check_s: float = 0.0, keys: dict[str, str] | None = None) -> None:
        self.path, self.check_s = (Path(path) if path is not None else None), check_s
        self.keys, self.error = load_keys(self.path) if self.path is not None else dict(keys or {}), None
        self._stamp, self._checked = self._stat(), time.monotonic()

    @classmethod
    def of(cls, keys: dict[str, str]) -> "KeyRing":
        return cls(None, keys=keys)

    def _stat(self) -> tuple | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode

    def current(self) -> dict[str, str]:
        now = time.monotonic()
        if self.path is not None and now - self._checked >= self.check_s:
            self._checked = now
            stamp = self._stat()
            if stamp != self._stamp:
                try:
                    self.keys, self.error = load_keys(self.path), None
                    self._stamp = stamp
                except (KeysError, OSError) as exc:
                    self.error = str(exc)
        return self.keys

    def name(self, presented: str | None) -> str | None:
        return key_name(self.current(), presented)


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
