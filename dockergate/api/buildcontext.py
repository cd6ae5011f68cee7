"""Read a classic build's context as it streams past, the way dockerd will unpack it.

A non-admin build's Dockerfile must be checked before dockerd runs it (``ADD <url>``
is a fetch done by the daemon, in the host's network). The Dockerfile is inside the
context tar, which may be gigabytes, so the gate does not buffer it: it follows the
stream with :class:`ContextScanner`, forwarding as it goes, and keeps back the bytes
that would let dockerd finish reading the archive (the end-of-archive block, and
always the last piece received) until the Dockerfile has been checked. A refused
build is cut off mid-archive, which dockerd reports as an unexpected EOF: nothing runs.

The scanner mirrors Go's ``archive/tar`` reader and dockerd's ``Unpack``:
  * gzip, bzip2 or xz, by magic (``DecompressStream``), possibly several
    concatenated streams; once only: ``FromArchive`` reads the result with
    ``tarsum`` as a tar, and unpacks tarsum's re-encoded, plain tar;
  * V7, USTAR (with its prefix) and GNU headers with the checksum checked; PAX ``x``
    records (``path``, ``linkpath``, ``size``) and GNU long names (which win over
    PAX); header-only types (links, directories, devices) carry no data whatever
    their size field says; the archive ends at the first all-zero block;
  * later entries replace earlier ones at the same path.
What it cannot be sure to read as Go does is refused: star headers, sparse files,
negative base-256 numbers, NULs in PAX values, ``..`` escaping the context, entries
below a symlink, and a Dockerfile that is not a plain file.
"""

from __future__ import annotations

import bz2
import lzma
import posixpath
import zlib
from collections.abc import Callable
from typing import Protocol

from dockergate.listen.identity import Refusal

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
HIGH_BYTES = bytes(range(128, 256))
DOCKERFILE_CAP = 1 << 20  # a Dockerfile larger than this is refused, not parsed
SPECIAL_CAP = 1 << 20  # Go's maxSpecialFileSize for PAX and GNU long-name data
TRAILING_CAP = 1 << 20  # bytes accepted after the end of the archive (tar padding)
MAX_LAYERS = 1  # DecompressStream; tarsum then reads a tar, compressed or not

HEADER_ONLY = frozenset(b"12345")  # hard link, symlink, char, block, directory
FIFO = ord("6")
REGULAR = frozenset((ord("0"), 0))
META = frozenset(b"xgLK")


class ContextError(Refusal):
    """The context is not an archive the gate can read exactly as dockerd would."""

    def __init__(self, message: str) -> None:
        super().__init__(400, f"build context: {message}")


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes) -> bytes: ...


def _gzip() -> _Decompressor:
    return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)


MAGICS: tuple[tuple[bytes, str, Callable[[], _Decompressor]], ...] = (
    (b"BZh", "bzip2", bz2.BZ2Decompressor),
    (b"\x1f\x8b\x08", "gzip", _gzip),
    (b"\xfd7zXZ\x00", "xz", lzma.LZMADecompressor),
)


class _Layer:
    """One ``DecompressStream``: sniff the magic, then decompress or pass through."""

    def __init__(self) -> None:
        self._head = b""
        self._new: Callable[[], _Decompressor] | None = None
        self._dec: _Decompressor | None = None
        self._decided = False
        self.compressed = False

    def feed(self, data: bytes) -> bytes:
        if not self._decided:
            self._head += data
            if len(self._head) < 6:
                return b""
            data, self._head = self._head, b""
            self._decide(data)
        return self._run(data)

    def close(self) -> bytes:
        if not self._decided:
            data, self._head = self._head, b""
            self._decide(data)
            return self._run(data)
        if self._dec is not None and not self._dec.eof:
            raise ContextError("the compressed stream is cut short")
        return b""

    def _decide(self, head: bytes) -> None:
        self._decided = True
        for magic, _, new in MAGICS:
            if head.startswith(magic):
                self._new, self._dec, self.compressed = new, new(), True
                return

    def _run(self, data: bytes) -> bytes:
        if self._dec is None or self._new is None:
            return data
        out = bytearray()
        while data:
            if self._dec.eof:  # concatenated streams, as Go's readers accept them
                self._dec = self._new()
            try:
                out += self._dec.decompress(data)
            except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
                raise ContextError(f"the compressed stream is corrupt ({exc})") from None
            data = self._dec.unused_data if self._dec.eof else b""
        return bytes(out)


def _string(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    """Go's ``parseNumeric``: base-256 when the top bit is set, else octal."""
    if field and field[0] & 0x80:
        if field[0] & 0x40:
            raise ContextError("negative base-256 number in a tar header")
        value = int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
        if value >> 63:
            raise ContextError("number overflows in a tar header")
        return value
    text = field.strip(b" \0")
    if not text:
        return 0
    if any(c not in b"01234567" for c in text):
        raise ContextError("invalid octal number in a tar header")
    return int(text, 8)


def _checksum_ok(block: bytes) -> bool:
    try:
        stored = _number(block[148:156])
    except ContextError:
        return False
    spaced = block[:148] + b" " * 8 + block[156:]
    unsigned = sum(spaced)
    if stored == unsigned:
        return True
    high = len(spaced) - len(spaced.translate(None, HIGH_BYTES))  # bytes read as negative
    return stored == unsigned - 256 * high


def _pax(data: bytes) -> dict[str, str]:
    """PAX records ``"<len> <key>=<value>\\n"``, as Go's ``parsePAX`` reads them."""
    records: dict[str, str] = {}
    while data:
        space = data.find(b" ")
        try:
            length = int(data[:space]) if space > 0 else -1
        except ValueError:
            length = -1
        if length <= space or length > len(data) or data[length - 1 : length] != b"\n":
            raise ContextError("malformed PAX record")
        key, eq, value = data[space + 1 : length - 1].partition(b"=")
        if not eq or not key or b"\0" in value:
            raise ContextError("malformed PAX record")
        name = key.decode("utf-8", "surrogateescape")
        if name.startswith("GNU.sparse"):
            raise ContextError("sparse files are not accepted in a build context")
        records[name] = value.decode("utf-8", "surrogateescape")
        data = data[length:]
    return records


class ContextScanner:
    """Follow a build context tar and capture the files dockerd will read as its
    Dockerfile (``wanted``: normalised paths, most wanted first)."""

    def __init__(self, wanted: tuple[str, ...]) -> None:
        self.wanted = wanted
        self.ended = False  # the end-of-archive block has been seen
        self.kinds: dict[str, str] = {}  # path -> dir | file | link | other (last wins)
        self.files: dict[str, bytes] = {}  # wanted path -> content of its last entry
        self.compressed = False
        self._layers = [_Layer() for _ in range(MAX_LAYERS)]
        self._buf = bytearray()
        self._skip = 0  # data (and padding) of the current entry still to pass over
        self._pad = 0  # the padding part of _skip
        self._capture: bytearray | None = None
        self._capture_left = 0
        self._capture_path = ""
        self._special: tuple[int, int] | None = None  # (typeflag, size) being read
        self._pax: dict[str, str] = {}
        self._long_name: str | None = None
        self._long_link: str | None = None
        self._trailing = 0

    # ---------------------------------------------------------------- stream

    def feed(self, data: bytes) -> None:
        for layer in self._layers:
            data = layer.feed(data)
        self._tar(data)

    def close(self) -> None:
        """The body has ended: flush the decompressors and check the archive ended."""
        data = b""
        for layer in self._layers:
            data = layer.feed(data) + layer.close()
        self._tar(data)
        self.compressed = any(layer.compressed for layer in self._layers)
        if not self.ended:
            # Go's reader takes EOF where a header would start, or in the last entry's
            # padding, as the end of the archive; anywhere else it is an error.
            if self._buf or self._skip > self._pad:
                raise ContextError("the archive ends in the middle of an entry")
            if self._skip:
                self._skip = 0
                self._entry_done()
        self.ended = True

    # ---------------------------------------------------------------- tar

    def _tar(self, data: bytes) -> None:
        """Walk headers and skip over file data where it lies in ``data``: only a
        header split across pieces is buffered (never file contents, except the
        Dockerfile being captured)."""
        if self.ended:
            self._trailing += len(data)
            if self._trailing > TRAILING_CAP:
                raise ContextError("data after the end of the archive")
            return
        pos, n = 0, len(data)
        if self._buf:  # a header begun in an earlier piece
            pos = min(BLOCK - len(self._buf), n)
            self._buf += data[:pos]
            if len(self._buf) < BLOCK:
                return
            block, self._buf = bytes(self._buf), bytearray()
            self._header(block)
        while not self.ended:
            if self._skip:
                take = min(self._skip, n - pos)
                if take <= 0:
                    break
                if self._capture is not None and self._capture_left:
                    keep = min(take, self._capture_left)
                    self._capture += data[pos : pos + keep]
                    self._capture_left -= keep
                pos += take
                self._skip -= take
                if not self._skip:
                    self._entry_done()
                continue
            if n - pos < BLOCK:
                self._buf += data[pos:]
                pos = n
                break
            self._header(data[pos : pos + BLOCK])
            pos += BLOCK
        if self.ended:
            self._trailing = n - pos
            self._buf = bytearray()

    def _header(self, block: bytes) -> None:
        if block == ZERO_BLOCK:
            self.ended = True  # Go: a zero block, then EOF or a second one, ends it
            return
        if not _checksum_ok(block):
            raise ContextError("not a tar archive (bad header checksum)")
        magic = block[257:263]
        star = magic == b"ustar\0" and block[508:512] == b"tar\0"
        if star:
            raise ContextError("star-format tar headers are not accepted")
        name = _string(block[0:100])
        if magic == b"ustar\0":
            prefix = _string(block[345:500])
            if prefix:  # GNU ("ustar  \0") and V7 headers have no prefix field
                name = f"{prefix}/{name}"
        typeflag = block[156]
        size = _number(block[124:136])
        if typeflag in META:
            if size > SPECIAL_CAP:
                raise ContextError("PAX or GNU long-name data over 1 MiB")
            self._special = (typeflag, size)
            self._capture, self._capture_left = bytearray(), size
            self._skip, self._pad = size + (-size % BLOCK), -size % BLOCK
            if not self._skip:
                self._entry_done()
            return
        if typeflag == ord("S"):
            raise ContextError("sparse files are not accepted in a build context")
        linkname = _string(block[157:257])
        # Go's mergePAX keeps the header's value where a PAX value is empty, and an
        # empty GNU long name is no long name.
        pax, self._pax = {k: v for k, v in self._pax.items() if v}, {}
        if "path" in pax:
            name = pax["path"]
        if "linkpath" in pax:
            linkname = pax["linkpath"]
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise ContextError("malformed PAX size") from None
            if size < 0:
                raise ContextError("malformed PAX size")
        if self._long_name:
            name = self._long_name
        if self._long_link:
            linkname = self._long_link
        self._long_name = self._long_link = None
        del linkname  # links are refused as Dockerfiles; where they point does not matter
        if typeflag == 0 and name.endswith("/"):
            raise ContextError(f"entry {name[:80]!r}: old-style file type with a '/' name")
        if typeflag in HEADER_ONLY or typeflag == FIFO:
            size = 0
        path = self._place(name, typeflag)
        self._capture = None
        if path in self.wanted and typeflag in REGULAR:
            if size > DOCKERFILE_CAP:
                raise ContextError(f"the Dockerfile {path!r} is over 1 MiB")
            self._capture, self._capture_left = bytearray(), size
            self.files[path] = b""
            self._capture_path = path
        self._skip, self._pad = size + (-size % BLOCK), -size % BLOCK
        if not self._skip:
            self._entry_done()

    def _place(self, name: str, typeflag: int) -> str:
        """Record where an entry lands; refuse what could land elsewhere than it says."""
        path = posixpath.normpath(name.lstrip("/") or ".")
        if path == ".." or path.startswith("../"):
            raise ContextError(f"entry {name[:80]!r} points outside the context")
        parent = posixpath.dirname(path)
        while parent:
            if self.kinds.get(parent, "dir") != "dir":
                raise ContextError(f"entry {name[:80]!r} lies below a symlink or a file")
            parent = posixpath.dirname(parent)
        if typeflag == ord("5"):
            kind = "dir"
        elif typeflag in REGULAR:
            kind = "file"
        elif typeflag in (ord("1"), ord("2")):
            kind = "link"
        else:
            kind = "other"
        if path == "." and kind != "dir":
            raise ContextError(f"entry {name[:80]!r} is the context's root but not a directory")
        if path != ".":
            self.kinds[path] = kind
            if kind != "dir":  # dockerd removes what was there, subtree included
                prefix = path + "/"
                for gone in [p for p in self.files if p == path or p.startswith(prefix)]:
                    del self.files[gone]
        return path

    def _entry_done(self) -> None:
        if self._special is not None:
            typeflag, size = self._special
            data = bytes(self._capture or b"")[:size]
            self._special, self._capture = None, None
            if typeflag == ord("x"):
                self._pax = _pax(data)
            elif typeflag == ord("g"):
                _pax(data)  # validated; a global header changes no entry in dockerd
                self._pax, self._long_name, self._long_link = {}, None, None
            elif typeflag == ord("L"):
                self._long_name = _string(data)
            else:
                self._long_link = _string(data)
            return
        if self._capture is not None:
            self.files[self._capture_path] = bytes(self._capture)
            self._capture = None

    # ---------------------------------------------------------------- result

    def dockerfile(self) -> tuple[str, bytes] | None:
        """The Dockerfile dockerd will read (path, content), or None when it will find
        none (and fail by itself). Refuses one it could reach through a link."""
        for path in self.wanted:
            parent = posixpath.dirname(path)
            while parent:
                if self.kinds.get(parent, "dir") != "dir":
                    raise ContextError(f"the Dockerfile's path {path!r} goes through a link")
                parent = posixpath.dirname(parent)
            kind = self.kinds.get(path)
            if kind is None:
                continue
            if kind != "file" or path not in self.files:
                raise ContextError(f"the Dockerfile {path!r} must be a plain file")
            return path, self.files[path]
        return None


def wanted_paths(dockerfile: str | None) -> tuple[str, ...]:
    """Where dockerd looks for the Dockerfile (``withDockerfileFromContext``): the
    ``dockerfile`` parameter inside the context, and for the default name also its
    lower-case spelling."""
    name = dockerfile or "Dockerfile"
    path = posixpath.normpath("/" + name).lstrip("/") or "."
    if name == "Dockerfile":
        return (path, "dockerfile")
    return (path,)
