"""Throw-away NATS credentials for the secured-NATS tests: NKeys, JWTs, .creds files, a CA.

Everything is generated in the test, with the libraries the product uses:
``nkeys`` (nats-py's NKey support) for the Ed25519 keys and JWT signatures,
``cryptography`` for the certificate authority, the server certificate (for
127.0.0.1) and the client certificate of mutual TLS.

The JWTs follow nats-io/jwt v2: header ``{"typ": "JWT", "alg": "ed25519-nkey"}``,
base64url without padding, signed by the issuer's NKey over ``header.payload``.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import nkeys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_LIFETIME = datetime.timedelta(days=1)
# No limit, in nats-io/jwt's account and user claims.
UNLIMITED = -1


@dataclass(frozen=True)
class NKey:
    """One NKey: its seed (the secret) and public key."""

    seed: str
    public: str


def new_nkey(prefix: int) -> NKey:
    """A fresh NKey of one role (``nkeys.PREFIX_BYTE_USER``, ``..._ACCOUNT``, ``..._OPERATOR``)."""
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    pair = nkeys.from_seed(bytearray(seed))
    return NKey(seed.decode(), pair.public_key.decode())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode_jwt(claims: dict[str, object], issuer: NKey) -> str:
    """``claims`` as a NATS JWT signed by ``issuer``; ``iss``, ``iat`` and ``jti`` filled in."""
    body = {"iat": int(time.time()), "iss": issuer.public, **claims}
    # nats-io/jwt's jti: the base32 SHA-256 of the claims without it.
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64url(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64url(json.dumps(body).encode())
    signature = nkeys.from_seed(bytearray(issuer.seed.encode())).sign(
        f"{header}.{payload}".encode()
    )
    return f"{header}.{payload}.{_b64url(signature)}"


def operator_jwt(operator: NKey) -> str:
    """A self-signed operator JWT."""
    return encode_jwt(
        {
            "sub": operator.public,
            "name": "test-operator",
            "nats": {"type": "operator", "version": 2},
        },
        operator,
    )


def account_jwt(account: NKey, operator: NKey, name: str = "sync", jetstream: bool = True) -> str:
    """An account JWT without limits; JetStream enabled unless not ``jetstream`` (system)."""
    limits = {
        "subs": UNLIMITED,
        "data": UNLIMITED,
        "payload": UNLIMITED,
        "imports": UNLIMITED,
        "exports": UNLIMITED,
        "wildcards": True,
        "conn": UNLIMITED,
        "leaf": UNLIMITED,
    }
    if jetstream:
        limits.update(
            {"mem_storage": UNLIMITED, "disk_storage": UNLIMITED, "streams": UNLIMITED,
             "consumer": UNLIMITED}
        )  # fmt: skip
    return encode_jwt(
        {
            "sub": account.public,
            "name": name,
            "nats": {"limits": limits, "type": "account", "version": 2},
        },
        operator,
    )


def user_jwt(user: NKey, account: NKey) -> str:
    """A user JWT of ``account``, allowed every subject."""
    return encode_jwt(
        {
            "sub": user.public,
            "name": "v1-sync-helper",
            "nats": {
                "pub": {},
                "sub": {},
                "subs": UNLIMITED,
                "data": UNLIMITED,
                "payload": UNLIMITED,
                "type": "user",
                "version": 2,
            },
        },
        account,
    )


def creds_file_text(jwt: str, seed: str) -> str:
    """A ``.creds`` file as ``nsc generate creds`` writes it."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


@dataclass(frozen=True)
class Operator:
    """An operator with one account, its JWTs, and the server configuration that trusts it.

    JetStream in operator mode needs a system account: ``system`` is one.
    """

    operator: NKey
    account: NKey
    system: NKey
    operator_jwt: str
    account_jwt: str
    system_jwt: str

    def server_config(self) -> str:
        """Operator mode with both accounts preloaded in a memory resolver."""
        return (
            f'operator: "{self.operator_jwt}"\n'
            f"system_account: {self.system.public}\n"
            "resolver: MEMORY\n"
            "resolver_preload: {\n"
            f'  {self.account.public}: "{self.account_jwt}"\n'
            f'  {self.system.public}: "{self.system_jwt}"\n'
            "}\n"
        )

    def user_creds(self, directory: Path, name: str) -> Path:
        """A new user of the account, written as ``{name}.creds``."""
        user = new_nkey(nkeys.PREFIX_BYTE_USER)
        path = directory / f"{name}.creds"
        path.write_text(creds_file_text(user_jwt(user, self.account), user.seed))
        return path


def new_operator() -> Operator:
    """A fresh operator and account."""
    operator = new_nkey(nkeys.PREFIX_BYTE_OPERATOR)
    account = new_nkey(nkeys.PREFIX_BYTE_ACCOUNT)
    system = new_nkey(nkeys.PREFIX_BYTE_ACCOUNT)
    return Operator(
        operator,
        account,
        system,
        operator_jwt(operator),
        account_jwt(account, operator),
        account_jwt(system, operator, name="SYS", jetstream=False),
    )


# ----------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class Authority:
    """A certificate authority: its key and certificate, and the PEM file of the certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    cert_file: Path


def _key_file(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _cert_file(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def new_authority(directory: Path, name: str) -> Authority:
    """A self-signed CA written to ``{name}-ca.pem``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CERT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(key, cert, _cert_file(cert, directory / f"{name}-ca.pem"))


def issue(authority: Authority, directory: Path, name: str, *, server: bool) -> tuple[Path, Path]:
    """A certificate signed by ``authority``: (cert file, key file).

    A server certificate names 127.0.0.1 and localhost; a client one is for client auth.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CERT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    cert = builder.sign(authority.key, hashes.SHA256())
    return (
        _cert_file(cert, directory / f"{name}.pem"),
        _key_file(key, directory / f"{name}-key.pem"),
    )
