"""Agent tokens, stored only as scrypt hashes, and the ``latentwire hash-token`` command.

A stored hash is ``scrypt$N$r$p$salt$hash`` (base64 salt and hash, a random 16-byte salt per
token), so the cost parameters travel with it and can be raised for new tokens without
invalidating old ones. `verify_token` compares in constant time. scrypt is slow by design:
the hub calls it in a worker thread (`latentwire.hub.auth.Policy.admit`), never on the loop.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import secrets
import sys

from latentwire.errors import ConfigError

SCHEME = "scrypt"
# scrypt cost: 2**14 x 8 x 1 needs 16 MiB (128 x N x r bytes) and tens of milliseconds of CPU per
# check, the usual interactive setting.
DEFAULT_N, DEFAULT_R, DEFAULT_P = 2**14, 8, 1
# Shortest token `latentwire hash-token` accepts: a short token is guessable, however well hashed.
MIN_TOKEN_CHARS = 16


def hash_token(token: str, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P) -> str:
    """The string to store in the auth file for ``token``: ``scrypt$n$r$p$salt$hash`` (base64)."""
    if not token:
        raise ConfigError("a token must not be empty")
    salt = secrets.token_bytes(16)
    digest = _scrypt(token, salt, n, r, p, 32)
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"{SCHEME}${n}${r}${p}${b64(salt)}${b64(digest)}"


def _scrypt(token: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    maxmem = 128 * r * (n + p + 2) + (1 << 20)
    return hashlib.scrypt(token.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen)


def parse_hash(value: str) -> tuple[int, int, int, bytes, bytes]:
    """The scrypt parameters, salt and digest of a stored hash: ``(n, r, p, salt, digest)``;
    raises `ValueError` saying what is wrong (the auth file's validator words it as a field)."""
    parts = value.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise ValueError("must look like 'scrypt$N$r$p$salt$hash' (make one with `latentwire hash-token`)")
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, digest = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    except ValueError as exc:
        raise ValueError(f"has a malformed number or base64 field ({exc})") from None
    if n < 2 or n & (n - 1) or r < 1 or p < 1:
        raise ValueError(f"has bad scrypt parameters N={n} r={r} p={p} (N a power of 2 above 1)")
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("has a salt under 8 bytes or a hash under 16 bytes")
    return n, r, p, salt, digest


def verify_token(token: str, stored: str) -> bool:
    """Whether ``token`` matches the stored hash (constant-time compare)."""
    n, r, p, salt, digest = parse_hash(stored)
    return hmac.compare_digest(_scrypt(token, salt, n, r, p, len(digest)), digest)


# -- `latentwire hash-token` ---------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``latentwire hash-token``: print the auth-file hash of a token (read from stdin or a prompt)."""
    parser = argparse.ArgumentParser(
        prog="latentwire hash-token",
        description="Print the token_hash for an auth file. The token is read from stdin (one line) "
                    "or asked for without echo; with --new a random token is made and printed too.")
    parser.add_argument("--new", action="store_true", help="generate a random token and print it first")
    args = parser.parse_args(argv)
    if args.new:
        token = secrets.token_urlsafe(32)
        print(f"token: {token}")
    elif sys.stdin.isatty():
        token = getpass.getpass("token: ")
    else:
        token = sys.stdin.readline().rstrip("\r\n")
    if len(token) < MIN_TOKEN_CHARS:
        print(f"latentwire hash-token: the token has {len(token)} characters; use at least "
              f"{MIN_TOKEN_CHARS} (`latentwire hash-token --new` makes a random one)", file=sys.stderr)
        return 2
    try:
        print(hash_token(token) if not args.new else f"token_hash: {hash_token(token)}")
    except ConfigError as exc:
        print(f"latentwire hash-token: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
