"""HTTP basic authentication for the server (ksqlDB's ``authentication.method=BASIC``).

Credentials come from a password file in the Jetty ``HashLoginService`` form ksqlDB's
JAAS setup uses (``user: password[,role...]``, ``#`` comments), or from ``user:password``
pairs given on the command line. When any credentials are configured every endpoint needs
them; passwords are compared in constant time.
"""
from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BasicAuth:
    """The users a server accepts: user name -> password."""

    users: tuple[tuple[str, str], ...]

    @classmethod
    def from_pairs(cls, pairs: list[str]) -> "BasicAuth":
        """From ``user:password`` strings."""
        users = []
        for pair in pairs:
            user, sep, password = pair.partition(":")
            if not sep or not user:
                raise ValueError(f"expected USER:PASSWORD, got {pair!r}")
            users.append((user, password))
        return cls(tuple(users))

    @classmethod
    def from_file(cls, path: str | Path) -> "BasicAuth":
        """From a Jetty-style password file: ``user: password[,role...]`` per line."""
        users = []
        for n, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, rest = line.partition(":")
            if not sep or not user.strip():
                raise ValueError(f"{path}:{n}: expected 'user: password[,role...]'")
            password = rest.strip().split(",", 1)[0].strip()
            if password.startswith(("MD5:", "CRYPT:", "OBF:")):
                raise ValueError(f"{path}:{n}: only plain passwords are supported")
            users.append((user.strip(), password))
        if not users:
            raise ValueError(f"{path}: no users")
        return cls(tuple(users))

    def check(self, header: bytes | None) -> str | None:
        """The authenticated user for an ``Authorization`` header value, else None."""
        if not header or not header[:6].lower() == b"basic ":
            return None
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        if not sep:
            return None
        ok = None
        for name, expected in self.users:
            # Compare every entry so that timing does not tell which users exist.
            if hmac.compare_digest(name.encode(), user.encode()) & hmac.compare_digest(
                    expected.encode(), password.encode()):
                ok = name
        return ok


def basic_header(user: str, password: str) -> str:
    """The ``Authorization`` header value for ``user``/``password``."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
