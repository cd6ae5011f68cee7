"""The build-context scanner finds the Dockerfile dockerd will read, in every tar and
compression form dockerd unpacks, fed in any split; and refuses what it cannot be
sure to read as Go's archive/tar does."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile

import pytest

from dockergate.api.buildcontext import ContextError, ContextScanner, wanted_paths

DOCKERFILE = b"FROM busybox\nCOPY . /src\n"


def tar_of(*members: tuple[str, bytes | str | None], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """members: (name, content) for files, (name, None) for dirs, (name, "->target")
    for symlinks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(content, str):
                info.type = tarfile.SYMTYPE
                info.linkname = content.removeprefix("->")
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def scan(data: bytes, dockerfile: str | None = None, piece: int = 0) -> ContextScanner:
    s = ContextScanner(wanted_paths(dockerfile))
    step = piece or len(data) or 1
    for i in range(0, len(data), step):
        s.feed(data[i : i + step])
    s.close()
    return s


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
@pytest.mark.parametrize("piece", [0, 1, 7, 511, 512, 513, 4096])
def test_finds_the_dockerfile_in_any_split(fmt: int, piece: int) -> None:
    data = tar_of(("src", None), ("src/a.txt", b"x" * 1000), ("Dockerfile", DOCKERFILE), fmt=fmt)
    assert scan(data, piece=piece).dockerfile() == ("Dockerfile", DOCKERFILE)


@pytest.mark.parametrize(
    "wrap",
    [
        gzip.compress,
        bz2.compress,
        lzma.compress,
        lambda b: gzip.compress(b[:3000]) + gzip.compress(b[3000:]),  # concatenated members
    ],
)
def test_compressed_contexts(wrap) -> None:
    data = tar_of(("pad", b"p" * 5000), ("Dockerfile", DOCKERFILE))
    s = scan(wrap(data), piece=100)
    assert s.dockerfile() == ("Dockerfile", DOCKERFILE)
    assert s.compressed


def test_long_names_pax_and_gnu() -> None:
    deep = "d/" * 80 + "Dockerfile"
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        data = tar_of((deep, DOCKERFILE), fmt=fmt)
        assert scan(data, deep).dockerfile() == (deep, DOCKERFILE)


def test_custom_path_and_lowercase_fallback() -> None:
    data = tar_of(("ci", None), ("ci/build.df", b"FROM a\n"), ("dockerfile", b"FROM b\n"))
    assert scan(data, "ci/build.df").dockerfile() == ("ci/build.df", b"FROM a\n")
    assert scan(data, "./ci//build.df").dockerfile() == ("ci/build.df", b"FROM a\n")
    assert scan(data).dockerfile() == ("dockerfile", b"FROM b\n")  # as dockerd falls back
    assert scan(data, "other").dockerfile() is None  # dockerd fails by itself


def test_the_last_entry_wins() -> None:
    data = tar_of(("Dockerfile", b"FROM a\n"), ("Dockerfile", b"FROM evil\n"))
    assert scan(data).dockerfile() == ("Dockerfile", b"FROM evil\n")


def test_end_of_archive_is_reported_and_trailing_padding_accepted() -> None:
    data = tar_of(("Dockerfile", DOCKERFILE))
    s = ContextScanner(wanted_paths(None))
    end = next(i for i in range(0, len(data), 512) if data[i : i + 512] == bytes(512))
    s.feed(data[:end])
    assert not s.ended
    s.feed(data[end : end + 512])
    assert s.ended
    s.feed(data[end + 512 :] + bytes(10240))
    s.close()


@pytest.mark.parametrize(
    "members, dockerfile, why",
    [
        ((("Dockerfile", "->other"), ("other", DOCKERFILE)), None, "plain file"),
        ((("d", "->."), ("e", None)), "d/Dockerfile", "goes through a link"),
        ((("d", "->."), ("d/Dockerfile", DOCKERFILE)), None, "below a symlink"),
        ((("../Dockerfile", DOCKERFILE),), None, "outside the context"),
    ],
)
def test_refuses_what_could_land_elsewhere(members, dockerfile, why) -> None:
    with pytest.raises(ContextError, match=why):
        scan(tar_of(*members), dockerfile).dockerfile()


def test_a_dockerfile_replaced_by_a_directory_is_not_read() -> None:
    data = tar_of(("Dockerfile", DOCKERFILE), ("Dockerfile", None))
    with pytest.raises(ContextError, match="plain file"):
        scan(data).dockerfile()


def test_header_only_types_carry_no_data() -> None:
    """A symlink header with a non-zero size field: Go reads no data for it, so the
    next header starts right after it. The scanner must not skip that size."""
    link = tarfile.TarInfo("l")
    link.type = tarfile.SYMTYPE
    link.linkname = "x"
    block = bytearray(link.tobuf(tarfile.USTAR_FORMAT))
    block[124:136] = b"%011o\0" % 1024  # size field says 1024
    block[148:156] = b"        "
    block[148:156] = b"%06o\0 " % sum(block)
    data = bytes(block) + tar_of(("Dockerfile", DOCKERFILE), fmt=tarfile.USTAR_FORMAT)
    assert scan(data).dockerfile() == ("Dockerfile", DOCKERFILE)


@pytest.mark.parametrize(
    "data, why",
    [
        (b"not a tar archive at all" * 40, "checksum"),
        # dockerd decompresses once, then reads a tar: gzip inside gzip is no tar
        (
            gzip.compress(gzip.compress(tar_of(("Dockerfile", DOCKERFILE)))),
            "checksum|middle of an entry",
        ),
        (gzip.compress(b"x" * 100)[:-8], "cut short|ends in the middle"),
        (tar_of(("Dockerfile", b"#" * 2000))[:700], "middle of an entry"),
    ],
)
def test_malformed_contexts_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(ContextError, match=why):
        scan(data)


def test_sparse_and_oversized_dockerfiles_are_refused() -> None:
    big = tar_of(("Dockerfile", b"#" * ((1 << 20) + 1)))
    with pytest.raises(ContextError, match="over 1 MiB"):
        scan(big)
    pax = tarfile.TarInfo("Dockerfile")
    pax.pax_headers = {"GNU.sparse.major": "1"}
    pax.size = 0
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(pax, io.BytesIO(b""))
    with pytest.raises(ContextError, match="sparse"):
        scan(buf.getvalue())


def test_eof_where_go_takes_it_as_the_end() -> None:
    """Go's reader ends the archive at EOF where a header would start or in the last
    entry's padding (the docker CLI's -f rewriting sends such tars); EOF inside an
    entry's data or a header is an error."""
    data = tar_of(("Dockerfile", DOCKERFILE), fmt=tarfile.USTAR_FORMAT)
    content_end = 512 + len(DOCKERFILE)
    for cut in (content_end, content_end + 100, 1024):
        assert scan(data[:cut]).dockerfile() == ("Dockerfile", DOCKERFILE), cut
    for cut in (content_end - 1, 1024 + 100):
        with pytest.raises(ContextError, match="middle of an entry"):
            scan(data[:cut])


def test_signed_checksums_are_accepted_as_go_does() -> None:
    """Some old tars sum the header's bytes as signed chars; Go accepts either sum."""
    info = tarfile.TarInfo("caf\u00e9/Dockerfile")
    info.size = len(DOCKERFILE)
    block = bytearray(info.tobuf(tarfile.USTAR_FORMAT, encoding="utf-8"))
    block[148:156] = b" " * 8
    signed = sum(b - 256 if b > 127 else b for b in block)
    assert signed != sum(block)
    block[148:156] = b"%06o\0 " % signed
    data = bytes(block) + DOCKERFILE + bytes(-len(DOCKERFILE) % 512) + bytes(1024)
    path = "caf\u00e9/Dockerfile"
    assert scan(data, path).dockerfile() == (path, DOCKERFILE)
    block[148:156] = b"%06o\0 " % (signed + 1)
    with pytest.raises(ContextError, match="checksum"):
        scan(bytes(block) + DOCKERFILE + bytes(-len(DOCKERFILE) % 512) + bytes(1024), path)


def _meta(typeflag: bytes, data: bytes) -> bytes:
    info = tarfile.TarInfo("././@LongLink")
    info.type = typeflag
    info.size = len(data)
    return info.tobuf(tarfile.USTAR_FORMAT) + data + bytes(-len(data) % 512)


@pytest.mark.parametrize("meta", [_meta(b"L", b""), _meta(b"x", b"8 path=\n")])
def test_empty_long_names_keep_the_header_name_as_go_does(meta: bytes) -> None:
    """Go ignores an empty GNU long name and empty PAX values: the entry keeps the
    name in its header (here the Dockerfile), and the scanner must see it there."""
    data = meta + tar_of(("Dockerfile", DOCKERFILE), fmt=tarfile.USTAR_FORMAT)
    assert scan(data).dockerfile() == ("Dockerfile", DOCKERFILE)


def test_a_file_at_the_contexts_root_is_refused() -> None:
    with pytest.raises(ContextError, match="root"):
        scan(tar_of(("./", DOCKERFILE)))
