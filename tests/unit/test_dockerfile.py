"""The Dockerfile reader splits instructions as BuildKit's parser does (directives,
comments, continuations, flags) and names what would make dockerd fetch."""

from __future__ import annotations

import pytest

from dockergate.api.dockerfile import DockerfileError, base_images, parse, url_sources


def urls(text: str) -> list[str]:
    return [s for ins in parse(text) for s in url_sources(ins)]


def test_instructions_continuations_and_comments() -> None:
    text = (
        "\ufeff# a comment\n"
        "FROM busybox AS base\n"
        "RUN echo a \\\n"
        "  # a comment inside the continuation\n"
        "\n"
        "  && echo b\n"
        "add --chown=1:1 a.txt /a\n"
    )
    ins = parse(text)
    assert [(i.keyword, i.line) for i in ins] == [("from", 2), ("run", 3), ("add", 7)]
    assert ins[1].rest == "echo a   && echo b"
    assert ins[2].flags == ("--chown=1:1",) and ins[2].flag("chown") == "1:1"
    assert ins[2].words() == ["a.txt", "/a"]


@pytest.mark.parametrize(
    "text",
    [
        "FROM b\nADD http://169.254.169.254/latest /x\n",
        "FROM b\nADD https://host/f /x\n",
        "FROM b\nadd   --chown=1 http://h/f /x\n",
        'FROM b\nADD ["http://h/f", "/x"]\n',
        'FROM b\nADD ["\\u0068ttp://h/f", "/x"]\n',
        "FROM b\nADD \\\n  http://h/f \\\n  /x\n",
        "FROM b\nONBUILD ADD http://h/f /x\n",
        "FROM b\nARG U=http://h/f\nADD $U /x\n",
        "FROM b\nADD ${U} /x\n",
        "FROM b\nADD h\\ttp://h/f /x\n",
        "FROM b\nADD 'http://h/f' /x\n",
        "# escape=`\nFROM b\nADD h`ttp://h/f /x\n",
        "# escape=`\nFROM b\nADD `\n  http://h/f /x\n",
    ],
)
def test_add_sources_that_are_or_may_become_urls(text: str) -> None:
    assert urls(text), text


@pytest.mark.parametrize(
    "text",
    [
        "FROM b\nADD app.tar.gz /opt/\n",
        "FROM b\nADD --chown=1000:1000 src/ /src/\n",
        "FROM b\nCOPY http-notes.txt /x\n",
        "FROM b\nRUN wget http://example.org/f\n",
        "FROM b\nADD a b c /dir/\n",
        'FROM b\nADD ["a file", "/x"]\n',
        "FROM b\nADD f $HOME/x\n",  # the destination may use variables
        "# escape=`\nFROM b\nADD c:\\dir\\f /x\n",  # with ` as escape, \\ is plain
    ],
)
def test_plain_sources_pass(text: str) -> None:
    assert not urls(text), text


def test_escape_directive_only_at_the_top() -> None:
    assert parse("FROM b\n# escape=`\nADD a `\n b /c\n")[1].words() == ["a", "`"]
    with pytest.raises(DockerfileError):
        parse("# escape=x\nFROM b\n")


def test_base_images_stages_and_args() -> None:
    text = (
        "ARG BASE=busybox\n"
        "ARG TAG\n"
        "FROM $BASE:${TAG} AS build\n"
        "FROM build\n"
        "FROM scratch\n"
        "COPY --from=build /a /a\n"
        "COPY --from=0 /a /a\n"
        "COPY --from=registry.local/tools:1 /t /t\n"
    )
    froms, copies = base_images(parse(text), {"TAG": "1.36"})
    assert froms == [(3, "busybox:1.36")]
    assert copies == [(8, "registry.local/tools:1")]


@pytest.mark.parametrize(
    "text",
    [
        "ARG B=busybox\nFROM ${B:-x}\n",
        'FROM "busybox"\n',
        "FROM $UNSET\n",
        "FROM b\nCOPY --from=$X /a /a\n",
    ],
)
def test_unresolvable_references_are_errors(text: str) -> None:
    with pytest.raises(DockerfileError):
        base_images(parse(text), {})


def test_canonical_references_and_build_base_pins() -> None:
    """A tag a member build starts FROM cannot be moved until that build ends, however
    it is spelt; the build's own -t tags do not block it."""
    from types import SimpleNamespace

    from dockergate.api import images
    from dockergate.listen.identity import Refusal

    assert images.canonical("busybox") == "docker.io/library/busybox:latest"
    assert images.canonical("docker.io/library/busybox:latest") == images.canonical("busybox")
    assert images.canonical("registry.local:5000/app") == "registry.local:5000/app:latest"
    build = SimpleNamespace(on_release=[], identity=SimpleNamespace(name="ann", profile="member"))
    tagger = SimpleNamespace(on_release=[], identity=SimpleNamespace(name="bob", profile="member"))
    images.pin_build_bases(build, ["busybox"], frozenset())  # type: ignore[arg-type]
    with pytest.raises(Refusal, match="a build in progress"):
        images.check_not_a_build_base(tagger, "index.docker.io/library/busybox")  # type: ignore[arg-type]
    for undo in build.on_release + tagger.on_release:
        undo()
    images.check_not_a_build_base(tagger, "busybox")  # type: ignore[arg-type]
    own = frozenset({images.canonical("app:dev")})
    images.pin_build_bases(build, ["app:dev"], frozenset())  # type: ignore[arg-type]
    for undo in build.on_release:
        undo()
    mover = SimpleNamespace(on_release=[], identity=SimpleNamespace(name="ann", profile="member"))
    images.check_not_a_build_base(mover, "app:dev")  # type: ignore[arg-type]
    images.pin_build_bases(build, ["app:dev"], own)  # type: ignore[arg-type]  # its own -t
    with pytest.raises(Refusal, match="being moved"):
        images.pin_build_bases(build, ["app:dev"], frozenset())  # type: ignore[arg-type]
    for undo in build.on_release + mover.on_release + tagger.on_release:
        undo()
    assert not images._build_bases and not images._moving_tags


def test_from_platform_is_refused() -> None:
    """dockerd pulls another platform's variant of a local base: its triggers unread."""
    with pytest.raises(DockerfileError, match="platform"):
        base_images(parse("FROM --platform=linux/arm64 busybox\n"), {})


@pytest.mark.parametrize(
    "text",
    [
        # \x1c is whitespace to Python, not to Go: dockerd ends the RUN there
        "FROM b\nRUN true \\\n\x1c\nADD http://h/f /x\n",
        "FROM b\nRUN true \\\n\x1f# x\nADD http://h/f /x\n",
        # a trigger runs with the child's escape token, which may be a backtick
        "FROM b\nONBUILD ADD http:`/`/h/f /x\n",
        "FROM b\nONBUILD ADD http:\\/\\/h/f /x\n",
    ],
)
def test_review4_parser_differences(text: str) -> None:
    from dockergate.api.dockerfile import add_lines

    found = urls(text) + [s for ins in add_lines(text) for s in url_sources(ins, trigger=True)]
    assert found, text


def test_unknown_or_predefined_variables_in_from_are_refused() -> None:
    with pytest.raises(DockerfileError):
        base_images(parse("FROM 127.0.0.1$HTTP_PROXY/img\n"), {"HTTP_PROXY": ":9"})
    with pytest.raises(DockerfileError):
        base_images(parse('ARG B="x y"\nFROM $B\n'), {})
    froms, _ = base_images(parse("ARG B\nFROM busybox$B\n"), {})
    assert froms == [(2, "busybox")]


def test_deep_json_and_onbuild_chains_do_not_recurse() -> None:
    ins = parse("FROM b\nADD " + "[" * 100_000 + "\n")[1]
    assert ins.words()  # falls back to whitespace words, as Go does past its depth cap
    chain = parse("ONBUILD " * 5000 + "ADD a b\n")[0]
    assert url_sources(chain)  # deeper than dockerd allows: refused, without recursing
    assert not url_sources(parse("ONBUILD ONBUILD ADD a b\n")[0])


def test_review5_arg_splitting_and_carriage_returns() -> None:
    from dockergate.api.dockerfile import physical_lines

    # dockerd's parseWords keeps 'a IMG=busybox ' in one word: no IMG is declared there,
    # and the gate reads the same base image as dockerd
    for arg in ('ARG X="a IMG=busybox "', "ARG X=a\\ IMG=busybox"):
        text = f"ARG IMG=127.0.0.1:9/evil:1\n{arg}\nFROM $IMG\n"
        assert base_images(parse(text), {})[0] == [(3, "127.0.0.1:9/evil:1")]
    # a quoted value keeps its spaces and declares nothing else
    text = 'ARG IMG=busybox\nARG GREETING="hello world"\nFROM $IMG\n'
    assert base_images(parse(text), {})[0] == [(3, "busybox")]
    # a name with quotes, an escape or $ declares what dockerd expands it to: none resolves
    for arg in ('ARG "IMG"=evil', "ARG I\\MG=evil", "ARG IMG$X=evil", "ARG 'IMG'"):
        with pytest.raises(DockerfileError):
            base_images(parse(f"ARG IMG=busybox\n{arg}\nFROM $IMG\n"), {})
    # "\\\r\r\n": ScanLines drops one CR; the line then does not end in the escape
    text = "FROM busybox\nENV X=y \\\r\r\nFROM 127.0.0.1:9/evil:1\nRUN true\n"
    assert [i.keyword for i in parse(text)] == ["from", "env", "from", "run"]
    froms, _ = base_images(parse(text), {}, physical_lines(text, ("from", "copy")))
    assert [f for _, f in froms] == ["busybox", "127.0.0.1:9/evil:1"]
    # CRLF files still read as usual, continuations included
    crlf = "FROM busybox AS b\r\nRUN echo a \\\r\n  && echo b\r\nFROM b\r\n"
    assert [i.keyword for i in parse(crlf)] == ["from", "run", "from"]
    froms, _ = base_images(parse(crlf), {}, physical_lines(crlf, ("from", "copy")))
    assert [f for _, f in froms] == ["busybox"]


def test_review6a_arg_names_and_triggers_read_one_by_one() -> None:
    from dockergate.api.dockerfile import trigger_instructions

    # dockerd expands ARG names: ARG IMG$NOPE=x declares IMG; then no meta ARG resolves
    for arg in ("ARG IMG$NOPE=127.0.0.1:9/evil:1", "ARG K=IMG\nARG ${K}=127.0.0.1:9/evil:1"):
        with pytest.raises(DockerfileError):
            base_images(parse(f"ARG IMG=busybox\n{arg}\nFROM $IMG\n"), {})
    froms, _ = base_images(parse("ARG IMG=busybox\nARG OTHER=1\nFROM $IMG\n"), {})
    assert froms == [(3, "busybox")]
    # each trigger is a Dockerfile of its own: a BOM is stripped, nothing joins them
    assert [i.keyword for i in trigger_instructions("\ufeffADD http://x/ /y")] == ["add", "add"]
    assert urls("ONBUILD \ufeffADD http://x/ /y\n") == ["http://x/", "http://x/"]
    assert [s for i in trigger_instructions("RUN true \\") for s in url_sources(i)] == []
    assert [
        s for i in trigger_instructions("RUN true \\\nADD http://x/ /y") for s in url_sources(i)
    ] == ["http://x/"]


def test_healthcheck_instruction_read_for_the_floor() -> None:
    """What the gate checks of a HEALTHCHECK line: its intervals (0 when left out, for
    dockerd to fill), NONE; JSON arguments that are not strings (which the builder
    refuses) are read as a command, not an error that would end the request."""
    from dockergate.api.images import instruction_healthcheck

    fast = instruction_healthcheck(parse("HEALTHCHECK --interval=100ms CMD true")[0])
    assert fast == {"Test": ["CMD-SHELL"], "Interval": 100_000_000, "StartInterval": 0}
    assert instruction_healthcheck(parse("HEALTHCHECK NONE")[0])["Test"] == ["NONE"]
    odd = instruction_healthcheck(parse('HEALTHCHECK ["CMD", 1]')[0])
    assert odd == {"Test": ["CMD-SHELL"], "Interval": 0, "StartInterval": 0}
