"""Bounded, streaming decompression: the one place job data is expanded.

A few kilobytes of hostile gz, bz2 or xz can expand to gigabytes, and the
decompressors return all of it from one call unless told otherwise. Every
call here asks for at most CHUNK bytes out, counts what came out and stops
with a JobError once a limit is passed, so neither memory nor disk ever
holds more than the limit (plus one chunk) of it.
"""

from __future__ import annotations

import bz2
import io
import lzma
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pipeline.errors import CorruptData, JobError
from pipeline.limits import Bound

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    _Engine = zlib._Decompress | bz2.BZ2Decompressor | lzma.LZMADecompressor

CHUNK = 1024 * 1024
MAGIC = {"gz": b"\x1f\x8b", "bz2": b"BZh", "xz": b"\xfd7zXZ\x00"}
_ERRORS = (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError)
_FED_ON_EMPTY = (bz2.BZ2Decompressor, lzma.LZMADecompressor)  # they keep unread input inside




def sniff(path: Path) -> str | None:
    """The compression of a file by its first bytes (None: not compressed, or not a kind we know)."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    return next((kind for kind, magic in MAGIC.items() if head.startswith(magic)), None)


def _engine(compression: str) -> _Engine:
    if compression == "gz":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if compression == "bz2":
        return bz2.BZ2Decompressor()
    if compression == "xz":
        return lzma.LZMADecompressor()
    raise JobError(f"{compression!r}: not a compression this dispatcher unpacks (gz, bz2, xz)")


class Decompressor:
    """Feed compressed bytes in, get pieces of at most CHUNK out, never more than ``bound`` in total.

    Concatenated streams (``cat a.gz b.gz``, pbzip2's output) are read
    through; bytes after the last stream that do not start another one are
    ignored, as gzip -d and bzip2 -d do.
    """

    def __init__(self, compression: str | None, bound: Bound, what: str):
        self.compression, self.bound, self.what = compression, bound, what
        self.engine: _Engine | None = _engine(compression) if compression else None
        self.produced = 0
        self.tail = b""  # bytes after a finished stream, until we know whether another one starts
        self.trailing = False  # the rest is not compressed data: ignored

    def _count(self, piece: bytes) -> bytes:
        self.produced += len(piece)
        self.bound.check(self.produced, self.what, "unpacks to")
        return piece

    def _pieces(self, data: bytes) -> Iterator[bytes]:
        """Decompress ``data`` with the current engine; leave what follows its end in ``self.tail``."""
        engine = self.engine
        if engine is None:
            return
        try:
            piece = engine.decompress(data, CHUNK)
            while True:
                if piece:
                    yield self._count(piece)
                if engine.eof:
                    self.tail += engine.unused_data
                    return
                if isinstance(engine, _FED_ON_EMPTY):
                    if engine.needs_input:
                        return
                    piece = engine.decompress(b"", CHUNK)
                elif engine.unconsumed_tail:
                    piece = engine.decompress(engine.unconsumed_tail, CHUNK)
                else:
                    return
        except _ERRORS as exc:
            raise CorruptData(self.what, f"not valid {self.compression} data: {exc}") from None

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self.engine is None:
            if data:
                yield self._count(data)
            return
        if self.trailing:
            return
        if self.engine.eof:
            self.tail += data
        else:
            yield from self._pieces(data)
        yield from self._next_streams(final=False)

    def _next_streams(self, final: bool) -> Iterator[bytes]:
        """Start the stream that follows a finished one, once its first bytes tell whether there is one."""
        if self.engine is None or self.compression is None:
            return
        magic = MAGIC[self.compression]
        while self.engine.eof and self.tail and not self.trailing:
            if len(self.tail) < len(magic) and not final:
                return
            if not self.tail.startswith(magic):
                self.trailing, self.tail = True, b""
                return
            data, self.tail = self.tail, b""
            self.engine = _engine(self.compression)
            yield from self._pieces(data)

    def end(self) -> Iterator[bytes]:
        """What is left once the input is over; a JobError if the data stops mid-stream."""
        if self.engine is None or self.trailing:
            return
        yield from self._next_streams(final=True)
        if self.trailing:
            return
        if not isinstance(self.engine, _FED_ON_EMPTY) and not self.engine.eof:
            yield from self._pieces(b"")  # output zlib held back for lack of room
        if not self.engine.eof:
            raise CorruptData(self.what, f"the {self.compression} data ends early (a truncated file?)")


def decompress_chunks(chunks: Iterable[bytes], compression: str | None, bound: Bound, what: str) -> Iterator[bytes]:
    """The decompressed bytes of ``chunks`` (passed through when ``compression`` is None), bounded."""
    decompressor = Decompressor(compression, bound, what)
    for chunk in chunks:
        yield from decompressor.feed(chunk)
    yield from decompressor.end()


def file_chunks(handle: BinaryIO) -> Iterator[bytes]:
    while chunk := handle.read(CHUNK):
        yield chunk


class BoundedReader(io.RawIOBase):
    """A readable file of the decompressed bytes of ``path``, for tarfile's stream mode."""

    def __init__(self, path: Path, compression: str | None, bound: Bound, what: str):
        super().__init__()
        self.handle = open(path, "rb")
        self.pieces = decompress_chunks(file_chunks(self.handle), compression, bound, what)
        self.buffer = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, target: WriteableBuffer) -> int:
        while not self.buffer:
            piece = next(self.pieces, None)
            if piece is None:
                return 0
            self.buffer = memoryview(piece)
        view = memoryview(target).cast("B")
        count = min(len(view), len(self.buffer))
        view[:count] = self.buffer[:count]
        self.buffer = self.buffer[count:]
        return count

    def close(self) -> None:
        self.handle.close()
        super().close()
