"""Loading the RSA keys the sandbox verifies with, from PEM text or files."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

PRIVATE_MARKER = b"PRIVATE KEY-----"


def public_key_from_pem(pem: str | bytes) -> RSAPublicKey:
    """The RSA public key of a PEM: a public key, or a private one (PKCS#1/#8) to derive it from.

    Literal ``\\n`` sequences (as .env files carry them) are accepted. The
    error never quotes the input, which may be a secret.
    """
    data = pem.encode() if isinstance(pem, str) else pem
    data = data.strip().replace(b"\\n", b"\n") + b"\n"
    try:
        if PRIVATE_MARKER in data:
            private = load_pem_private_key(data, password=None)
            if isinstance(private, RSAPrivateKey):
                return private.public_key()
        else:
            public = load_pem_public_key(data)
            if isinstance(public, RSAPublicKey):
                return public
    except (ValueError, TypeError):
        pass
    raise ValueError("not a PEM-encoded RSA key (public, or private PKCS#1/PKCS#8)")


def public_key_from_file(path: str | Path) -> RSAPublicKey:
    """``public_key_from_pem`` of a file's content."""
    return public_key_from_pem(Path(path).read_bytes())
