"""Images are shared: everyone lists and uses them; overwriting or deleting is for admins.

Builds are stamped with the owner label through the ``labels`` build parameter,
which is applied after the Dockerfile's own ``LABEL`` lines and so overrides them.
BuildKit (``/grpc``, ``/session``) speaks opaque gRPC the gate cannot inspect, so
non-admins are pointed at the classic builder.
"""

from __future__ import annotations

import json

from dockergate.api import query as q
from dockergate.api.dispatch import handles, who
from dockergate.api.exchange import Exchange
from dockergate.api.labels import stamp
from dockergate.listen.identity import Refusal
from dockergate.policy.checks import Denied, apply_memory, check_image, check_ulimits
from dockergate.proxy.daemon import ref


@handles(
    "image.list",
    "image.inspect",
    "image.history",
    "image.get",
    "image.get_all",
    "image.search",
    "image.distribution",
    "image.load",
    "image.build_cancel",
)
async def shared_images(ex: Exchange) -> None:
    """Reading and pulling shared images is open to every user."""


@handles("image.create")
async def image_create(ex: Exchange) -> None:
    """Pulls follow the profile's registry allowlist. ``fromSrc=<url>`` would make the
    daemon fetch any URL its host can reach, so non-admins import from stdin only."""
    if ex.admin:
        return
    source = q.first(ex.query, "fromSrc")
    if source is not None and source != "-":
        raise Denied(
            ex.profile, "importing from a URL", "fromSrc", source, "import from stdin (fromSrc=-)"
        )
    image = q.first(ex.query, "fromImage")
    if image:
        check_image(ex.profile, image, "fromImage")


@handles("image.tag")
async def image_tag(ex: Exchange) -> None:
    """Tagging is allowed unless it would move an existing tag (someone else's image)."""
    if ex.admin:
        return
    repo = q.first(ex.query, "repo") or ""
    tag = q.first(ex.query, "tag") or "latest"
    if not repo:
        return
    existing = await ex.daemon.get(f"/images/{ref(f'{repo}:{tag}')}/json")
    if existing.ok:
        raise Refusal(
            403,
            f"{who(ex)} may not re-tag {repo}:{tag}: that tag exists and moving it "
            "is for admins; choose a new tag",
        )


@handles("image.build")
async def build(ex: Exchange) -> None:
    raw = q.first(ex.query, "labels")
    try:
        labels = json.loads(raw) if raw else {}
    except ValueError:
        raise Refusal(400, "build: the labels parameter is not JSON") from None
    profile = ex.profile
    if not profile.admin:
        await _check_build(ex)
    stamped = stamp(labels, ex.identity.name)
    ex.set_query(q.replace(ex.query, "labels", json.dumps(stamped)))


async def _check_build(ex: Exchange) -> None:
    """Legacy builds carry their policy in the query: network, cgroup, resources."""
    profile = ex.profile
    remote = q.first(ex.query, "remote")
    if remote:
        raise Denied(
            profile, "remote build contexts", "remote", remote, "send the context from the client"
        )
    network = (q.first(ex.query, "networkmode") or "").lower()
    if (network == "host" and not profile.host_namespaces) or network.startswith("container:"):
        raise Denied(profile, "this build network", "networkmode", network, "use the default")
    parent = q.first(ex.query, "cgroupparent")
    if parent and not profile.cgroup_parent:
        raise Denied(
            profile, "choosing the cgroup parent", "cgroupparent", parent, "leave it empty"
        )
    res = {"Memory": q.first_int(ex.query, "memory")}
    apply_memory(profile, res, await ex.daemon.facts(), "memory")
    if res["Memory"]:
        query = q.replace(ex.query, "memory", str(res["Memory"]))
        ex.set_query(q.replace(query, "memswap", str(res.get("MemorySwap", -1))))
    raw_ulimits = q.first(ex.query, "ulimits")
    if raw_ulimits:
        try:
            ulimits = json.loads(raw_ulimits)
        except ValueError:
            raise Refusal(400, "build: the ulimits parameter is not JSON") from None
        check_ulimits(profile, ulimits, "ulimits")
    shm = q.first_int(ex.query, "shmsize")
    if profile.shm_max and shm > profile.shm_max:
        raise Denied(profile, "this much /dev/shm", "shmsize", shm, f"at most {profile.shm_max}")


@handles("buildkit.session", "buildkit.grpc")
async def buildkit(ex: Exchange) -> None:
    if ex.admin or ex.profile.buildkit:
        return
    raise Refusal(
        403,
        f"profile {ex.profile.name!r} forbids BuildKit (its gRPC stream cannot be inspected); "
        "build with the classic builder: DOCKER_BUILDKIT=0 docker build ...",
    )
