"""The primitives SecAgg+ needs, each a thin call into a well-kept library; nothing here is our own crypto.

- key agreement: X25519 (``cryptography``), the shared secret stretched by HKDF-SHA256;
- the masks' pseudo-random generator: AES-256 in counter mode (``cryptography``), its keystream read
  as words (on this project's CPU 2.2x faster a stream than ChaCha20, with AES instructions);
- the shares' encryption between two devices, through the server: AES-256-GCM (``cryptography``);
- secret sharing: Shamir's scheme over GF(2^128) (``pycryptodome``), a 32-byte secret as two
  16-byte halves.

Key pairs are drawn from the operating system's randomness (``secrets``) unless a simulation asks
for a seed (``KeySource(seed)``): then every key of a run is a function of the seed, so the same
command gives the same masked words. A seeded run is a reproducible simulation, not a deployment.

Example::

    >>> source = KeySource(seed=0)
    >>> a, b = source.key_pair(), source.key_pair()
    >>> agree(a, public_bytes(b)) == agree(b, public_bytes(a))  # both ends derive one secret
    True
    >>> words = mask_words(agree(a, public_bytes(b)), 4)
    >>> words.dtype, words.shape
    (dtype('uint32'), (4,))
    >>> secret = bytes(range(32))
    >>> shares = split_secret(secret, threshold=2, count=3)
    >>> combine_secret(shares[1:]) == secret
    True
"""

import secrets

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32  # an X25519 key, an AES-256 key
HALF = 16  # what one Shamir share of pycryptodome's carries
NONCE_BYTES = 12  # AES-GCM's nonce
SHARE_BYTES = HALF + 1  # a share: its index (1 byte; at most 255 shares) and 16 bytes


class KeySource:
    """Where a round's secrets come from: the operating system's randomness (``seed=None``) or,
    for a reproducible simulation, a seeded stream."""

    def __init__(self, seed=None) -> None:
        self._rng = None if seed is None else np.random.default_rng(seed)

    def random_bytes(self, count: int) -> bytes:
        if self._rng is None:
            return secrets.token_bytes(count)
        return self._rng.bytes(count)

    def key_pair(self) -> X25519PrivateKey:
        return X25519PrivateKey.from_private_bytes(self.random_bytes(KEY_BYTES))


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The 32 bytes of ``key``'s public key, as they travel."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_from_bytes(data: bytes) -> X25519PrivateKey:
    """The X25519 key whose 32 bytes are ``data`` (a mask key rebuilt from its shares)."""
    return X25519PrivateKey.from_private_bytes(data)


def private_bytes(key: X25519PrivateKey) -> bytes:
    """The 32 bytes of ``key`` itself (what is secret-shared)."""
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def agree(key: X25519PrivateKey, peer_public: bytes, purpose: bytes = b"mask") -> bytes:
    """X25519 between ``key`` and a peer's public key, through HKDF-SHA256: 32 bytes that both
    ends derive alike, one key per ``purpose``."""
    shared = key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    info = b"lightning-fed secagg " + purpose
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(shared)


def mask_words(seed: bytes, count: int) -> np.ndarray:
    """``count`` pseudo-random uint32 words: AES-256-CTR's keystream under the 32-byte ``seed``."""
    if len(seed) < KEY_BYTES:
        seed = seed.ljust(KEY_BYTES, b"\0")
    cipher = Cipher(algorithms.AES(seed[:KEY_BYTES]), modes.CTR(b"\0" * 16))
    stream = cipher.encryptor().update(bytes(4 * count))
    return np.frombuffer(stream, dtype="<u4")  # read-only, no copy: added into the sums


def encrypt(key: bytes, plaintext: bytes, nonce: bytes) -> bytes:
    """AES-256-GCM of ``plaintext`` under ``key``: the nonce, then the ciphertext and its tag."""
    return nonce + AESGCM(key).encrypt(nonce, plaintext, None)


def decrypt(key: bytes, message: bytes) -> bytes:
    """What :func:`encrypt` wrote, checked (a changed byte raises ``cryptography``'s InvalidTag)."""
    return AESGCM(key).decrypt(message[:NONCE_BYTES], message[NONCE_BYTES:], None)


def split_secret(secret: bytes, threshold: int, count: int) -> list[bytes]:
    """``count`` shares of ``secret`` (16 or 32 bytes), any ``threshold`` of which rebuild it: each
    16-byte half shared by Shamir's scheme, a share written as its index and the halves' shares."""
    from Crypto.Protocol.SecretSharing import Shamir

    halves = [secret[i : i + HALF] for i in range(0, len(secret), HALF)]
    per_half = [Shamir.split(threshold, count, half) for half in halves]
    return [
        bytes([index]) + b"".join(part[i][1] for part in per_half) for i, (index, _) in enumerate(per_half[0])
    ]


def combine_secret(shares: list[bytes]) -> bytes:
    """The secret that ``shares`` (from :func:`split_secret`, at least its threshold) rebuild."""
    from Crypto.Protocol.SecretSharing import Shamir

    halves = (len(shares[0]) - 1) // HALF
    parts = []
    for h in range(halves):
        parts.append(Shamir.combine([(s[0], s[1 + h * HALF : 1 + (h + 1) * HALF]) for s in shares]))
    return b"".join(parts)
