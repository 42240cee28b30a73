#!/usr/bin/env python3
"""Credentials for the NATS test servers that scripts/brokers.sh starts, written into DIR:

  nkey.seed, nkey.pub    a user NKey (seed and public key) for nats_tls's NKey user
  token                  the token nats_mtls requires
  operator.jwt           the operator of nats_jwt (decentralised auth, a memory resolver)
  account.pub            the account the user belongs to, and its JWT (account.jwt),
  account.jwt            preloaded into nats_jwt's resolver; JetStream enabled for it
  system.pub, system.jwt the system account nats_jwt needs to run JetStream
  user.creds             a user JWT signed by the account, and the user's seed: what a
                         client passes with creds_file=

NKeys and JWTs are made as the NATS documentation specifies them (ed25519 keys; base32 with a
one-byte type prefix and a CRC-16; JWTs signed with the issuer's NKey, alg ed25519-nkey), with
the `cryptography` package, so no `nsc` tool is needed.

    python3 scripts/nats-auth.py DIR
"""

import base64
import hashlib
import json
import os
import secrets
import sys
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PREFIX_SEED = 18 << 3
PREFIX = {"operator": 14 << 3, "account": 0, "user": 20 << 3}


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM, the checksum NKeys carry."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def encode(raw: bytes) -> str:
    raw += crc16(raw).to_bytes(2, "little")
    return base64.b32encode(raw).decode().rstrip("=")


class NKey:
    def __init__(self, kind: str):
        self.kind = kind
        self.private = Ed25519PrivateKey.generate()
        self.raw_seed = self.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        raw_public = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public = encode(bytes([PREFIX[kind]]) + raw_public)

    def seed(self) -> str:
        prefix = PREFIX[self.kind]
        head = bytes([PREFIX_SEED | (prefix >> 5), (prefix & 31) << 3])
        return encode(head + self.raw_seed)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwt(issuer: NKey, subject: NKey, name: str, nats: dict) -> str:
    claims = {"iat": int(time.time()), "iss": issuer.public, "name": name, "sub": subject.public}
    claims["nats"] = dict(nats, type=subject.kind, version=2)
    # jti: a hash of the claims without it, as nsc makes it.
    digest = hashlib.sha512(json.dumps(claims, sort_keys=True).encode()).digest()[:32]
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = b64url(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = b64url(json.dumps(claims).encode())
    signature = issuer.private.sign(f"{header}.{body}".encode())
    return f"{header}.{body}.{b64url(signature)}"


def write(path: str, text: str, secret: bool = False) -> None:
    with open(path, "w") as f:
        f.write(text)
    if secret:
        os.chmod(path, 0o600)


def main(out: str) -> None:
    user = NKey("user")
    write(f"{out}/nkey.seed", user.seed() + "\n", secret=True)
    write(f"{out}/nkey.pub", user.public + "\n")
    write(f"{out}/token", secrets.token_hex(16) + "\n", secret=True)

    operator, account, creds_user = NKey("operator"), NKey("account"), NKey("user")
    write(f"{out}/operator.jwt", jwt(operator, operator, "eddy-operator", {}))
    unlimited = {"subs": -1, "conn": -1, "leaf": -1, "imports": -1, "exports": -1,
                 "data": -1, "payload": -1, "wildcards": True,
                 "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
    write(f"{out}/account.pub", account.public + "\n")
    write(f"{out}/account.jwt", jwt(operator, account, "eddy-account", {"limits": unlimited}))
    system = NKey("account")
    write(f"{out}/system.pub", system.public + "\n")
    write(f"{out}/system.jwt", jwt(operator, system, "SYS", {}))
    user_jwt = jwt(account, creds_user, "eddy", {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1})
    creds = (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{creds_user.seed()}\n"
        "------END USER NKEY SEED------\n"
    )
    write(f"{out}/user.creds", creds, secret=True)


if __name__ == "__main__":
    main(sys.argv[1])
