"""The encrypted backup file: a tar stream sealed with a passphrase, in authenticated chunks.

Layout::

    FACEWARDEN-BACKUP 1\\n
    {"kdf": "scrypt", "n": 32768, "r": 8, "p": 1, "salt": ..., "nonce": ..., "chunk": ..., "check": ...}\\n
    [4-byte big-endian length][AES-256-GCM ciphertext + tag]   (one per chunk of the tar stream)
    ...

* The key is scrypt(passphrase, salt) (32 MiB of memory per guess); ``check`` is an HMAC made with
  a second half of the scrypt output, so a wrong passphrase is told apart from a damaged file.
* Chunk ``i`` is sealed with the nonce ``nonce || i (4 bytes) || final (1 byte)`` and the header as
  associated data: a changed byte anywhere fails authentication, chunks cannot be reordered or
  dropped, and a file cut after any chunk lacks the chunk marked final (the "STREAM"
  construction), so truncation is detected and said as such.
* Nothing is held in memory whole: a database of many gigabytes streams through.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import struct
from collections.abc import Iterator
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import InvalidBackup, WrongPassphrase

MAGIC = b"FACEWARDEN-BACKUP 1\n"
CHUNK = 1 << 20
#: scrypt cost: n = 2**15, r = 8 (32 MiB, about 0.1 s per guess on one core).
SCRYPT = {"n": 1 << 15, "r": 8, "p": 1}
_MAX_HEADER = 4096


def _keys(passphrase: str, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes]:
    if not passphrase:
        raise WrongPassphrase("The backup passphrase is empty: give the one the backup was made with.")
    out = Scrypt(salt=salt, length=64, n=n, r=r, p=p).derive(passphrase.encode())
    return out[:32], out[32:]


def _check(check_key: bytes) -> str:
    return hmac.new(check_key, b"facewarden-backup-passphrase-check", hashlib.sha256).hexdigest()


def _nonce(prefix: bytes, index: int, final: bool) -> bytes:
    return prefix + struct.pack(">IB", index, 1 if final else 0)


class SealedWriter(io.RawIOBase):
    """A writable stream that seals what is written into ``out`` (call :meth:`close` to finish)."""

    def __init__(self, out: IO[bytes], passphrase: str) -> None:
        super().__init__()
        salt, prefix = os.urandom(16), os.urandom(7)
        enc_key, check_key = _keys(passphrase, salt, **SCRYPT)
        header = {
            "kdf": "scrypt",
            **SCRYPT,
            "salt": salt.hex(),
            "nonce": prefix.hex(),
            "chunk": CHUNK,
            "check": _check(check_key),
        }
        self._head = MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n"
        self._out = out
        self._aead = AESGCM(enc_key)
        self._prefix = prefix
        self._buf = bytearray()
        self._index = 0
        out.write(self._head)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        b = bytes(data)
        self._buf += b
        while len(self._buf) > CHUNK:  # keep one chunk back: the last one is sealed as final
            self._seal(bytes(self._buf[:CHUNK]), final=False)
            del self._buf[:CHUNK]
        return len(b)

    def _seal(self, plain: bytes, final: bool) -> None:
        sealed = self._aead.encrypt(_nonce(self._prefix, self._index, final), plain, self._head)
        self._out.write(struct.pack(">I", len(sealed)) + sealed)
        self._index += 1

    def close(self) -> None:
        if not self.closed:
            self._seal(bytes(self._buf), final=True)
            self._buf.clear()
        super().close()


def _read_header(src: IO[bytes], passphrase: str) -> tuple[bytes, AESGCM, bytes]:
    magic = src.read(len(MAGIC))
    if magic != MAGIC:
        raise InvalidBackup("This is not a facewarden backup (its first bytes are not a backup header).")
    line = src.readline(_MAX_HEADER)
    try:
        header = json.loads(line)
        salt, prefix = bytes.fromhex(header["salt"]), bytes.fromhex(header["nonce"])
        n, r, p = int(header["n"]), int(header["r"]), int(header["p"])
        assert header["kdf"] == "scrypt" and len(prefix) == 7 and n <= 1 << 20 and r <= 16 and p <= 4
    except (ValueError, KeyError, TypeError, AssertionError):
        raise InvalidBackup("The backup's header is damaged or truncated.") from None
    enc_key, check_key = _keys(passphrase, salt, n, r, p)
    if not hmac.compare_digest(_check(check_key), str(header.get("check"))):
        raise WrongPassphrase(
            "Wrong passphrase: it does not open this backup (or the backup's header was changed)."
        )
    return MAGIC + line, AESGCM(enc_key), prefix


def _exactly(src: IO[bytes], n: int) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise InvalidBackup("The backup is truncated: it ends in the middle of a block.")
    return data


def opened_chunks(src: IO[bytes], passphrase: str) -> Iterator[bytes]:
    """The plain chunks of a sealed stream; raises WrongPassphrase or InvalidBackup (tampered,
    truncated) at the first problem. The last chunk is only yielded once it proved to be final."""
    head, aead, prefix = _read_header(src, passphrase)
    index = 0
    length = src.read(4)
    if len(length) < 4:
        raise InvalidBackup("The backup is truncated: it holds no data after its header.")
    while True:
        (n,) = struct.unpack(">I", length)
        if n > CHUNK + 16:
            raise InvalidBackup(f"The backup was tampered with: block {index} has an impossible length.")
        sealed = _exactly(src, n)
        length = src.read(4)
        final = not length
        if length and len(length) < 4:
            raise InvalidBackup("The backup is truncated: it ends in the middle of a block header.")
        try:
            plain = aead.decrypt(_nonce(prefix, index, final), sealed, head)
        except InvalidTag:
            if final:
                try:
                    aead.decrypt(_nonce(prefix, index, False), sealed, head)
                except InvalidTag:
                    pass
                else:
                    raise InvalidBackup(
                        f"The backup is truncated: it ends after block {index}, which is not its last."
                    ) from None
            raise InvalidBackup(
                f"The backup was tampered with or damaged: block {index} fails authentication."
            ) from None
        yield plain
        if final:
            return
        index += 1


class OpenedReader(io.RawIOBase):
    """A readable stream of the plain bytes of a sealed backup (for ``tarfile.open(mode="r|")``)."""

    def __init__(self, src: IO[bytes], passphrase: str) -> None:
        super().__init__()
        self._chunks = opened_chunks(src, passphrase)
        self._buf = b""
        self._started = False

    def start(self) -> None:
        """Check the header and passphrase now (rather than on the first read)."""
        if not self._started:
            self._started = True
            self._buf = next(self._chunks, b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        self.start()
        while not self._buf:
            nxt = next(self._chunks, None)
            if nxt is None:
                return 0
            self._buf = nxt
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def drain(self) -> None:
        """Read to the end, so that a truncation or change after the tar's end is caught too."""
        while self.readinto(bytearray(CHUNK)):
            pass
