"""Images are shared: everyone lists and uses them; overwriting or deleting is for admins.

Overwriting includes moving a tag: every way a user can name an image (tag, commit,
import, build ``t``) is checked against the tags that exist, and ``docker load``,
whose tags come from inside the archive, is for admins. Builds and commits are
labelled with their author (``dockergate.built-by``) and an empty owner label, which
the ``labels`` build parameter applies after the Dockerfile's own ``LABEL`` lines.
BuildKit (``/grpc``, ``/session``, ``/build?version=2``) cannot be inspected, so
non-admins are pointed at the classic builder, whose Dockerfile the gate reads from
the context as it streams (:mod:`dockergate.api.buildcontext`,
:mod:`dockergate.api.dockerfile`): dockerd must not fetch URLs or pull bases by
itself for a member, nor run base-image triggers the gate has not read.
Everything here that makes the daemon reach a registry (pull, build bases,
search, ``/distribution``) follows the profile's ``registries``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

from dockergate.api import dockerfile
from dockergate.api import query as q
from dockergate.api.body import BodyError, loads_strict
from dockergate.api.buildcontext import ContextScanner, wanted_paths
from dockergate.api.dispatch import BUG_ERRORS, handles, referenced_owned, refused, who
from dockergate.api.exchange import Exchange
from dockergate.api.gotext import GO_SPACE
from dockergate.api.labels import image_labels
from dockergate.api.ownership import BUILT_BY_LABEL, OWNER_LABEL
from dockergate.api.schema import parse_body
from dockergate.listen.identity import Refusal
from dockergate.policy.container import check_image
from dockergate.policy.durations import parse_duration
from dockergate.policy.quota import building, check_memory_quota, user_lock
from dockergate.policy.resources import (
    apply_cpus,
    apply_memory,
    check_healthcheck,
    check_inherited_healthcheck,
    check_ulimits,
)
from dockergate.policy.rules import NANO, Denied, NodeFacts
from dockergate.proxy.daemon import ref
from dockergate.store.errors import StoreError
from dockergate.store.repository import Store

log = logging.getLogger(__name__)
T = TypeVar("T")

CPU_PERIOD = 100_000  # the kernel's default CFS period, in microseconds

# Tags that member builds in progress start FROM, and tags being moved (canonical
# reference -> requests). The gate read a base image's ONBUILD triggers; until the
# build ends, no one may make the tag name another image (whose triggers were not
# read). Each side registers, then checks the other, with no await in between.
_build_bases: Counter[str] = Counter()
_moving_tags: Counter[str] = Counter()


def canonical(reference: str) -> str:
    """``busybox`` -> ``docker.io/library/busybox:latest``: one spelling per tag, the
    one dockerd gives it (case is kept: ``x:Dev`` is not ``x:dev``)."""
    name, tag = reference, "latest"
    colon = reference.rfind(":")
    if colon > reference.rfind("/"):
        name, tag = reference[:colon], reference[colon + 1 :]
    # As dockerd's reference parser splits the registry off (splitDockerDomain): the
    # first component is a registry if it has a dot, a colon or a capital, or is
    # localhost; only docker.io and index.docker.io, spelled so, are Docker Hub.
    # Nothing is lower-cased: REGISTRY.LOCAL/p is another registry's name to dockerd
    # (and BUSYBOX no valid name at all), so it must be another name here too.
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, path = first, rest
    else:
        domain, path = "docker.io", name
    if domain == "index.docker.io":
        domain = "docker.io"
    if domain == "docker.io" and "/" not in path:
        path = f"library/{path}"
    return f"{domain}/{path}:{tag}"


def _register(table: Counter[str], ex: Exchange, keys: list[str]) -> None:
    table.update(keys)

    def unregister() -> None:
        table.subtract(keys)
        for key in keys:
            if table[key] <= 0:
                del table[key]

    ex.on_release.append(unregister)


# Networks member builds in progress run on (their ID, and "user:<name>" for the
# builder's prunes), and removals in progress: the classic builder creates each RUN
# container with the pinned network ID but starts it by the network's *name*, which a
# decoy's removal in between would hand to another user's network (ID prefix).
_build_networks: Counter[str] = Counter()
_removing_networks: Counter[str] = Counter()


def pin_build_network(ex: Exchange, network_id: str) -> None:
    keys = [network_id, f"user:{ex.identity.name}"]
    _register(_build_networks, ex, keys)
    if any(key in _removing_networks for key in keys):
        raise Refusal(
            409, f"{who(ex)} may not build on network {network_id} now: it is being removed"
        )


def check_not_a_build_network(ex: Exchange, key: str) -> None:
    """``key``: a network ID, or ``user:<name>`` for that user's prune."""
    _register(_removing_networks, ex, [key])
    if key in _build_networks:
        raise Refusal(
            409,
            f"{who(ex)} may not remove that network now: a build in progress runs on it; "
            "try again when it ends",
        )


def pin_build_bases(ex: Exchange, references: list[str], own: frozenset[str]) -> None:
    """``own``: the tags this build itself will write (``-t``), registered as moving."""
    keys = [canonical(r) for r in references]
    _register(_build_bases, ex, keys)
    for reference, key in zip(references, keys, strict=True):
        if _moving_tags[key] > (key in own):
            raise Refusal(
                409,
                f"{who(ex)} may not build FROM {reference} now: the tag is being moved; try again",
            )


def check_not_a_build_base(ex: Exchange, reference: str) -> None:
    key = canonical(reference)
    _register(_moving_tags, ex, [key])
    if key in _build_bases:
        raise Refusal(
            409,
            f"{who(ex)} may not move the tag {reference} now: a build in progress starts "
            "FROM it (the gate read that image's ONBUILD triggers); try again when it ends",
        )


# Tags that requests in progress will write when they end (build -t, commit, import,
# tag): by canonical reference, and by user and reference. A build checks its -t when
# it starts and writes it when it ends, maybe minutes later; another user's new tag of
# that name in between would be taken over by the build's image.
_writing_tags: Counter[str] = Counter()
_writing_tags_by_user: Counter[str] = Counter()


def check_not_being_written(ex: Exchange, reference: str) -> None:
    key = canonical(reference)
    mine = f"{ex.identity.name}\n{key}"  # no user name holds a newline
    _register(_writing_tags, ex, [key])
    _register(_writing_tags_by_user, ex, [mine])
    if _writing_tags[key] > _writing_tags_by_user[mine]:  # another user's write too
        raise Refusal(
            409,
            f"{who(ex)} may not name an image {reference} now: another user's build, "
            "commit or import in progress will write that tag; choose another tag, or "
            "try again when it ends",
        )


@handles(
    "image.list",
    "image.inspect",
    "image.history",
    "image.get",
    "image.get_all",
    "image.build_cancel",
)
async def shared_images(ex: Exchange) -> None:
    """Reading shared images is open to every user."""


@handles("image.search")
async def image_search(ex: Exchange) -> None:
    """``docker search host:port/term`` makes the daemon query that registry."""
    if not ex.admin:
        check_image(ex.profile, q.first(ex.query, "term") or "", "term")


@handles("image.distribution")
async def image_distribution(ex: Exchange) -> None:
    """``/distribution/{name}/json`` makes the daemon ask the name's registry."""
    if not ex.admin:
        check_image(ex.profile, ex.params["name"], "distribution")


@handles("image.create")
async def image_create(ex: Exchange) -> None:
    """Pulls follow the profile's registry allowlist. ``fromSrc=<url>`` would make the
    daemon fetch any URL its host can reach, so non-admins import from stdin only."""
    if ex.admin:
        if q.first(ex.query, "fromSrc") is not None:
            await hold_admin_tag(
                ex, q.first(ex.query, "repo") or "", q.first(ex.query, "tag") or ""
            )
        elif image := q.first(ex.query, "fromImage"):
            await hold_admin_tag(ex, image, q.first(ex.query, "tag") or "")
        return
    source = q.first(ex.query, "fromSrc")
    if source is not None and source != "-":
        raise Denied(
            ex.profile, "importing from a URL", "fromSrc", source, "import from stdin (fromSrc=-)"
        )
    image = q.first(ex.query, "fromImage")
    if image:
        check_image(ex.profile, image, "fromImage")
        await check_pull_target(ex, image, q.first(ex.query, "tag") or "")
    if source == "-":  # an import names its image with repo and tag
        await check_new_tag(ex, q.first(ex.query, "repo") or "", q.first(ex.query, "tag") or "")
        check_changes(ex)


@handles("image.load")
async def image_load(ex: Exchange) -> None:
    if ex.admin:
        return
    raise Refusal(
        403,
        f"{who(ex)} may not docker load: the tags come from inside the archive, so a load "
        "can replace any shared image; push it to the team registry and pull it, or ask "
        "an admin",
    )


@handles("image.tag")
async def image_tag(ex: Exchange) -> None:
    """Tagging is allowed unless it would move an existing tag (someone else's image)."""
    repo, tag = q.first(ex.query, "repo") or "", q.first(ex.query, "tag") or ""
    if ex.admin:
        await hold_admin_tag(ex, repo, tag)
        return
    await check_new_tag(ex, repo, tag)
    source = await image_of(ex, ex.params["name"])
    check_image_healthcheck(ex, source, f"the image {ex.params['name']}'s HEALTHCHECK")
    if repo and source is not None and isinstance(source.get("Id"), str):
        # The name is the member's while it names this image (they may remove it and
        # build under it); the image's labels say who built it, not who named it.
        # Recorded once dockerd has tagged (it refuses names the gate lets by).
        name, image_id = canonical(tag_reference(repo, tag)), source["Id"]
        ex.on_release.append(lambda: _after_success(ex, _remember_namer(ex, name, image_id)))


def tag_reference(repo: str, tag: str) -> str:
    """The tag dockerd creates for ``repo`` and ``tag`` (its ``TagImage`` and
    ``RepoTagReference``): ``tag`` replaces one written in ``repo``, and no tag at all
    means ``latest``. A tag is what follows the last ``:`` after the last ``/`` (a
    registry's port is not one)."""
    if "@" in repo:
        raise Refusal(403, f"naming an image by digest ({repo!r}) is for admins")
    name, own = repo, ""
    colon = repo.rfind(":")
    if colon > repo.rfind("/"):
        name, own = repo[:colon], repo[colon + 1 :]
    return f"{name}:{tag or own or 'latest'}"


async def image_of(ex: Exchange, reference: str) -> dict[str, Any] | None:
    """The inspect of the image ``reference`` names now; None if there is none."""
    found = await ex.daemon.get(f"/images/{ref(reference)}/json")
    return dict(found.json() or {}) if found.ok else None


async def image_config_of(ex: Exchange, reference: str) -> dict[str, Any] | None:
    """The ``Config`` of the image ``reference`` names now; None if there is none."""
    image = await image_of(ex, reference)
    return None if image is None else dict(image.get("Config") or {})


async def image_labels_of(ex: Exchange, reference: str) -> dict[str, str] | None:
    """The labels of the image ``reference`` names now (who built it); None if none."""
    config = await image_config_of(ex, reference)
    return None if config is None else dict(config.get("Labels") or {})


async def check_new_tag(ex: Exchange, repo: str, tag: str) -> None:
    """A name a user gives an image must be new, or name an image that user built or
    committed: moving a tag replaces the image everyone else runs under it
    (``busybox:latest``), while rebuilding one's own ``-t app:dev`` is the daily loop."""
    if not repo:
        return
    reference = tag_reference(repo, tag)
    # Held only once the caller may write the tag (a refused attempt must not hold
    # it for its owner's next build), and looked at again once held: a build of
    # someone else's that wrote it meanwhile has let go of it by then.
    await _check_tag_is_callers(ex, reference)
    hold_tag(ex, reference)
    await _check_tag_is_callers(ex, reference)


async def _check_tag_is_callers(ex: Exchange, reference: str) -> None:
    image = await image_of(ex, reference)
    if image is None or await named_by_caller(ex, reference, image):
        return
    raise Refusal(
        403,
        f"{who(ex)} may not name an image {reference}: that tag exists on an image "
        "you did not build, and moving it is for admins; choose a new tag",
    )


async def named_by_caller(ex: Exchange, reference: str, image: dict[str, Any]) -> bool:
    """Whether the tag ``reference`` (naming ``image``) is the caller's: on an image
    they built or committed, or put by them on this very image (``docker tag``)."""
    labels = dict((image.get("Config") or {}).get("Labels") or {})
    if ex.identity.name in (labels.get(BUILT_BY_LABEL), labels.get(OWNER_LABEL)):
        return True
    key = canonical(reference)
    namer = await _in_store(ex, f"who named {reference} not read", lambda s: s.image_namer(key))
    return namer == (ex.identity.name, image.get("Id"))


async def _in_store(ex: Exchange, failure: str, call: Callable[[Store], T]) -> T | None:
    """``call`` on the gate's store, off the event loop; None without a store, or when
    it is unavailable (logged as ``failure``): the callers then refuse or skip."""
    store = ex.gate.store if ex.gate is not None else None
    if store is None:
        return None
    try:
        return await asyncio.to_thread(call, store)
    except StoreError as exc:
        log.warning("%s (store unavailable): %s", failure, exc)
        return None


_background: set[asyncio.Task[None]] = set()


def _after_success(ex: Exchange, work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` in the background if dockerd answered the request with success."""
    if 200 <= ex.status < 300:
        task = asyncio.get_running_loop().create_task(work)
        _background.add(task)
        task.add_done_callback(_background.discard)
    else:
        work.close()


async def _forget_namer(ex: Exchange, reference: str) -> None:
    key = canonical(reference)
    await _in_store(ex, f"tag {reference} not released", lambda s: s.forget_image_tag(key))


async def _remember_namer(ex: Exchange, reference: str, image_id: str) -> None:
    user = ex.identity.name
    failure = f"{user}'s tag {reference} not recorded"
    await _in_store(ex, failure, lambda s: s.name_image(reference, user, image_id))


def hold_tag(ex: Exchange, reference: str) -> None:
    """The request will write ``reference`` when it ends: no build may start FROM it
    meanwhile, and no other user's request may write it too (409 either way)."""
    check_not_a_build_base(ex, reference)
    check_not_being_written(ex, reference)


async def hold_admin_tag(ex: Exchange, repo: str, tag: str) -> None:
    """An admin writes any tag, but not one another user's build, commit or import in
    progress will write when it ends (it would take the admin's tag over); and a name
    an admin writes is no member's any more (``image_tags``)."""
    if repo and "@" not in repo:
        reference = tag_reference(repo, tag)
        hold_tag(ex, reference)
        await _forget_namer(ex, reference)


@handles("image.delete")
async def image_delete(ex: Exchange) -> None:
    """``docker rmi``: a member removes images (or tags of images) they built or
    committed, and tags they put on an image with ``docker tag``, without ``force``;
    dockerd itself then refuses an image that other tags or containers still use.
    Removing such a tag is no more than moving it, which they may do too
    (``check_new_tag``)."""
    if ex.admin:
        return
    name = ex.params["name"]
    if q.bool_value(ex.query, "force"):
        raise Refusal(
            403, f"{who(ex)} may not force-remove an image: admins only; remove it without -f"
        )
    image = await image_of(ex, name)
    if image is None:
        raise Refusal(404, f"No such image: {name}")
    labels = dict((image.get("Config") or {}).get("Labels") or {})
    tags = [t for t in image.get("RepoTags") or [] if isinstance(t, str)]
    by_tag = [t for t in tags if canonical(t) == canonical(name)]
    built = labels.get(BUILT_BY_LABEL) == ex.identity.name
    named = not built and bool(by_tag) and await named_by_caller(ex, by_tag[0], image)
    if not (built or named):
        raise Refusal(
            403,
            f"{who(ex)} may not remove image {name}: images are shared, and only those "
            "you built or committed, and the names you gave with docker tag, are yours "
            "to remove",
        )
    if named and len(tags) == 1:
        # Removing an image's last tag deletes the image, which someone else built.
        raise Refusal(
            403,
            f"{who(ex)} may not remove {name}: it is the only name of an image you did "
            "not build, and removing it would delete the image; ask an admin",
        )
    if named:
        await _forget_namer(ex, by_tag[0])
    # The tags that go (held only now: a refused rmi must not hold busybox's tag away
    # from everyone's builds): by tag that tag; by ID (or digest) the image's only tag.
    for tag in by_tag or tags:
        check_not_a_build_base(ex, tag)
    # Without noprune, dockerd also deletes each untagged parent nothing else uses,
    # which may be another user's build.
    ex.set_query(q.replace(ex.query, "noprune", "1"))


@handles("image.prune")
async def image_prune(ex: Exchange) -> None:
    """A member's prune takes only dangling images they built or committed (the owner
    of an image is its ``dockergate.built-by``); ``-a`` would also take tagged images
    other users may have named or run. The gate deletes them itself, one by one with
    ``noprune``: dockerd's prune also deletes each untagged parent nothing else uses,
    which may be another user's build."""
    if ex.admin:
        return
    filters = q.parse_filters(q.first(ex.query, "filters"))
    if {"false", "0"} & set(filters.get("dangling") or {}):
        raise Refusal(
            403,
            f"{who(ex)} may prune only dangling images (docker image prune without -a): "
            "tagged images are shared",
        )
    unknown = sorted(set(filters) - {"dangling", "label", "label!", "until"})
    if unknown:
        raise Refusal(400, f"invalid filter {unknown[0]!r} for an image prune")
    until = prune_until(list(filters.get("until") or {}))
    listing = {
        "dangling": {"true": True},
        "label": {**(filters.get("label") or {}), f"{BUILT_BY_LABEL}={ex.identity.name}": True},
    }
    reply = await ex.daemon.get(f"/images/json?filters={quote(q.encode_filters(listing), safe='')}")
    deleted: list[Any] = []
    reclaimed = 0
    for image in reply.json() if reply.ok else []:
        labels = image.get("Labels") or {}
        excluded = filters.get("label!")
        if excluded and all(_label_matches(labels, f) for f in excluded):
            continue
        if until is not None and int(image.get("Created") or 0) >= until:
            continue
        gone = await ex.daemon.call("DELETE", f"/images/{ref(str(image['Id']))}?noprune=1")
        if gone.ok:  # an image a container or a child image uses stays, as in a prune
            deleted += gone.json() or []
            reclaimed += int(image.get("Size") or 0)
    ex.reply = (200, {"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed})


def _label_matches(labels: dict[str, str], spec: str) -> bool:
    key, eq, value = spec.partition("=")
    return key in labels and (not eq or labels[key] == value)


DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?(?:ns|us|\u00b5s|ms|s|m|h))+")
UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def prune_until(values: list[str]) -> int | None:
    """``until`` as dockerd reads it (a Go duration before now, a Unix time, or an RFC
    3339 date), as Unix seconds; None without one."""
    if not values:
        return None
    if len(values) > 1:
        raise Refusal(400, "only one until filter is allowed")
    value = values[0]
    try:
        if DURATION.fullmatch(value):
            parts = re.findall(r"([0-9.]+)(ns|us|\u00b5s|ms|s|m|h)", value)
            return int(time.time() - sum(float(n) * UNITS[u] for n, u in parts))
        if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", value):
            return int(float(value))
        return int(datetime.fromisoformat(value).timestamp())
    except (ValueError, OverflowError):
        raise Refusal(400, f"invalid until filter {value[:40]!r}") from None


@handles("image.build_prune")
async def build_prune(ex: Exchange) -> None:
    """The BuildKit cache is everyone's, and only profiles with ``build.buildkit`` may
    build with BuildKit: a member without it has no cache there, so their prune (a
    step of ``docker system prune``) frees nothing, and says so."""
    if ex.admin:
        return
    if ex.profile.buildkit:
        raise Refusal(403, f"{who(ex)} may not prune the build cache: it is shared; ask an admin")
    ex.reply = (200, {"CachesDeleted": None, "SpaceReclaimed": 0})


async def check_pull_target(ex: Exchange, image: str, tag: str) -> None:
    """A pull replaces the tag it lands on. A tag naming an image another user built
    or committed here stays theirs: pulling over it (from a registry where anyone may
    push) would make their next ``docker run`` start someone else's code with their
    rights. Tags of pulled images (no ``built-by``) update as they always do, and so do
    official images' names (``docker.io/library/*``), whoever built them here."""
    if "@" in image or (tag and tag.startswith("sha256:")):
        return  # by digest: no tag is written
    name, own = image, ""
    colon = image.rfind(":")
    if colon > image.rfind("/"):
        name, own = image[:colon], image[colon + 1 :]
    if not (tag or own):
        raise Refusal(
            403,
            f"{who(ex)} may not pull every tag of {image} (docker pull -a): each could "
            "replace a tag another user built; pull the tags you need one by one",
        )
    check_not_a_build_base(ex, f"{name}:{tag or own}")
    if canonical(f"{name}:{tag or own}").startswith("docker.io/library/"):
        # Official images: only Docker publishes there, so the pull cannot bring a
        # user's code; and a member's build of ``python:3.12`` (before anyone pulled
        # it) must not keep everyone else from the real image.
        return
    labels = await image_labels_of(ex, f"{name}:{tag or own}")
    if labels is None:
        return
    author = labels.get(BUILT_BY_LABEL)
    if author and author != ex.identity.name:
        raise Refusal(
            403,
            f"{who(ex)} may not pull {name}:{tag or own}: that tag names an image "
            f"{author} built here, and a pull would replace it; pull under another name "
            "or ask an admin",
        )


def check_onbuild(ex: Exchange, texts: list[str], where: str, *, triggers: bool = False) -> None:
    """What an image's triggers would hold (``changes`` lines, or commit's ``OnBuild``
    trigger texts: ``triggers``) must not ADD a URL: a build the gate does not read
    would run them."""
    for text in texts:
        try:
            parsed = (
                dockerfile.trigger_instructions(text)
                if triggers
                else dockerfile.parse(text) + dockerfile.add_lines(text)
            )
        except dockerfile.DockerfileError as exc:
            raise Refusal(400, f"{where}: {exc}") from None
        if any(dockerfile.url_sources(ins, trigger=triggers) for ins in parsed):
            raise Refusal(
                403,
                f"{who(ex)} may not add an ONBUILD ADD of a URL (or of a source that "
                f"could expand to one) through {where}: {text[:80]!r}",
            )


def refuse_fast_healthchecks(
    ex: Exchange, instructions: list[dockerfile.Instruction], where: str
) -> None:
    """``HEALTHCHECK --interval`` (``--start-interval``) under a second, in a Dockerfile,
    a trigger or ``changes``: an image carrying one would pass it to every container
    and service task made from it (see ``resources.check_healthcheck``)."""
    if ex.admin:
        return
    for ins in instructions:
        if ins.keyword == "healthcheck":
            where_line = f"{where} {ins.line}: HEALTHCHECK"
            check_healthcheck(ex.profile, instruction_healthcheck(ins), where_line, image=True)


def changes_healthcheck(ex: Exchange) -> dict[str, Any] | None:
    """The health check the last ``HEALTHCHECK`` line of ``changes`` gives the image
    (dockerd applies ``changes`` over a commit's body and fills the intervals the
    line leaves at zero from the container's), or None without one."""
    found: dockerfile.Instruction | None = None
    for change in q.every(ex.query, "changes"):
        try:
            parsed = dockerfile.parse(change)
        except dockerfile.DockerfileError:
            continue  # check_changes refused it already
        found = next((i for i in reversed(parsed) if i.keyword == "healthcheck"), found)
    if found is None:
        return None
    return instruction_healthcheck(found)


def instruction_healthcheck(ins: dockerfile.Instruction) -> dict[str, Any]:
    """What a HEALTHCHECK instruction sets, in the engine's terms (the fields the
    floor reads; an interval it leaves out is 0, which dockerd fills from the base)."""
    try:
        disabled = [w.upper() for w in ins.words()] == ["NONE"]
    except dockerfile.DockerfileError:
        disabled = False  # JSON arguments that are not strings: the builder refuses them
    health: dict[str, Any] = {"Test": ["NONE"] if disabled else ["CMD-SHELL"]}
    for flag, field in (("interval", "Interval"), ("start-interval", "StartInterval")):
        try:
            health[field] = parse_duration(ins.flag(flag) or "0")
        except ValueError:
            health[field] = 0  # the builder refuses it
    return health


def check_image_healthcheck(ex: Exchange, image: dict[str, Any] | None, where: str) -> None:
    """An existing image's HEALTHCHECK, where a user names or builds on it."""
    if not ex.admin and image is not None:
        config = image.get("Config") or {}
        check_healthcheck(ex.profile, config.get("Healthcheck"), where, image=True)


def check_changes(ex: Exchange) -> None:
    r"""``changes`` (Dockerfile lines applied by commit and import) must not write the
    gate's labels; lines that could spell them indirectly (``$`` substitution, ``\``
    escapes) are refused too."""
    changes = q.every(ex.query, "changes")
    for change in changes:
        # dockerd joins the values with newlines into one Dockerfile: a directive
        # (# escape=) or a trailing escape character would join them differently
        # from how each reads alone.
        bare = change.strip(GO_SPACE)
        if bare.startswith("#") or bare.endswith(dockerfile.ESCAPES) or "\n" in change:
            raise Refusal(
                403,
                f"{who(ex)} may not use comments, directives, line breaks or a trailing "
                f"escape character in changes: {change[:80]!r}",
            )
    check_onbuild(ex, changes, "changes")
    for change in changes:
        try:
            parsed = dockerfile.parse(change)
        except dockerfile.DockerfileError as exc:
            raise Refusal(400, f"changes: {exc}") from None
        if any(dockerfile.writes_gate_labels(ins) for ins in parsed):
            raise Refusal(
                403,
                f"{who(ex)} may not set labels under dockergate.* (or spelt with quotes, $ "
                f"or an escape character) through changes: {change[:80]!r}",
            )
        refuse_fast_healthchecks(ex, parsed, "changes line")


def json_param(name: str, raw: str) -> Any:
    """A build parameter holding JSON (``labels``, ``ulimits``, ``buildargs``), read as
    strictly as a body is: malformed or nested without end is a 400, not a crash."""
    try:
        return loads_strict(raw.encode("utf-8", "surrogateescape"))
    except BodyError as exc:
        raise Refusal(400, f"build: the {name} parameter: {exc.message}") from None


def ulimits_param(raw: str) -> Any:
    """The ``ulimits`` build parameter, held to the exact field spellings as a body is:
    dockerd decodes it into Go structs, where ``name`` after ``Name`` sets the name
    the check did not read."""
    try:
        obj, problems = parse_body(
            raw.encode("utf-8", "surrogateescape"), "build.ulimits", allow_unknown=False
        )
    except BodyError as exc:
        raise Refusal(400, f"build: the ulimits parameter: {exc.message}") from None
    if problems:
        detail = "; ".join(p.message for p in problems[:5])
        raise Refusal(400, f"build: the ulimits parameter: {detail}")
    return obj


@handles("image.build")
async def build(ex: Exchange) -> None:
    raw = q.first(ex.query, "labels")
    labels = json_param("labels", raw) if raw else {}
    profile = ex.profile
    if not profile.admin:
        await _check_build(ex)
        names = q.every(ex.query, "t")
        for name in names:
            await check_new_tag(ex, name, "")
        own = frozenset(canonical(tag_reference(name, "")) for name in names if name)
        ex.body_check = BuildContextCheck(ex, own)
    else:
        for name in q.every(ex.query, "t"):
            await hold_admin_tag(ex, name, "")
    stamped = image_labels(labels, ex.identity.name)
    ex.set_query(q.replace(ex.query, "labels", json.dumps(stamped)))


async def _check_build(ex: Exchange) -> None:
    """Legacy builds carry their policy in the query: network, cgroup, resources."""
    profile = ex.profile
    remote = q.first(ex.query, "remote")
    if remote:
        raise Denied(
            profile, "remote build contexts", "remote", remote, "send the context from the client"
        )
    if q.bool_value(ex.query, "pull"):
        raise Refusal(
            403,
            f"{who(ex)} may not build with --pull: the gate reads the base image's ONBUILD "
            "triggers before the build, so the base must already be here; docker pull it, "
            "then build without --pull",
        )
    versions = [v for v in q.every(ex.query, "version") if v not in ("", "1")]
    if versions and not profile.buildkit:
        raise Refusal(
            403,
            f"profile {profile.name!r} forbids BuildKit (version={versions[0]}: its "
            "frontends and steps cannot be inspected); build with the classic builder",
        )
    platform = q.first(ex.query, "platform")
    if platform:
        raise Refusal(
            403,
            f"{who(ex)} may not build for platform {platform!r}: dockerd would pull that "
            "platform's base image, whose ONBUILD triggers the gate cannot read first; "
            "build without --platform, or ask an admin",
        )
    network = q.first(ex.query, "networkmode") or ""
    # Exact spellings, as dockerd reads them: "Host" or "BRIDGE" name networks.
    if (network == "host" and not profile.host_namespaces) or network.startswith("container:"):
        raise Denied(profile, "this build network", "networkmode", network, "use the default")
    if network not in ("", "default", "bridge", "none", "host"):
        # Pinned to the full ID: the classic builder looks the network up again for
        # every RUN step, long after this check (see containers.pin_networks).
        found = await referenced_owned(ex, "network", network, f"networkmode={network}")
        ex.set_query(q.replace(ex.query, "networkmode", found.id))
        pin_build_network(ex, found.id)
    parent = q.first(ex.query, "cgroupparent")
    if parent and not profile.cgroup_parent:
        raise Denied(
            profile, "choosing the cgroup parent", "cgroupparent", parent, "leave it empty"
        )
    facts = await ex.daemon.facts()
    if not profile.containers_on_managers and facts.manager:
        raise Denied(
            profile,
            "building on a Swarm manager (each RUN step is a container)",
            "engine",
            "manager",
            "build on a worker node",
        )
    res = {"Memory": q.first_int(ex.query, "memory")}
    apply_memory(profile, res, facts, "memory")
    if res["Memory"]:
        query = q.replace(ex.query, "memory", str(res["Memory"]))
        ex.set_query(q.replace(query, "memswap", str(res.get("MemorySwap", -1))))
        # Build containers belong to nobody, so the engine's state does not show
        # them: a build may start only while its memory fits in what the quota
        # leaves, and holds that memory in the quota until it ends.
        async with user_lock(ex.identity.name):
            await check_memory_quota(ex.daemon, profile, ex.identity.name, "", res["Memory"])
            ex.on_release.append(building(ex.identity.name, res["Memory"]))
    _build_cpus(ex, facts)
    raw_ulimits = q.first(ex.query, "ulimits")
    if raw_ulimits:
        ulimits = ulimits_param(raw_ulimits)
        check_ulimits(profile, ulimits, "ulimits")
        ex.set_query(q.replace(ex.query, "ulimits", json.dumps(ulimits)))  # what was read
    shm = q.first_int(ex.query, "shmsize")
    if profile.shm_max and shm > profile.shm_max:
        raise Denied(profile, "this much /dev/shm", "shmsize", shm, f"at most {profile.shm_max}")


class BuildContextCheck:
    """Reads a non-admin classic build's context on its way to dockerd (see
    :mod:`dockergate.api.buildcontext`) and checks its Dockerfile before dockerd may
    finish reading the archive."""

    def __init__(self, ex: Exchange, own_tags: frozenset[str]) -> None:
        self.ex = ex
        self.own_tags = own_tags
        self.scanner = ContextScanner(wanted_paths(q.first(ex.query, "dockerfile")))

    @property
    def complete(self) -> bool:
        return self.scanner.ended

    def feed(self, data: bytes) -> None:
        with self._refusals():
            self.scanner.feed(data)

    async def finish(self) -> None:
        with self._refusals():
            self.scanner.close()
            found = self.scanner.dockerfile()
            if found is not None:
                await check_dockerfile(self.ex, *found, self.own_tags)

    @contextlib.contextmanager
    def _refusals(self) -> Iterator[None]:
        """Run outside :func:`dispatch` (while the body streams): word a profile rule
        and a gate bug as dispatch does, so the client gets an answer, never a drop."""
        try:
            yield
        except Denied as exc:
            raise refused(exc) from None
        except BUG_ERRORS as exc:
            log.exception("image.build: internal error reading the context for %s", who(self.ex))
            raise Refusal(
                500,
                f"internal error in the gate while reading the build context "
                f"({type(exc).__name__}); the build was cut off; the gate's log has details",
                rule="internal error",
            ) from None


async def check_dockerfile(
    ex: Exchange, path: str, content: bytes, own_tags: frozenset[str] = frozenset()
) -> None:
    """What a classic build makes the daemon itself fetch: ``ADD`` of a URL (from the
    host's network, into an image the user reads), base images from outside the
    profile's registries, and ``ADD`` triggers of a base image."""
    raw_args = q.first(ex.query, "buildargs")
    try:
        text = content.decode("utf-8", "surrogateescape")
        instructions = dockerfile.parse(text)
        buildargs = json_param("buildargs", raw_args) if raw_args else {}
        if not isinstance(buildargs, dict) or not all(
            isinstance(v, str | None) for v in buildargs.values()
        ):
            raise dockerfile.DockerfileError("buildargs must map names to strings")
    except (dockerfile.DockerfileError, ValueError) as exc:
        raise Refusal(400, f"build: {path}: {exc}") from None
    try:
        second = dockerfile.physical_lines(text, ("from", "copy"))
        froms, copies = dockerfile.base_images(instructions, buildargs, second)
    except dockerfile.DockerfileError as exc:
        raise Refusal(403, f"{who(ex)} may not build this: {path} {exc}") from None
    _refuse_url_sources(ex, instructions, f"{path} line")
    _refuse_url_sources(ex, dockerfile.add_lines(text), f"{path} line", trigger=True)
    refuse_fast_healthchecks(ex, instructions, f"{path} line")
    pin_build_bases(ex, [image for _, image in froms], own_tags)
    stages = dockerfile.stage_healthchecks(instructions, buildargs)
    for line, image in froms:
        check_image(ex.profile, image, f"FROM ({path} line {line})")
        found = await ex.daemon.get(f"/images/{ref(image)}/json")
        if not found.ok:
            raise Refusal(
                403,
                f"{who(ex)} may not build FROM {image}, which is not on this engine: "
                f"docker pull {image} first (the gate reads a base image's ONBUILD "
                "triggers before a build runs them)",
            )
        base = found.json() or {}
        where = f"FROM {image} ({path} line {line}): its HEALTHCHECK, merged with the stage's"
        for own in stages.get(image) or [None]:
            check_inherited_healthcheck(
                ex.profile,
                instruction_healthcheck(own) if own is not None else None,
                (base.get("Config") or {}).get("Healthcheck"),
                where,
                into_image=True,
            )
        for trigger in (base.get("Config") or {}).get("OnBuild") or []:
            try:
                parsed = dockerfile.trigger_instructions(str(trigger))
            except dockerfile.DockerfileError as exc:
                raise Refusal(400, f"build: ONBUILD trigger of {image}: {exc}") from None
            _refuse_url_sources(ex, parsed, f"ONBUILD trigger of {image}", trigger=True)
            refuse_fast_healthchecks(ex, parsed, f"ONBUILD trigger of {image}, line")
    for line, image in copies:
        check_image(ex.profile, image, f"COPY --from ({path} line {line})")


def _refuse_url_sources(
    ex: Exchange, instructions: list[dockerfile.Instruction], where: str, *, trigger: bool = False
) -> None:
    for ins in instructions:
        for source in dockerfile.url_sources(ins, trigger=trigger):
            raise Denied(
                ex.profile,
                "ADD from a URL, or from a source that could expand to one (dockerd "
                "fetches it itself, from the host's network)",
                f"{where} {ins.line}" if where.endswith("line") else where,
                source,
                "COPY files from the context, or download in a RUN step",
            )


def _build_cpus(ex: Exchange, facts: NodeFacts) -> None:
    """The profile's CPU default and cap, on the build's ``cpuquota``/``cpuperiod``
    (a build has no NanoCpus; each RUN step runs with these)."""
    cpu: dict[str, Any] = {
        "CpuQuota": q.first_int(ex.query, "cpuquota"),
        "CpuPeriod": q.first_int(ex.query, "cpuperiod"),
    }
    apply_cpus(ex.profile, cpu, facts, "cpuquota")
    if "NanoCpus" in cpu:  # the profile's default, as a quota over the default period
        query = q.replace(ex.query, "cpuperiod", str(CPU_PERIOD))
        ex.set_query(q.replace(query, "cpuquota", str(cpu["NanoCpus"] * CPU_PERIOD // NANO)))


@handles("buildkit.session", "buildkit.grpc")
async def buildkit(ex: Exchange) -> None:
    if ex.admin or ex.profile.buildkit:
        return
    raise Refusal(
        403,
        f"profile {ex.profile.name!r} forbids BuildKit (its gRPC stream cannot be inspected); "
        "build with the classic builder: DOCKER_BUILDKIT=0 docker build ...",
    )
