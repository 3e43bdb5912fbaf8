"""SecAgg+: the server learns the sum of a round's uploads and nothing else of any one of them.

The protocol of Bonawitz et al. ("Practical Secure Aggregation for Privacy-Preserving Machine
Learning", CCS 2017) over the sparse graph of Bell et al. ("Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead", CCS 2020), for the devices of one round, every message real bytes that
the server relays and the ledger counts (:attr:`SecAggOutcome.bytes`, by kind and direction):

0. **Keys.** Each device draws two X25519 key pairs (one to encrypt shares, one to agree masks)
   and sends the public halves; the server sends each device its neighbours' (:mod:`.graph`).
1. **Shares.** Each device draws a self-mask seed ``b`` and Shamir-shares ``b`` and its mask key
   among its k neighbours, threshold t; each share travels encrypted (AES-GCM, a key agreed with
   the receiver) through the server.
2. **Masked input.** Each device that still reports sends its input (uint32 words) plus the
   self mask ``PRG(b)`` plus, for each neighbour j that shared, ``+-PRG(s_ij)`` (+ towards a
   larger id), all modulo 2^32: between two reporting neighbours the pair's masks cancel.
3. **Unmasking.** The server names the devices that reported and those that shared and then fell
   silent; each answering device sends, per neighbour, the share of ``b`` (reported) or of the
   mask key (silent), never both. With t of a device's shares the server rebuilds its secret,
   removes the self masks of those that reported and the silent ones' pairwise masks from their
   neighbours' inputs, and holds the sum of the reported inputs, exactly.

Devices can fall silent at three points: before sharing (they are left out), after sharing
(``inputs`` has no entry for them: their masks are removed) and after sending their masked input
(``silent_after_masking``: their input counts, their shares of others are missing). A device whose
secret has fewer than t answering neighbours stops the round (:class:`SecAggAborted`): the server
learns nothing and applies nothing. With t > k / 2 the server cannot gather both of one device's
secrets from honest devices. The threat model: an honest-but-curious server, colluding with fewer
than t of any device's neighbours.

Example::

    >>> protocol = SecAggPlus(neighbours=3, threshold=2, seed=0)
    >>> inputs = {d: np.full(4, d, dtype=np.uint32) for d in (1, 2, 3, 5)}  # device 4 fell silent
    >>> outcome = protocol.run([1, 2, 3, 4, 5], inputs, step=0)
    >>> outcome.total.tolist(), outcome.reported, outcome.silent
    ([11, 11, 11, 11], [1, 2, 3, 5], [4])
"""

import struct
from dataclasses import dataclass, field

import numpy as np

from lightning_fed.secure.aborted import SecAggAborted
from lightning_fed.secure.graph import neighbour_graph
from lightning_fed.secure.options import check_secagg
from lightning_fed.secure.primitives import (
    NONCE_BYTES,
    KeySource,
    agree,
    combine_secret,
    decrypt,
    encrypt,
    key_from_bytes,
    mask_words,
    private_bytes,
    public_bytes,
    split_secret,
)

IDS = struct.Struct("<II")  # sender, receiver (or owner, index)
ID = struct.Struct("<I")
SECRET_SHARE_BYTES = 1 + 32  # a share of a 32-byte secret: its index and two 16-byte halves


@dataclass
class SecAggOutcome:
    """What the server holds after a round: ``total``, the sum of the reported inputs modulo 2^32;
    who reported; who shared and fell silent; the bytes of every kind of message, by direction."""

    total: np.ndarray
    reported: list[int]
    silent: list[int]
    bytes: dict[str, int] = field(default_factory=dict)


class _Device:
    """One device's side: its keys, its secrets, the shares it holds of its neighbours'."""

    def __init__(self, ident: int, source: KeySource) -> None:
        self.ident, self.source = ident, source
        self.cipher_key, self.mask_key = source.key_pair(), source.key_pair()
        self.held: dict[int, tuple[bytes, bytes]] = {}  # neighbour -> (share of b, share of mask key)

    def advertise(self) -> bytes:
        return ID.pack(self.ident) + public_bytes(self.cipher_key) + public_bytes(self.mask_key)

    def share(self, keys: dict[int, tuple[bytes, bytes]], threshold: int) -> dict[int, bytes]:
        """Encrypted shares of ``b`` and the mask key, one message per neighbour in ``keys``."""
        self.keys = keys
        self.seed = self.source.random_bytes(32)
        neighbours = sorted(keys)
        b_shares = split_secret(self.seed, threshold, len(neighbours))
        key_shares = split_secret(private_bytes(self.mask_key), threshold, len(neighbours))
        out = {}
        for j, b_share, key_share in zip(neighbours, b_shares, key_shares, strict=True):
            secret = agree(self.cipher_key, keys[j][0], b"share")
            plain = IDS.pack(self.ident, j) + b_share + key_share
            out[j] = encrypt(secret, plain, self.source.random_bytes(NONCE_BYTES))
        return out

    def receive(self, sender: int, message: bytes) -> None:
        plain = decrypt(agree(self.cipher_key, self.keys[sender][0], b"share"), message)
        if IDS.unpack_from(plain) != (sender, self.ident):
            raise SecAggAborted(f"a share from device {sender} was addressed to another device")
        half = (len(plain) - IDS.size) // 2
        self.held[sender] = (plain[IDS.size : IDS.size + half], plain[IDS.size + half :])

    def masked(self, words: np.ndarray) -> bytes:
        """``words`` plus the self mask and the pairwise masks with every neighbour that shared."""
        masked = words.astype(np.uint32, copy=True)
        masked += mask_words(self.seed, masked.size)
        for j in sorted(self.held):
            pairwise = mask_words(agree(self.mask_key, self.keys[j][1]), masked.size)
            if self.ident < j:
                masked += pairwise
            else:
                masked -= pairwise
        return masked.astype("<u4", copy=False).tobytes()  # no copy where words are little-endian

    def unmask(self, reported: set[int], silent: set[int]) -> bytes:
        """Per neighbour that shared: the share of its ``b`` if it reported, of its mask key if not."""
        if reported & silent:
            raise SecAggAborted("the server named a device both reported and silent; no shares sent")
        parts = []
        for owner, (b_share, key_share) in sorted(self.held.items()):
            if owner in reported:
                parts.append(ID.pack(owner) + b"b" + b_share)
            elif owner in silent:
                parts.append(ID.pack(owner) + b"s" + key_share)
        return b"".join(parts)


class SecAggPlus:
    """Secure aggregation of a round's uint32 inputs (see the module's docstring).

    Args:
        neighbours: k, how many devices each one agrees masks with and shares its secrets
            among (k >= the round's devices - 1: classic SecAgg, the complete graph).
        threshold: t, the shares (of k) that rebuild a secret; k / 2 < t <= k.
        seed: None draws every key from the operating system; a seed makes the round a
            reproducible simulation.
    """

    def __init__(self, neighbours: int, threshold: int, seed=None) -> None:
        check_secagg(neighbours, threshold)
        self.neighbours, self.threshold, self.seed = neighbours, threshold, seed

    def run(
        self,
        devices: list[int],
        inputs: dict[int, np.ndarray],
        *,
        step: int,
        silent_before_sharing=(),
        silent_after_masking=(),
        reported=None,
        add_across=None,
        stream: int = 0,
    ) -> SecAggOutcome:
        """One round among ``devices``; ``inputs``: the words of each device that reports.

        Across processes each one hosts some of the devices: ``inputs`` holds its own devices'
        words, ``reported`` every process's reporting devices, and ``add_across(total, sent)``
        returns the sums over the processes of the partial masked sum and of the bytes of the masked
        inputs sent from here. Each process draws every device's keys and shares from the seed (the
        same draws everywhere), masks only its own devices' inputs, and unmasks the sum itself: every
        process holds the same total and counts, as one process does. A second sum in the same
        round (the union's count, :mod:`.support`) gives another ``stream``: other keys and masks.
        """
        seed = (
            None if self.seed is None else (self.seed, step) if stream == 0 else (self.seed, step, 2, stream)
        )
        k, t = min(self.neighbours, len(devices) - 1), self.threshold
        if k < t:
            raise SecAggAborted(
                f"a round of {len(devices)} devices gives each {k} neighbours, under the threshold {t} "
                "(--secagg-threshold): no secret could be rebuilt"
            )
        graph = neighbour_graph(list(devices), k, seed=None if seed is None else (*seed, 1))
        early = set(silent_before_sharing)
        phases = _Round(graph, [d for d in devices if d not in early], t, KeySource(seed), step)
        phases.exchange_keys()
        phases.exchange_shares()
        total, reported, silent = phases.masked_sum(inputs, reported, add_across)
        phases.unmask(total, reported, silent, set(silent_after_masking))
        return SecAggOutcome(total, reported, silent, phases.wire)


class _Round:
    """One round's four phases between the server and the ``present`` devices (those that did not
    fall silent before sharing), each message counted by kind in ``wire`` as the server relays it."""

    def __init__(self, graph: dict, present: list[int], t: int, source: KeySource, step: int) -> None:
        self.graph, self.present, self.t, self.step = graph, present, t, step
        self.local = {d: _Device(d, source) for d in present}  # each device's side, its keys drawn
        self.wire: dict[str, int] = {}
        self.advertised: dict[int, bytes] = {}

    def count(self, kind: str, message: bytes) -> bytes:
        self.wire[kind] = self.wire.get(kind, 0) + len(message)
        return message

    def exchange_keys(self) -> None:
        """0: public keys, up to the server and down to each device's neighbours."""
        self.advertised = {d: self.count("keys/up", self.local[d].advertise()) for d in self.present}
        self.keys = {}
        for d in self.present:
            self.keys[d] = {
                j: (self.advertised[j][4:36], self.advertised[j][36:])
                for j in self.graph[d]
                if j in self.advertised
            }
            for j in self.keys[d]:
                self.count("keys/down", self.advertised[j])

    def exchange_shares(self) -> None:
        """1: each device's encrypted shares of its secrets, through the server to its neighbours."""
        shared = {d: self.local[d].share(self.keys[d], self.t) for d in self.present}
        for sender, messages in shared.items():
            for receiver, message in messages.items():
                self.count("shares/up", IDS.pack(sender, receiver) + message)
                self.count("shares/down", IDS.pack(sender, receiver) + message)
                self.local[receiver].receive(sender, message)

    def masked_sum(self, inputs: dict[int, np.ndarray], reporting=None, add_across=None):
        """2: the masked inputs of the devices that report (``reporting``, or those of ``inputs``),
        summed modulo 2^32 (``add_across`` adds the other processes' partial sums, None where a
        process hosts none of them, and bytes); who reported, who shared and fell silent."""
        reporting = set(inputs) if reporting is None else set(reporting)
        reported = [d for d in self.present if d in reporting]
        silent = [d for d in self.present if d not in reporting]
        if not reported:
            raise SecAggAborted("no device reported its masked input")
        total, sent = None, 0
        for d in (d for d in reported if d in inputs):
            masked = self.local[d].masked(inputs[d])
            sent += len(masked)
            words = np.frombuffer(masked, dtype="<u4")
            if total is None:
                total = words.copy()
            else:
                total += words
        if add_across is not None:
            total, sent = add_across(total, sent)
        self.wire["masked/up"] = self.wire.get("masked/up", 0) + sent
        return total, reported, silent

    def unmask(self, total: np.ndarray, reported: list[int], silent: list[int], late: set[int]) -> None:
        """3: the answering devices' shares (all reported but ``late``) rebuild the reported devices'
        self masks and the silent ones' pairwise masks, which leave ``total`` (changed in place)."""
        names = b"".join(ID.pack(d) for d in reported + silent)
        answers = {}
        for d in (d for d in reported if d not in late):
            self.count("unmasking/down", names)
            answers[d] = self.count("unmasking/up", self.local[d].unmask(set(reported), set(silent)))
        shares, length = _gather(answers), total.size
        for owner in reported:
            total -= mask_words(_rebuild(shares, owner, "b", self.t, self.graph, self.step), length)
        for owner in silent:
            mask_key = key_from_bytes(_rebuild(shares, owner, "s", self.t, self.graph, self.step))
            for j in self.graph[owner]:
                if j in reported and owner in self.local[j].held:
                    pairwise = mask_words(agree(mask_key, self.advertised[j][36:]), length)
                    if j < owner:  # j added +PRG(s_j,owner); take it away
                        total -= pairwise
                    else:
                        total += pairwise


def _gather(answers: dict[int, bytes]) -> dict[tuple[int, str], list[bytes]]:
    """The unmasking answers, parsed: per (owner, kind), the shares the server received."""
    shares: dict[tuple[int, str], list[bytes]] = {}
    for message in answers.values():
        offset = 0
        while offset < len(message):
            (owner,) = ID.unpack_from(message, offset)
            kind = chr(message[offset + ID.size])
            size = SECRET_SHARE_BYTES
            share = message[offset + ID.size + 1 : offset + ID.size + 1 + size]
            shares.setdefault((owner, kind), []).append(share)
            offset += ID.size + 1 + size
    return shares


def _rebuild(shares, owner: int, kind: str, t: int, graph, step: int) -> bytes:
    got = shares.get((owner, kind), [])
    if len(got) < t:
        what = "self-mask seed" if kind == "b" else "mask key"
        raise SecAggAborted(
            f"round {step}: device {owner}'s {what} needs {t} shares (--secagg-threshold), only "
            f"{len(got)} of its {len(graph[owner])} neighbours answered; the round is not applied"
        )
    return combine_secret(got[:t])
