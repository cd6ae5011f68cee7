"""Review round 8a: where the gate's Dockerfile reading differs from dockerd 20.10's
(vendored BuildKit ``frontend/dockerfile/parser``)."""

from __future__ import annotations

from dockergate.api import dockerfile


def test_a_line_ending_in_two_escapes_is_not_continued():
    r"""BuildKit's ``lineContinuationRegex`` is ``([^\\])\\[ \t]*$|^\\[ \t]*$``: the
    final escape must follow a character that is *not* the escape token, so a line
    ending in ``\\`` ends its instruction. The gate's ``continued`` takes any final
    escape, and joins the next line into this one: the ``FROM`` below is hidden
    inside an ARG, and the meta ARGs read past dockerd's first FROM."""
    text = "ARG Z=\\\\\nFROM busybox\n"
    assert [i.keyword for i in dockerfile.parse(text)] == ["arg", "from"]


def test_a_line_ending_in_two_backticks_is_not_continued():
    text = "# escape=`\nARG Z=``\nFROM busybox\n"
    assert [i.keyword for i in dockerfile.parse(text)] == ["arg", "from"]


def test_meta_args_stop_at_the_first_from_dockerd_sees():
    """The build-check consequence: dockerd expands the second FROM with the meta ARG
    IMG=127.0.0.1:9/x:1 (a stage's ARG is not a meta ARG); the gate resolves it to
    busybox, having read the stage's ``ARG IMG=busybox`` as a meta ARG."""
    text = "ARG IMG=127.0.0.1:9/x:1\nARG Z=\\\\\nFROM busybox\nARG IMG=busybox\nFROM $IMG\n"
    parsed = dockerfile.parse(text)
    second = dockerfile.physical_lines(text, ("from", "copy"))
    froms, _ = dockerfile.base_images(parsed, {}, second)
    assert "127.0.0.1:9/x:1" in [image for _, image in froms], froms


def test_a_line_ending_in_one_escape_is_continued():
    """Neighbour: the ordinary continuation."""
    text = "FROM busybox\nRUN echo a \\\n  b\n"
    assert [i.keyword for i in dockerfile.parse(text)] == ["from", "run"]


def test_prune_until_reads_what_dockerd_reads() -> None:
    import time

    import pytest

    from dockergate.api.images import prune_until
    from dockergate.listen.identity import Refusal

    now = int(time.time())
    assert abs(prune_until(["24h"]) - (now - 86400)) <= 1  # type: ignore[operator]
    assert abs(prune_until(["1h30m"]) - (now - 5400)) <= 1  # type: ignore[operator]
    assert prune_until(["1700000000"]) == 1700000000
    assert prune_until(["2026-01-01T00:00:00Z"]) == 1767225600
    assert prune_until([]) is None
    for bad in (["yesterday"], ["1h", "2h"]):
        with pytest.raises(Refusal):
            prune_until(bad)
