"""Strict body parsing, re-encoding and Go's key folding (dockergate.api.body)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dockergate.api.body import (
    MAX_DEPTH,
    BodyError,
    dumps,
    format_path,
    go_fold,
    loads_strict,
)

BODIES = Path(__file__).parent / "bodies"


def refused(data: bytes) -> str:
    with pytest.raises(BodyError) as info:
        loads_strict(data)
    assert info.value.status == 400
    return info.value.message


# --- what is accepted --------------------------------------------------------


def test_plain_body_parses_to_plain_values() -> None:
    body = b' {"Image": "busybox", "Cmd": ["sh"], "Tty": true, "StopTimeout": 10,\n'
    body += b' "X": 1.5, "N": null, "HostConfig": {"Memory": 1073741824}} \r\n'
    assert loads_strict(body) == {
        "Image": "busybox",
        "Cmd": ["sh"],
        "Tty": True,
        "StopTimeout": 10,
        "X": 1.5,
        "N": None,
        "HostConfig": {"Memory": 1073741824},
    }
    assert type(loads_strict(b'{"a": {}}')["a"]) is dict


def test_non_object_top_level_values_are_allowed() -> None:
    assert loads_strict(b'["a=b", "c=d"]') == ["a=b", "c=d"]  # plugin set
    assert loads_strict(b"3") == 3


def test_escapes_and_unicode() -> None:
    assert loads_strict(b'{"\\u0049mage": "caf\\u00e9 \\ud83d\\ude00"}') == {"Image": "café 😀"}
    body = '{"Labels": {"k": "\u017f \u212a"}}'.encode()
    assert loads_strict(body) == {"Labels": {"k": "\u017f \u212a"}}


def test_nesting_up_to_the_limit() -> None:
    body = b'{"a":' * (MAX_DEPTH - 1) + b"[]" + b"}" * (MAX_DEPTH - 1)
    loads_strict(body)


def test_every_captured_body_parses() -> None:
    files = sorted(BODIES.glob("*--*.json"))
    assert len(files) > 40
    for f in files:
        loads_strict(f.read_bytes())


# --- what is refused -----------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"   ", b"\r\n\t "])
def test_empty_body(data: bytes) -> None:
    assert "empty" in refused(data)


def test_byte_order_mark() -> None:
    assert "byte order mark" in refused(b'\xef\xbb\xbf{"Image": "a"}')


def test_invalid_utf8_says_where() -> None:
    msg = refused(b'{"Image": "\xff"}')
    assert "UTF-8" in msg and "byte 11" in msg


def test_utf16_is_not_guessed() -> None:
    # json.loads(bytes) would detect UTF-16; dockerd would not.
    refused('{"Image": "a"}'.encode("utf-16"))


def test_duplicate_top_level_key() -> None:
    msg = refused(b'{"Image": "a", "Image": "b"}')
    assert msg == 'duplicate key "Image" in the top-level object'


def test_duplicate_key_spelled_with_an_escape() -> None:
    assert "duplicate" in refused(b'{"Image": "a", "\\u0049mage": "b"}')


def test_duplicate_nested_key_gives_the_path() -> None:
    msg = refused(b'{"HostConfig": {"Privileged": false, "Privileged": true}}')
    assert msg == 'duplicate key "Privileged" in HostConfig'
    body = b'{"HostConfig": {"Mounts": [{}, {"Type": "bind", "Type": "volume"}]}}'
    assert refused(body) == 'duplicate key "Type" in HostConfig.Mounts[1]'
    body = b'{"Labels": {"a.b": {"x": 1, "x": 2}}}'
    assert refused(body) == 'duplicate key "x" in Labels["a.b"]'


def test_map_keys_differing_in_case_are_not_duplicates() -> None:
    assert loads_strict(b'{"Labels": {"a": "1", "A": "2"}}') == {"Labels": {"a": "1", "A": "2"}}


@pytest.mark.parametrize(
    "literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1E999"]
)
def test_non_finite_numbers(literal: bytes) -> None:
    msg = refused(b'{"HostConfig": {"CpuPercent": ' + literal + b"}}")
    assert "invalid JSON" in msg


def test_overlong_numbers() -> None:
    refused(b"1" * 65)
    refused(b"0." + b"1" * 70)
    refused(b"9" * 5000)  # past int()'s digit limit: still a 400, not a crash
    assert loads_strict(b"-9223372036854775808") == -(2**63)


@pytest.mark.parametrize(
    "data",
    [
        b'{"Image": "a"} {"Image": "b"}',
        b'{"Image": "a"} garbage',
        b'{"Image": "a"}x',
        b'{"Image": "a"}\x00',
        b'{"Image": "a"},',
        b"[] []",
    ],
)
def test_trailing_data(data: bytes) -> None:
    assert "unexpected data after the JSON value" in refused(data)


def test_syntax_errors_say_where() -> None:
    msg = refused(b'{\n  "Image": "a",\n  "Cmd": [1,]\n}')
    assert "line 3" in msg and "byte" in msg
    refused(b"{'Image': 'a'}")
    refused(b'{"Image": "a\x01"}')  # raw control character in a string
    refused(b'{"Image": "\\x41"}')


def test_deep_nesting_is_a_400() -> None:
    for depth in (MAX_DEPTH + 1, 5_000, 200_000):
        msg = refused(b"[" * depth + b"]" * depth)
        assert "nested deeper" in msg
    msg = refused(b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1))
    assert "nested deeper" in msg


def test_unclosed_deep_nesting_is_a_400() -> None:
    refused(b"[" * 100_000)


@pytest.mark.parametrize(
    "data",
    [
        b'{"Image": "\\ud800"}',
        b'{"Image": "\\udc00x"}',
        b'{"\\ud83d": 1}',
        b'{"Env": ["A=\\ude00"]}',
    ],
)
def test_lone_surrogates(data: bytes) -> None:
    assert "surrogate" in refused(data)


# --- re-encoding ---------------------------------------------------------------------


def test_dumps_is_compact_ascii_and_round_trips() -> None:
    obj = {"Image": "café", "Labels": {"\u017f": "\u212a"}, "Cmd": ["a", "b"], "N": None, "F": 0.1}
    data = dumps(obj)
    assert data == (
        b'{"Image":"caf\\u00e9","Labels":{"\\u017f":"\\u212a"},"Cmd":["a","b"],"N":null,"F":0.1}'
    )
    assert data.isascii()
    assert loads_strict(data) == obj


def test_dumps_refuses_non_json() -> None:
    with pytest.raises(ValueError):
        dumps({"a": float("nan")})
    with pytest.raises(TypeError):
        dumps({"a": {1, 2}})


def test_captured_bodies_round_trip() -> None:
    for f in sorted(BODIES.glob("*--*.json")):
        obj = loads_strict(f.read_bytes())
        again = dumps(obj)
        assert loads_strict(again) == obj
        assert dumps(loads_strict(again)) == again


def test_format_path() -> None:
    assert format_path([]) == "(body)"
    assert format_path(["HostConfig", "Binds", 2]) == "HostConfig.Binds[2]"
    assert format_path(["Labels", "com.example.a"]) == 'Labels["com.example.a"]'
    assert format_path([0, "Name"]) == "[0].Name"


# --- Go's key folding -------------------------------------------------------------


def test_go_fold_known_cases() -> None:
    assert go_fold("HostConfig") == go_fold("hostconfig") == go_fold("HOSTCONFIG")
    # U+017F LATIN SMALL LETTER LONG S folds with s/S.
    assert go_fold("Ho\u017ftConfig") == go_fold("HostConfig")
    assert go_fold("Label\u017f") == go_fold("Labels")
    # U+212A KELVIN SIGN folds with k/K.
    assert go_fold("\u212aernelMemory") == go_fold("KernelMemory")
    assert go_fold("DetachKey\u017f") == go_fold("detachkeys")


def test_go_fold_is_simple_not_full_folding() -> None:
    # str.casefold() would make these equal; Go does not.
    assert "ß".casefold() == "ss"
    assert go_fold("ß") != go_fold("ss")
    assert go_fold("\u1e9e") == go_fold("ß")  # capital sharp s: simple folding (S)
    assert go_fold("\ufb01") != go_fold("fi")  # fi ligature: full folding only
    # Turkic mappings (status T) are not folded: dotted capital I and dotless
    # small i match neither i nor I.
    for c in ("\u0130", "\u0131"):
        assert go_fold(c) not in (go_fold("i"), go_fold("I"))
    assert go_fold("\u0130mage") != go_fold("Image")


def test_go_fold_multi_member_orbits() -> None:
    # Greek sigma with final sigma; micro sign with Greek mu; Angstrom sign.
    assert go_fold("\u03a3") == go_fold("\u03c3") == go_fold("\u03c2")
    assert go_fold("\u00b5") == go_fold("\u03bc") == go_fold("\u039c")
    assert go_fold("\u00c5") == go_fold("\u00e5") == go_fold("\u212b")
    # DZ with caron: upper, title and lower case.
    assert go_fold("\u01c4") == go_fold("\u01c5") == go_fold("\u01c6")
    assert go_fold("ab") != go_fold("a")


def test_only_long_s_and_kelvin_fold_onto_ascii_letters() -> None:
    # Every Engine API field name is ASCII, so these two are the whole
    # non-ASCII attack surface of Go's key matching.
    ascii_folds = {go_fold(chr(c)) for c in range(128)}
    onto_ascii = {
        chr(c)
        for c in range(128, 0x110000)
        if not 0xD800 <= c <= 0xDFFF and go_fold(chr(c)) in ascii_folds
    }
    assert onto_ascii == {"\u017f", "\u212a"}


def test_go_fold_matches_go_1_19() -> None:
    """Same classes as Go 1.19's strings.EqualFold (data from go_fold_classes.go).

    Python's Unicode tables are newer than Go 1.19's (13.0): characters added
    since may form classes Go does not know.  That only ever makes the gate
    stricter, so such extra classes are allowed, as long as none of their
    members is folded with anything by Go.
    """
    data = json.loads((BODIES / "go1.19-fold-classes.json").read_text())
    assert data["unicode"] == "13.0.0"
    go_class: dict[int, tuple[int, ...]] = {}
    for cls in data["classes"]:
        for c in cls:
            go_class[c] = tuple(cls)
    ours: dict[str, list[int]] = {}
    for c in range(0x110000):
        if not 0xD800 <= c <= 0xDFFF:
            ours.setdefault(go_fold(chr(c)), []).append(c)
    our_class = {c: tuple(cls) for cls in ours.values() if len(cls) > 1 for c in cls}
    for c, cls in go_class.items():
        assert our_class.get(c) == cls, f"U+{c:04X}"
    extra = {cls for c, cls in our_class.items() if c not in go_class}
    for cls in extra:
        assert not any(c in go_class for c in cls)
        assert all(c > 0x2000 for c in cls)
    assert len(extra) < 100
