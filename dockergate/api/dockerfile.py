"""Read a Dockerfile as dockerd 20.10's classic builder parses it (BuildKit's
``frontend/dockerfile/parser``, without heredocs), to find what a build would make
the daemon itself fetch.

Only the instruction level is parsed: parser directives (``# escape=``), comments,
line continuations, the instruction keyword, its ``--flags`` and its arguments in
JSON or whitespace form. Words are *not* expanded: a word with ``$``, quotes or the
escape character could expand to anything, so where the gate needs a word's value
(an ``ADD`` source, a ``FROM`` image) such a word is refused or resolved from plain
build arguments only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from dockergate.api.gotext import GO_SPACE

_S = r"[\t\n\f\r ]*"  # RE2's \s
DIRECTIVE = re.compile(rf"^#{_S}([a-zA-Z][a-zA-Z0-9]*){_S}={_S}(.+?){_S}$")
WHITESPACE = re.compile(r"[\t\v\f\r ]+")
# Go's unicode.IsSpace (TrimSpace, TrimLeftFunc): Python's str.isspace() also counts
# \x1c-\x1f, so a line of one of those would be blank to the gate and not to dockerd.
ESCAPES = ("\\", "`")
VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
BOM = "\ufeff"


class DockerfileError(ValueError):
    """The Dockerfile would not parse (dockerd would refuse it too)."""


@dataclass(frozen=True)
class Instruction:
    keyword: str  # lower case, as the parser compares it
    flags: tuple[str, ...]
    rest: str  # the arguments after the flags
    line: int
    escape: str

    def words(self) -> list[str]:
        """Arguments as the builder gets them: a JSON string array, or whitespace-split."""
        rest = self.rest.lstrip(GO_SPACE)
        if rest.startswith("["):
            try:
                value, _ = json.JSONDecoder().raw_decode(rest)
            except (ValueError, RecursionError):  # Go's decoder stops at depth 10000:
                value = None  # either way, the words are then split on whitespace
            if isinstance(value, list):
                if not all(isinstance(v, str) for v in value):
                    raise DockerfileError(f"line {self.line}: JSON arguments must be strings")
                return list(value)
        return [w for w in WHITESPACE.split(self.rest) if w] if self.rest else []

    def flag(self, name: str) -> str | None:
        for f in self.flags:
            key, eq, value = f.partition("=")
            if key == f"--{name}":
                return value if eq else ""
        return None

    def plain(self, word: str, *, any_escape: bool = False) -> bool:
        """Whether the builder takes ``word`` as written (nothing to expand or unquote).
        ``any_escape``: for words expanded in a build whose escape token is unknown
        (ONBUILD triggers run with the child build's)."""
        escapes = ESCAPES if any_escape else (self.escape,)
        return not any(c in word for c in ("$", "'", '"', *escapes))


def _is_space(c: str) -> bool:
    return c in GO_SPACE


def _flags(line: str) -> tuple[str, list[str]]:
    """BuildKit's ``extractBuilderFlags``: leading ``--name=value`` words (quotes and
    backslashes allowed inside them); returns the rest of the line and the flags."""
    words: list[str] = []
    word, quote, phase, blank_ok = "", "", "spaces", False
    pos = 0
    n = len(line)
    while pos <= n:
        ch = line[pos] if pos < n else ""
        if phase == "spaces":
            if pos == n:
                break
            if _is_space(ch):
                pos += 1
                continue
            if ch != "-" or pos + 1 == n or line[pos + 1] != "-":
                return line[pos:], words
            phase = "word"
        if pos == n:
            if word != "--" and (blank_ok or word):
                words.append(word)
            break
        if phase == "word":
            if _is_space(ch):
                phase = "spaces"
                if word == "--":
                    return line[pos:], words
                if blank_ok or word:
                    words.append(word)
                word, blank_ok = "", False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote, blank_ok, phase = ch, True, "quote"
                pos += 1
                continue
            if ch == "\\":
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            word += ch
            pos += 1
            continue
        # phase == "quote"
        if ch == quote:
            phase = "word"
            pos += 1
            continue
        if ch == "\\":
            if pos + 1 == n:
                phase = "word"
                pos += 1
                continue
            pos += 1
            ch = line[pos]
        word += ch
        pos += 1
    return "", words


def _instruction(line: str, number: int, escape: str) -> Instruction:
    parts = WHITESPACE.split(line.strip(GO_SPACE), maxsplit=1)
    keyword = parts[0].lower()
    rest, flags = _flags(parts[1] if len(parts) == 2 else "")
    return Instruction(keyword, tuple(flags), rest, number, escape)


def parse(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile, with the line each starts on."""
    # bufio.ScanLines: split on \n and drop *one* \r; dockerd 20.10's parser trims
    # no more (a line ending in "\\\r" after that is not continued).
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    escape = "\\"
    directives_done = False
    seen: set[str] = set()

    def directive(line: str) -> None:
        nonlocal escape, directives_done
        if directives_done:
            return
        m = DIRECTIVE.match(line)
        key = m.group(1).lower() if m else ""
        if not m or key not in ("escape", "syntax"):
            directives_done = True
            return
        if key in seen:
            raise DockerfileError(f"only one {key} parser directive can be used")
        seen.add(key)
        if key == "escape":
            if m.group(2) not in ("\\", "`"):
                raise DockerfileError(f"invalid escape token {m.group(2)!r}")
            escape = m.group(2)

    def processed(raw: str, strip_left: bool) -> str:
        token = raw
        if strip_left:
            token = token.lstrip(GO_SPACE)
        result = "" if token.startswith("#") else token
        directive(token)
        return result

    def is_comment(raw: str) -> bool:
        return raw.lstrip(GO_SPACE).startswith("#")

    def continued(line: str) -> tuple[str, bool]:
        # BuildKit's lineContinuationRegex: ([^E])E[ \t]*$|^E[ \t]*$, so a line ending
        # in two escape characters (an escaped escape) is not continued.
        e = re.escape(escape)
        m = re.search(f"(?<!{e}){e}[ \\t]*\\Z", line)
        if m:
            return line[: m.start()], True
        return line, False

    out: list[Instruction] = []
    i = 0
    while i < len(lines):
        raw = lines[i]
        if i == 0:
            raw = raw.removeprefix(BOM)
        i += 1
        start = i
        line, more = continued(processed(raw, True))
        if not more and line == "":
            continue
        while more and i < len(lines):
            raw = lines[i]
            i += 1
            piece = processed(raw, False)
            if is_comment(raw) or not piece.lstrip(GO_SPACE):
                continue
            piece, more = continued(piece)
            line += piece
        if line.strip(GO_SPACE):
            out.append(_instruction(line, start, escape))
    return out


# ---------------------------------------------------------------- what the daemon fetches


def url_sources(instruction: Instruction, *, trigger: bool = False, depth: int = 0) -> list[str]:
    """Why an ``ADD`` (or ``ONBUILD ADD``) could make dockerd fetch a URL: sources that
    are URLs, or that could expand to one. A trigger (``ONBUILD ADD``, a base image's
    ``ADD``) is expanded with the escape token of the build that runs it, so both
    escape characters count there (``trigger``)."""
    ins = instruction
    if ins.keyword == "onbuild":
        inner = nested_trigger(ins, depth)
        if inner is None:
            return [ins.rest]
        return [source for i in inner for source in url_sources(i, trigger=True, depth=depth + 1)]
    if ins.keyword != "add":
        return []
    words = ins.words()
    problems = [w for w in words[:-1] if "://" in w or not ins.plain(w, any_escape=trigger)]
    if words and "://" in words[-1]:
        problems.append(words[-1])
    return problems


def nested_trigger(onbuild: Instruction, depth: int) -> list[Instruction] | None:
    """An ``ONBUILD``'s trigger, read as the build that runs it reads it: dockerd
    stores the rest of the line as the trigger text (``trigger_instructions``). A
    trigger may itself be an ONBUILD (a commit's OnBuild can hold one, and the child
    build re-stores it); dockerd refuses a chain deeper than that: None, which the
    callers treat as refused."""
    return None if depth >= 2 else trigger_instructions(onbuild.rest)


def writes_gate_labels(instruction: Instruction, *, depth: int = 0) -> bool:
    """Whether a ``LABEL`` (or a trigger of one) could write a ``dockergate.*`` label:
    its text names one once quotes are gone (dockerd shell-processes label keys:
    ``docker"gate".owner`` is ``dockergate.owner``), or holds what could spell one
    (``$`` substitution, an escape character of either kind)."""
    ins = instruction
    if ins.keyword == "onbuild":
        inner = nested_trigger(ins, depth)
        return inner is None or any(writes_gate_labels(i, depth=depth + 1) for i in inner)
    if ins.keyword != "label":
        return False
    text = ins.rest.replace('"', "").replace("'", "").lower()
    return "dockergate" in text or any(c in text for c in ("$", *ESCAPES))


def physical_lines(text: str, keywords: tuple[str, ...]) -> list[Instruction]:
    """Every physical line whose first word is one of ``keywords``, joined with the
    lines after it while a line ends in either escape character: a second reading
    that does not depend on where :func:`parse` puts instruction boundaries, so that a
    difference from BuildKit's parser there cannot hide an ``ADD`` or a ``FROM``."""
    lines = text.removeprefix(BOM).split("\n")
    out: list[Instruction] = []
    for i, raw in enumerate(lines):
        first = raw.strip(GO_SPACE).strip().split(None, 1)
        if not first or first[0].lower() not in keywords:
            continue
        joined, j = raw, i
        while joined.rstrip(" \t\r").endswith(ESCAPES) and j + 1 < len(lines):
            j += 1
            joined = joined.rstrip(" \t\r")[:-1] + " " + lines[j]
        out.append(_instruction(joined.strip(GO_SPACE).strip(), i + 1, "\\"))
    return out


def add_lines(text: str) -> list[Instruction]:
    return physical_lines(text, ("add", "onbuild"))


def trigger_instructions(trigger: str) -> list[Instruction]:
    """An ``ONBUILD`` trigger as the build that runs it reads it: dockerd parses *each*
    trigger alone, as a whole Dockerfile (``dispatchTriggeredOnBuild``: a byte-order
    mark stripped, its own directives and continuations), never joined with the
    others. Its ADD lines are read a second time, as for a Dockerfile."""
    return parse(trigger) + add_lines(trigger)


def resolve(word: str, args: dict[str, str | None], escape: str) -> str | None:
    """Expand ``$NAME`` and ``${NAME}`` from declared, plain build arguments; None when
    the word needs more than that (quotes, modifiers, escapes), or names a variable
    that is not a plain declared ARG (dockerd also knows predefined ones, such as
    ``HTTP_PROXY``, that need no ARG line)."""
    unknown = False

    def value(m: re.Match[str]) -> str:
        nonlocal unknown
        found = args.get(m.group(1) or m.group(2))
        if found is None:
            unknown = True
            return ""
        return found

    expanded = VARIABLE.sub(value, word)
    if unknown or any(c in expanded for c in ("$", "'", '"', escape)):
        return None
    if any(c in word for c in ("'", '"', escape)):
        return None
    return expanded


def parse_words(rest: str, escape: str) -> list[str]:
    """BuildKit's ``parseWords`` (ARG, ENV and LABEL arguments): whitespace-separated
    words where quotes and the escape token keep spaces inside a word. The words keep
    their quotes and escapes; only the boundaries are decided here."""
    words: list[str] = []
    word, quote, in_quote, blank_ok, started = "", "", False, False, False
    pos, n = 0, len(rest)
    while pos < n:
        ch = rest[pos]
        if not started:
            if ch in GO_SPACE:
                pos += 1
                continue
            started = True
        if in_quote:
            if ch == quote:
                in_quote = False
            if ch == escape and quote != "'":
                if pos + 1 == n:
                    in_quote = False
                    pos += 1
                    continue
                word += ch
                pos += 1
                ch = rest[pos]
            word += ch
            pos += 1
            continue
        if ch in GO_SPACE:
            if blank_ok or word:
                words.append(word)
            word, blank_ok, started = "", False, False
            pos += 1
            continue
        if ch in ("'", '"'):
            quote, blank_ok, in_quote = ch, True, True
        if ch == escape:
            if pos + 1 == n:
                pos += 1
                continue
            word += ch
            pos += 1
            ch = rest[pos]
        word += ch
        pos += 1
    if started and (blank_ok or word):
        words.append(word)
    return words


def meta_args(
    instructions: list[Instruction], buildargs: dict[str, str | None]
) -> dict[str, str | None]:
    """ARGs declared before the first FROM, with the build's ``buildargs`` applied:
    what FROM lines may refer to. A value that is not plain maps to None (a FROM
    using it is then refused)."""
    values: dict[str, str | None] = {}
    for ins in instructions:
        if ins.keyword == "from":
            break
        if ins.keyword != "arg":
            continue
        for word in parse_words(ins.rest, ins.escape):
            name, eq, default = word.partition("=")
            if not ins.plain(name):
                # dockerd expands ARG *names* too (ARG IMG$NOPE=x and ARG "IMG"=x
                # declare IMG): the gate cannot tell which name this declares, so
                # none resolves.
                return dict.fromkeys(values)
            given = buildargs.get(name)
            value = given if given is not None else (default if eq else "")
            values[name] = value if ins.plain(value) else None
    return values


def base_images(
    instructions: list[Instruction],
    buildargs: dict[str, str | None],
    second: list[Instruction] | None = None,
) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """The images a build starts FROM and the ones it copies ``--from``, as
    (line, reference), leaving out stage names, stage indexes and ``scratch``.
    ``second``: FROM and COPY lines of :func:`physical_lines`, read the same way in
    file order (with only the stage names defined above them).
    Raises :class:`DockerfileError` for a reference the gate cannot resolve."""
    args = meta_args(instructions, buildargs)
    froms: list[tuple[int, str]] = []
    copies: list[tuple[int, str]] = []
    for reading in (instructions, second or []):
        stages: set[str] = set()
        for ins in reading:
            if ins.keyword == "from":
                image, stage = _from(ins, args)
                known = image.lower() in stages or image.lower() == "scratch"
                if not known and image not in (f for _, f in froms):
                    froms.append((ins.line, image))
                if stage:
                    stages.add(stage)
            elif ins.keyword == "copy":
                source = ins.flag("from")
                if not source:
                    continue
                if not ins.plain(source):
                    raise DockerfileError(
                        f"line {ins.line}: COPY --from={source!r} is not a plain name"
                    )
                known = source.lower() in stages or (source.isascii() and source.isdigit())
                if not known and source not in (c for _, c in copies):
                    copies.append((ins.line, source))
    return froms, copies


def stage_healthchecks(
    instructions: list[Instruction], buildargs: dict[str, str | None]
) -> dict[str, list[Instruction | None]]:
    """For each base image (resolved as ``base_images`` does), the last HEALTHCHECK
    of every stage built FROM it (None for a stage without one). dockerd fills what
    a stage's check leaves at zero (its intervals) from the base's, even for NONE."""
    args = meta_args(instructions, buildargs)
    stages: dict[str, list[Instruction | None]] = {}
    names: set[str] = set()
    current: str | None = None
    last: Instruction | None = None
    for ins in [*instructions, None]:
        if ins is None or ins.keyword == "from":
            if current is not None:
                stages.setdefault(current, []).append(last)
            if ins is not None:
                image, stage = _from(ins, args)
                known = image.lower() in names or image.lower() == "scratch"
                current, last = (None if known else image), None
                if stage:
                    names.add(stage)
        elif ins.keyword == "healthcheck":
            last = ins
    return stages


def _from(ins: Instruction, args: dict[str, str | None]) -> tuple[str, str]:
    """A FROM's image reference, resolved, and the stage name it defines ('' if none)."""
    if ins.flag("platform") is not None:
        raise DockerfileError(
            f"line {ins.line}: FROM --platform makes dockerd pull that platform's "
            "image, whose ONBUILD triggers the gate cannot read first"
        )
    words = ins.words()
    if not words:
        raise DockerfileError(f"line {ins.line}: FROM needs an image")
    image = resolve(words[0], args, ins.escape)
    if not image:
        raise DockerfileError(
            f"line {ins.line}: FROM {words[0]!r} uses what the gate cannot resolve "
            "(only $NAME and ${NAME} of plain ARGs and --build-arg values)"
        )
    stage = words[2].lower() if len(words) == 3 and words[1].lower() == "as" else ""
    return image, stage
