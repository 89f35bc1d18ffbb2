"""The watermark key: a secret plus the KGW parameters it is used with, kept in one file that never leaves the host.

Only the key's fingerprint (a hash of the secret) may appear in logs, responses, the ledger or evidence files.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from stillhouse.core.errors import StillhouseError

KEY_VERSION = 1


@dataclass(frozen=True)
class WatermarkKey:
    """KGW parameters: `gamma` of the vocabulary is green per context, `delta` is added to green logits, and the
    green list is seeded by the previous `context` tokens."""

    secret: bytes
    gamma: float = 0.25
    delta: float = 2.0
    context: int = 1

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise StillhouseError(
                "a watermark secret needs at least 16 bytes; make one with `stillhouse watermark keygen`"
            )
        if not 0 < self.gamma < 1:
            raise StillhouseError(f"gamma must be between 0 and 1 (exclusive), not {self.gamma}")
        if self.delta < 0:
            raise StillhouseError(f"delta must be >= 0, not {self.delta}")
        if not 1 <= self.context <= 8:
            raise StillhouseError(f"context must be between 1 and 8 tokens, not {self.context}")

    def __repr__(self) -> str:  # never print the secret by accident
        return f"WatermarkKey({self.fingerprint}, gamma={self.gamma}, delta={self.delta}, context={self.context})"

    @property
    def fingerprint(self) -> str:
        """Names the key without revealing it: safe for logs, the ledger and evidence files."""
        return "wm_" + hashlib.sha256(b"stillhouse-watermark\0" + self.secret).hexdigest()[:16]

    def public(self) -> dict[str, object]:
        """What evidence may say about the key."""
        return {"fingerprint": self.fingerprint, "gamma": self.gamma, "delta": self.delta, "context": self.context}

    @classmethod
    def random(cls, gamma: float = 0.25, delta: float = 2.0, context: int = 1) -> WatermarkKey:
        return cls(secrets.token_bytes(32), gamma, delta, context)


def keygen(
    path: str | Path, *, gamma: float = 0.25, delta: float = 2.0, context: int = 1, overwrite: bool = False
) -> WatermarkKey:
    """Write a new secret key file (mode 0600) and return the key; an existing file is never replaced silently."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise StillhouseError(f"{path} already exists; choose another path or pass --overwrite")
    key = WatermarkKey.random(gamma, delta, context)
    body = {"version": KEY_VERSION, "secret": key.secret.hex(), "gamma": gamma, "delta": delta, "context": context}
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(body, f)
        f.write("\n")
    os.replace(tmp, path)
    return key


def load_key(path: str | Path) -> WatermarkKey:
    """Read a key file written by `keygen`, or say what is wrong with it."""
    path = Path(path)
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        raise StillhouseError(f"no watermark key at {path}; make one with `watermark keygen -o {path}`") from None
    except (json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError):
        raise StillhouseError(f"{path} is not a watermark key file (expected the JSON keygen writes)") from None
    if not isinstance(body, dict) or body.get("version") != KEY_VERSION or not isinstance(body.get("secret"), str):
        raise StillhouseError(f"{path} is not a version-{KEY_VERSION} watermark key file; make one with keygen")
    try:
        secret = bytes.fromhex(body["secret"])
        return WatermarkKey(secret, float(body["gamma"]), float(body["delta"]), int(body["context"]))
    except (KeyError, TypeError, ValueError) as e:
        raise StillhouseError(f"{path} is a damaged watermark key file ({e}); make a new one with keygen") from None
