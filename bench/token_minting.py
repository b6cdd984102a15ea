"""How much loading the Heimdall key once, and reusing tokens, saves.

Run: ``python -m bench.token_minting [--count N] [--pem-count N] [--threads N]``.

Signs PS256 tokens with a throw-away RSA-2048 key four ways:

a. PyJWT given the PEM string: it parses the key on every call;
b. the key parsed once (``TokenMinter`` signing, cache bypassed);
c. ``TokenMinter.token`` with its reuse cache (one audience and identity);
d. as (c) from several threads at once (the cache's lock under contention).

Prints tokens/s for each and the ratios between them.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections.abc import Callable

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tasks.clients.identity import Identity
from tasks.clients.tokens import TokenMinter
from tasks.kinds.projects import PROJECT_AUDIENCE

KEY_ID = "bench-kid"
IDENTITY = Identity(principal="jdoe", sub="jdoe", email="jdoe@example.org", on_behalf_of="jdoe")
UNREACHABLE_JWKS = "http://127.0.0.1:9/.well-known/jwks"


def claims_now() -> dict[str, object]:
    """The claims ``TokenMinter`` signs, for the PEM-string variant."""
    now = int(time.time())
    return {
        "iss": "heimdall",
        "aud": PROJECT_AUDIENCE,
        "sub": IDENTITY.sub,
        "principal": IDENTITY.principal,
        "email": IDENTITY.email,
        "iat": now,
        "nbf": now - 30,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }


def rate(count: int, sign: Callable[[int], object]) -> float:
    """Tokens per second for ``count`` calls of ``sign``."""
    started = time.perf_counter()
    for n in range(count):
        sign(n)
    return count / (time.perf_counter() - started)


def threaded_rate(count: int, threads: int, sign: Callable[[int], object]) -> float:
    """Tokens per second for ``count`` calls of ``sign`` split over ``threads``."""
    per_thread = count // threads
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        for n in range(per_thread):
            sign(n)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    return per_thread * threads / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="tokens for (b), (c), (d)")
    parser.add_argument("--pem-count", type=int, default=100, help="tokens for (a)")
    parser.add_argument("--threads", type=int, default=4, help="threads for (d)")
    args = parser.parse_args()

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()

    def sign_from_pem(_: int) -> object:
        return jwt.encode(claims_now(), pem, algorithm="PS256", headers={"kid": KEY_ID})

    # (b) bypasses the cache by asking for a fresh identity every time.
    signing = TokenMinter(key, key_id=KEY_ID, jwks_url=UNREACHABLE_JWKS)

    def sign_loaded_key(n: int) -> object:
        token = signing.token(PROJECT_AUDIENCE, Identity(principal=f"u{n}", sub=f"u{n}"))
        if n % 500 == 499:
            signing.invalidate()  # keep the cache small so (b) measures signing only
        return token

    cached = TokenMinter(key, key_id=KEY_ID, jwks_url=UNREACHABLE_JWKS)

    def sign_cached(_: int) -> object:
        return cached.token(PROJECT_AUDIENCE, IDENTITY)

    pem_rate = rate(args.pem_count, sign_from_pem)
    loaded_rate = rate(args.count, sign_loaded_key)
    cached_rate = rate(args.count * 50, sign_cached)
    threaded = threaded_rate(args.count * 50, args.threads, sign_cached)

    print(f"(a) PEM string every call : {pem_rate:12,.0f} tokens/s  ({args.pem_count} tokens)")
    print(f"(b) key loaded once       : {loaded_rate:12,.0f} tokens/s  ({args.count} tokens)")
    print(f"(c) reuse cache           : {cached_rate:12,.0f} tokens/s  ({args.count * 50} calls)")
    print(
        f"(d) reuse cache, {args.threads} threads : {threaded:12,.0f} tokens/s  "
        f"({args.count * 50} calls)"
    )
    print(
        f"b/a = {loaded_rate / pem_rate:,.0f}x   c/b = {cached_rate / loaded_rate:,.0f}x   "
        f"c/a = {cached_rate / pem_rate:,.0f}x   d/c = {threaded / cached_rate:.2f}x"
    )


if __name__ == "__main__":
    main()
