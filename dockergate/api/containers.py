"""Containers: what happens to ``POST /containers/create`` and the other container routes.

Create: the body is parsed strictly, the owner label is stamped (replacing any
``dockergate.*`` label the client sent), every reference to another object is
checked (``VolumesFrom``, ``container:<x>`` namespaces, ``Links``, named volumes,
networks), and the re-encoded body is what the daemon receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import posixpath
import re
from typing import Any
from urllib.parse import quote

from dockergate.api import query as q
from dockergate.api.body import dumps
from dockergate.api.dispatch import (
    handles,
    own_filter_references,
    own_filters,
    owned_object,
    referenced_owned,
    who,
)
from dockergate.api.exchange import Exchange
from dockergate.api.images import (
    changes_healthcheck,
    check_changes,
    check_new_tag,
    check_onbuild,
    hold_admin_tag,
    image_config_of,
)
from dockergate.api.labels import (
    SWARM_LABEL_PREFIX,
    TASK_LABEL,
    image_labels,
    is_task,
    stamp,
    stamp_volume_mounts,
)
from dockergate.api.ownership import (
    OWNER_LABEL,
    Resolved,
    image_claim,
    imprinted,
    resolve,
    resolve_owned,
)
from dockergate.api.versions import CONTAINER_FIELDS, refuse_dropped_fields
from dockergate.api.volumes import claim_names
from dockergate.listen.identity import Refusal
from dockergate.policy.container import check_container, check_exec, check_update
from dockergate.policy.hostpaths import (
    bind_options,
    check_own_volume,
    check_present_binds,
    flat_bind_targets,
)
from dockergate.policy.quota import (
    check_container_quota,
    check_memory_quota,
    restarted_by_dockerd,
    user_lock,
)
from dockergate.policy.resources import (
    STOP_WAIT_MAX,
    check_healthcheck,
    check_inherited_healthcheck,
)
from dockergate.policy.rules import Denied
from dockergate.proxy.daemon import Daemon
from dockergate.proxy.upstream import UpstreamError

NAMESPACE_MODES = ("NetworkMode", "PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode")
BUILTIN_NETWORKS = frozenset({"bridge", "host", "none", "default"})


IMAGE_ID = re.compile(rb'"ImageID":"(sha256:[0-9a-f]{64})"')


@handles("container.list", "container.prune")
async def container_list(ex: Exchange) -> None:
    own_filters(ex)
    await own_filter_references(ex, "container", ("since", "before"))
    if ex.admin or ex.route_name != "container.list":
        return
    daemon, user = ex.daemon, ex.identity.name

    async def mine(body: bytes) -> bytes:
        """Drop containers whose owner label their image may have put there (the
        classic builder's RUN containers under an ONBUILD LABEL trigger)."""
        # Every image ID in the answer, found without parsing it (a label can only add
        # matches, never hide one): usually none claims anything, and the daemon's
        # bytes go out as they are.
        claims = {
            image.decode(): await image_claim(daemon, image.decode())
            for image in set(IMAGE_ID.findall(body))
        }
        if not any(imprinted(claim, user) for claim in claims.values()):
            return body
        items = json.loads(body)
        if not isinstance(items, list):
            return body
        kept = [
            c for c in items if not imprinted(claims.get(str(c.get("ImageID") or ""), ""), user)
        ]
        return body if len(kept) == len(items) else json.dumps(kept).encode()

    ex.response_filter = mine


@handles("container.create")
async def container_create(ex: Exchange) -> None:
    body = await ex.read_json_object("container.create")
    if not ex.admin:
        refuse_task_labels(ex, body.get("Labels"), "Labels")
    body["Labels"] = stamp(body.get("Labels"), ex.identity.name)
    await name_free(ex)
    host = body.get("HostConfig") or {}
    stamp_volume_mounts(host.get("Mounts"), ex.identity.name)
    # The user's lock first: what is checked below must not change while the create
    # waits for it (the user's own restart can hold it for seconds).
    await ex.hold(user_lock(ex.identity.name))
    await check_references(ex, body)
    check_container(ex.profile, body, await ex.daemon.facts())
    refuse_dropped_fields(ex, body, CONTAINER_FIELDS)
    image: dict[str, Any] = {}
    if not ex.admin:
        image = await image_config_of(ex, str(body.get("Image") or "")) or {}
        refuse_task_labels(ex, image.get("Labels"), f"the image {body.get('Image')}'s labels")
        check_inherited_healthcheck(
            ex.profile,
            body.get("Healthcheck"),
            image.get("Healthcheck"),
            f"the image {body.get('Image')}'s HEALTHCHECK",
        )
    memory = int((body.get("HostConfig") or {}).get("Memory") or 0)
    await check_container_quota(ex.daemon, ex.profile, ex.identity.name, memory)
    await claim_names(ex)  # every check passed: the names are the caller's from here
    await precreate_bind_volumes(ex, body.get("HostConfig") or {})
    if not ex.admin:
        own_anonymous_volumes(ex, body, list(image.get("Volumes") or {}))
    ex.set_json(body)


def refuse_task_labels(ex: Exchange, labels: Any, where: str) -> None:
    """``com.docker.swarm.*`` labels mark the containers of a service's tasks, which
    the quota counts through their service's spec: a container of one's own carrying
    them (set at create or inherited from the image) would count for nothing."""
    for key, value in labels.items() if isinstance(labels, dict) else ():
        if str(key).startswith(SWARM_LABEL_PREFIX) and value:
            raise Refusal(
                403,
                f"{who(ex)} may not create a container with the label {key}={value} "
                f"({where}): com.docker.swarm.* labels mark Swarm's task containers; run a "
                "service, or drop the label (or build the image without it)",
            )


def refuse_task_container(ex: Exchange, found: Resolved, action: str) -> None:
    """A service task's container is Swarm's to start and to size: its memory counts
    through the service's spec, so a user changing or reviving it directly would hold
    memory the quota never sees."""
    labels = (found.obj.get("Config") or {}).get("Labels") or {}
    if not ex.admin and is_task(labels):
        raise Refusal(
            403,
            f"{who(ex)} may not {action} container {found.id[:12]}: it is a task of service "
            f"{labels[TASK_LABEL][:12]}, which Swarm starts and sizes; use docker service "
            "update (--limit-memory, --force) or docker service scale",
        )


def own_anonymous_volumes(ex: Exchange, body: dict[str, Any], image_volumes: list[str]) -> None:
    """dockerd makes an anonymous volume, with no labels, for each path of the request's
    and the image's ``Volumes`` (``-v /data``, ``VOLUME``) that nothing else mounts,
    and for a one-part bind (``/data``): nobody's, so its user could never list,
    prune or remove it. Each becomes a ``Mounts`` entry of type volume without a
    source, which dockerd makes just as anonymous (removed with ``--rm`` or
    ``rm -v``), but with the owner label. With ``VolumesFrom``, what the other
    container provides is not known here, and the paths are left to dockerd."""
    host = body.get("HostConfig")
    if not isinstance(host, dict):
        host = {}
    if host.get("VolumesFrom"):
        return
    binds = [str(b) for b in host.get("Binds") or []]
    # A one-part bind is a container path; a relative one stays for dockerd to refuse
    # ("must be absolute"), not dropped from the request unsaid.
    anonymous = [b for b in binds if ":" not in b and b.startswith("/")]
    taken = {posixpath.normpath(bind_options(b)[1]) for b in binds if ":" in b}
    taken |= {
        posixpath.normpath(str(m.get("Target") or ""))
        for m in host.get("Mounts") or []
        if isinstance(m, dict)
    }
    taken |= {posixpath.normpath(str(t)) for t in host.get("Tmpfs") or {}}
    paths = [*anonymous, *(body.get("Volumes") or {}), *image_volumes]
    mounts: list[dict[str, Any]] = []
    for path in paths:
        target = posixpath.normpath(str(path))
        if target in taken or not target.startswith("/"):
            continue
        taken.add(target)
        options: dict[str, Any] = {"Labels": {OWNER_LABEL: ex.identity.name}}
        if host.get("VolumeDriver"):
            options["DriverConfig"] = {"Name": host["VolumeDriver"]}
        mounts.append({"Type": "volume", "Target": target, "VolumeOptions": options})
    if anonymous:
        host["Binds"] = [b for b in binds if b not in anonymous]
    if mounts:
        host["Mounts"] = [*(host.get("Mounts") or []), *mounts]
    if anonymous or mounts:
        body["HostConfig"] = host


async def name_free(ex: Exchange) -> None:
    """dockerd's conflict answer names the container holding a name by its full ID:
    for someone else's container, say only that the name is taken."""
    name = (q.first(ex.query, "name") or "").lstrip("/")
    if ex.admin or not name:
        return
    found = await resolve(ex.daemon, "container", name)
    if (
        found is not None
        and found.obj.get("Name") == f"/{name}"
        and found.owner != ex.identity.name
    ):
        raise Refusal(409, f"the container name {name!r} is already in use; choose another")


@handles("container.rename")
async def container_rename(ex: Exchange) -> None:
    """The owner's; and a name another user holds is only said to be taken (dockerd's
    conflict answer would name that container's full ID)."""
    found = await owned_object(ex)
    # Swarm stops and removes a task's container by its name: renamed, it would
    # outlive its task, running beside the replacement.
    refuse_task_container(ex, found, "rename")
    await name_free(ex)


@handles("container.update")
async def container_update(ex: Exchange) -> None:
    """``docker update``: the owner's, and no raising limits past the profile's caps."""
    found = await owned_object(ex)
    refuse_task_container(ex, found, "update")
    body = await ex.read_json_object("container.update")
    check_update(ex.profile, body, await ex.daemon.facts(), found.obj.get("HostConfig") or {})
    if not ex.admin and (body.get("Memory") or body.get("RestartPolicy")):
        # A new limit, or a restart policy that makes dockerd start a stopped container
        # again by itself (then it counts, restarted_by_dockerd): it must fit.
        await ex.hold(user_lock(ex.identity.name))
        after = await inspect_again(ex, found)
        host = after.setdefault("HostConfig", {})
        if body.get("RestartPolicy"):
            host["RestartPolicy"] = body["RestartPolicy"]
        memory = int(body.get("Memory") or host.get("Memory") or 0)
        state = after.get("State") or {}
        stopped = not (state.get("Running") or state.get("Restarting"))
        if body.get("Memory") or (stopped and restarted_by_dockerd(after)):
            await check_memory_quota(ex.daemon, ex.profile, ex.identity.name, found.id, memory)
    ex.set_json(body)


async def inspect_again(ex: Exchange, found: Resolved) -> dict[str, Any]:
    """The container as dockerd has it now: ``found.obj`` is as it was when resolved,
    before the waits since (a lock, other look-ups). A copy of that if the daemon does
    not answer. Each answer is parsed afresh, so the caller may change it."""
    reply = await ex.daemon.get(f"/containers/{found.id}/json")
    current = reply.json() if reply.ok else None
    return current if isinstance(current, dict) else copy.deepcopy(found.obj)


async def flat_binds(
    ex: Exchange, container: dict[str, Any], budget: list[int] | None = None
) -> frozenset[str]:
    """Targets of the ``NonRecursive`` binds a container has: its own, and those its
    ``VolumesFrom`` sources (pinned to IDs at create) bring, where dockerd keeps them:
    a later source's mount at a target replaces an earlier one's, and the container's
    own binds and mounts replace both. At most 16 containers are looked up: past
    them, binds are checked as recursive."""
    budget = budget if budget is not None else [16]
    host = container.get("HostConfig") or {}
    own = {posixpath.normpath(bind_options(str(b))[1]) for b in host.get("Binds") or []}
    own |= {
        posixpath.normpath(str(m.get("Target") or ""))
        for m in host.get("Mounts") or []
        if isinstance(m, dict)
    }
    inherited: dict[str, bool] = {}  # target -> non-recursive, the last source's
    for entry in host.get("VolumesFrom") or []:
        if budget[0] <= 0:
            break
        budget[0] -= 1
        reply = await ex.daemon.get(f"/containers/{str(entry).partition(':')[0]}/json")
        source = reply.json() if reply.ok else None
        if not isinstance(source, dict):
            continue
        source_flat = await flat_binds(ex, source, budget)
        for mount in source.get("Mounts") or []:
            if isinstance(mount, dict):
                target = posixpath.normpath(str(mount.get("Destination") or ""))
                inherited[target] = target in source_flat
    taken = {target for target, flat in inherited.items() if flat and target not in own}
    return frozenset(flat_bind_targets(container) | taken)


async def check_references(ex: Exchange, body: dict[str, Any]) -> None:
    """Every other object a container would join or borrow must be the caller's, and
    is forwarded by the full ID checked here (a name or prefix could find another
    object by the time dockerd looks it up)."""
    if ex.admin:
        return
    host = body.get("HostConfig") or {}
    await pin_networks(ex, body)
    if host.get("VolumesFrom"):
        pinned = []
        for entry in host["VolumesFrom"]:
            name, colon, mode = str(entry).partition(":")
            found = await referenced_owned(ex, "container", name, f"HostConfig.VolumesFrom={entry}")
            read_only = "ro" in mode.split(",")
            flat = await flat_binds(ex, found.obj)
            field = f"HostConfig.VolumesFrom={entry}"
            check_present_binds(ex.profile, found.obj, field, read_only, flat)
            pinned.append(found.id + colon + mode)
        host["VolumesFrom"] = pinned
    for field in NAMESPACE_MODES:
        mode = str(host.get(field) or "")
        if mode.startswith("container:"):
            found = await referenced_owned(
                ex, "container", mode[len("container:") :], f"HostConfig.{field}={mode}"
            )
            host[field] = f"container:{found.id}"
    if host.get("Links"):
        pinned = []
        for link in host["Links"]:
            # opts.ParseLink: "name[:alias]", one leading "/" trimmed from each part;
            # the alias defaults to the name, which the pinned link keeps.
            name, _, alias = str(link).partition(":")
            name = name.removeprefix("/")
            found = await referenced_owned(ex, "container", name, f"HostConfig.Links={link}")
            pinned.append(f"{found.id}:{alias.removeprefix('/') or name}")
        host["Links"] = pinned
    if host.get("Binds"):
        binds = []
        for bind in host["Binds"]:
            bind = str(bind)
            source, _dest, read_only = bind_options(bind)
            if source and not source.startswith("/"):
                shared = await volume_usable(ex, source, read_only, f"HostConfig.Binds={bind}")
                if shared and read_only and "nocopy" not in bind.split(":")[2].split(","):
                    bind += ",nocopy"  # see volume_usable (dockerd allows one copy mode)
            binds.append(bind)
        host["Binds"] = binds
    await volume_mounts_usable(ex, host.get("Mounts"), "HostConfig.Mounts")


async def volume_mounts_usable(ex: Exchange, mounts: Any, field: str) -> None:
    """``Mounts`` of type volume (a container's or a service's): each named volume
    usable (``volume_usable``), a read-only shared one mounted without the copy."""
    for mount in mounts or []:
        if isinstance(mount, dict) and mount.get("Type", "volume") == "volume":
            source = str(mount.get("Source") or "")
            read_only = bool(mount.get("ReadOnly"))
            if not source:
                continue
            shared = await volume_usable(ex, source, read_only, f"{field}.Source={source}")
            if shared and read_only:
                options = mount.get("VolumeOptions") or {}
                mount["VolumeOptions"] = {**options, "NoCopy": True}


def user_defined(network: str) -> bool:
    """dockerd's ``NetworkMode.IsUserDefined``: anything but the built-in modes and
    ``container:<x>`` names a network ("a:b" included); empty is the default."""
    return (
        bool(network) and network not in BUILTIN_NETWORKS and not network.startswith("container:")
    )


async def pin_networks(ex: Exchange, body: dict[str, Any]) -> None:
    """Check every network a new container joins, and pin each to its full ID.

    dockerd stores the references as written and looks them up again at every start
    (``FindNetwork``: full ID, then name, then ID prefix; an endpoint's ``NetworkID``
    before its key). A name or prefix checked now could name another user's network
    by then: a decoy network named after a prefix of the victim network's ID, deleted
    before the start. So ``HostConfig.NetworkMode``, the ``EndpointsConfig`` keys and
    their ``NetworkID`` are rewritten to the full ID of the network checked here, and
    a container given only a ``NetworkMode`` gets its endpoint entry (dockerd would
    store that one by the network's name)."""
    host = body.get("HostConfig") or {}
    networking = body.get("NetworkingConfig") or {}
    endpoints = networking.get("EndpointsConfig") or {}
    pinned: dict[str, Any] = {}
    for key, endpoint in endpoints.items():
        field = f"NetworkingConfig.EndpointsConfig.{key}"
        if key.startswith("container:"):
            raise Refusal(400, f"{field}: an endpoint key names a network, not a container")
        network_id = await network_usable(ex, key, field)
        if isinstance(endpoint, dict) and endpoint.get("NetworkID"):
            reference = str(endpoint["NetworkID"])
            network_id = await network_usable(ex, reference, f"{field}.NetworkID={reference}")
        if user_defined(key) and isinstance(endpoint, dict):
            endpoint["NetworkID"] = key = network_id
        if key in pinned:
            raise Refusal(400, f"{field}: names the same network as another endpoint")
        pinned[key] = endpoint
    mode = str(host.get("NetworkMode") or "")
    if user_defined(mode):
        network_id = await network_usable(ex, mode, f"HostConfig.NetworkMode={mode}")
        host["NetworkMode"] = network_id
        if not pinned:
            pinned[network_id] = {"NetworkID": network_id}
    if pinned:
        body["NetworkingConfig"] = {**networking, "EndpointsConfig": pinned}


async def check_stored_networks(ex: Exchange, container: dict[str, Any]) -> None:
    """At (re)start, the networks dockerd is about to look up again (``allocateNetwork``:
    each stored endpoint by its ``NetworkID``, else by its key; ``NetworkMode`` when
    none is stored) must still be the caller's. Containers created through the gate
    hold full IDs; this covers older ones and endpoints added while stopped."""
    if ex.admin:
        return
    mode = str((container.get("HostConfig") or {}).get("NetworkMode") or "")
    if mode.startswith("container:"):
        return
    stored = (container.get("NetworkSettings") or {}).get("Networks") or {}
    references = [
        str((endpoint or {}).get("NetworkID") or "") or key
        for key, endpoint in stored.items()
        if user_defined(key)
    ]
    if not stored and user_defined(mode):
        references = [mode]
    for reference in references:
        await network_usable(ex, reference, f"the container's network {reference}")


async def network_usable(ex: Exchange, reference: str, field: str) -> str:
    """A network a container joins: a built-in one, or the caller's. Returns what to
    pin the reference to: the full ID (a built-in name stays as it is)."""
    if ex.admin or reference in BUILTIN_NETWORKS:
        return reference
    found = await resolve(ex.daemon, "network", reference)
    if found is not None and found.obj.get("Name") in BUILTIN_NETWORKS:
        return found.id  # the bridge, host or none network by its ID
    if found is None and (await ex.daemon.facts()).worker:
        # A worker's engine lists a Swarm network only once a task of it runs there
        # (dockerd asks a manager at create): this gate cannot see whose it is.
        raise Refusal(
            403,
            f"{who(ex)} may not use network {reference!r} ({field}) through this worker's "
            "gate: the engine does not know it (a Swarm network shows on a worker only "
            "once a task of it runs there), so its owner cannot be checked; run the "
            "work as a service on that network (docker service create --network ...)",
        )
    return (await referenced_owned(ex, "network", reference, field)).id


async def endpoint_network(ex: Exchange, network_id: str, body: dict[str, Any]) -> None:
    """``network connect``: dockerd attaches the endpoint to its ``NetworkID`` when one
    is given, whatever the path names, so that one must be usable too; and pinned to
    the full ID, as a stopped container stores the endpoint by the network's name
    (see ``pin_networks``)."""
    endpoint = body.get("EndpointConfig")
    if isinstance(endpoint, dict) and endpoint.get("NetworkID"):
        reference = str(endpoint["NetworkID"])
        network_id = await network_usable(ex, reference, f"EndpointConfig.NetworkID={reference}")
    if ex.admin:
        return
    if not isinstance(endpoint, dict):
        endpoint = body["EndpointConfig"] = {}
    endpoint["NetworkID"] = network_id


async def volume_usable(ex: Exchange, name: str, read_only: bool, field: str) -> bool:
    """A named volume must be one the profile shares (read-only where it says), or the
    caller's own, or not exist yet (it will be theirs). True for a shared volume: the
    caller then mounts it with ``nocopy`` when read-only, since dockerd copies the
    image's files at the mount point into an empty volume whatever the mount's mode."""
    profile = ex.profile
    field_name = field.partition("=")[0]  # Denied shows field=value itself
    for shared in profile.shared_volumes:
        if shared.name == name:
            if shared.read_only and not read_only:
                raise Denied(
                    profile,
                    "a writable mount of a read-only shared volume",
                    field_name,
                    name,
                    f"mount {name} read-only (:ro / readonly)",
                )
            if await resolve(ex.daemon, "volume", name) is None:
                # Mounting it would create it, labelled as this user's: the first
                # user would own (fill, delete) what everyone mounts as shared.
                raise Refusal(
                    403,
                    f"shared volume {name!r} ({field}) does not exist yet; an admin "
                    f"creates it: docker volume create {name}",
                )
            return True
    if name in ex.shared_volume_names:
        raise Refusal(
            403,
            f"{who(ex)} may not mount volume {name!r} ({field}): it is a shared volume "
            f"of another profile",
        )
    check_own_volume(profile, name, field_name)
    found = await resolve(ex.daemon, "volume", name)
    if found is not None and found.owner != ex.identity.name:
        raise Refusal(
            403,
            f"{who(ex)} may not mount volume {name!r} ({field}): it belongs to someone else",
        )
    ex.volume_claims.append((name, field, found is not None))  # claimed if all else passes
    return False


async def precreate_bind_volumes(ex: Exchange, host: dict[str, Any]) -> None:
    """A volume named in ``Binds`` that does not exist would be created unlabelled by
    the daemon, and its creator could never manage it: create it labelled first. If
    dockerd then refuses the create (a bad mode, a duplicate target), the volumes made
    here go again: a refused create leaves nothing behind."""
    made: list[str] = []
    for bind in host.get("Binds") or []:
        source, colon, _ = str(bind).partition(":")
        if not colon or not source or source.startswith("/"):
            continue  # a one-part bind names a container path, not a volume
        if await resolve(ex.daemon, "volume", source) is not None:
            continue
        spec: dict[str, Any] = {"Name": source, "Labels": {OWNER_LABEL: ex.identity.name}}
        if host.get("VolumeDriver"):
            spec["Driver"] = host["VolumeDriver"]
        if (await ex.daemon.call("POST", "/volumes/create", dumps(spec))).status == 201:
            made.append(source)
    if made:

        def undo() -> None:
            if ex.status != 201:
                task = asyncio.get_running_loop().create_task(
                    _remove_volumes(ex.daemon, ex.identity.name, made)
                )
                _undoing.add(task)
                task.add_done_callback(_undoing.discard)

        ex.on_release.append(undo)


_undoing: set[asyncio.Task[None]] = set()  # kept referenced until they finish


async def _remove_volumes(daemon: Daemon, user: str, names: list[str]) -> None:
    """Under the user's lock, so that a create of theirs using a name meanwhile keeps
    it (dockerd does not remove a volume in use)."""
    async with user_lock(user):
        for name in names:
            with contextlib.suppress(UpstreamError):
                await daemon.call("DELETE", f"/volumes/{quote(name, safe='')}")


@handles("container.start")
async def container_start(ex: Exchange) -> None:
    """Start takes no body since API 1.24, but dockerd 20.10 still applies a HostConfig
    sent with it (privileged, binds...): a non-admin's start must carry none."""
    found = await owned_object(ex)
    if ex.req.has_body and not ex.admin:
        raise Refusal(
            400,
            "container start: a request body (a HostConfig) is not accepted; set options at create",
        )
    await check_started(ex, found)


@handles("container.restart")
async def container_restart(ex: Exchange) -> None:
    found = await owned_object(ex)
    check_stop_wait_query(ex)
    await check_started(ex, found)


@handles("container.stop")
async def container_stop(ex: Exchange) -> None:
    if ex.admin:
        return
    await owned_object(ex)
    check_stop_wait_query(ex)


def check_stop_wait_query(ex: Exchange) -> None:
    """``t`` of a stop or restart: how long dockerd waits before SIGKILL; negative is
    for ever (the request never ends, and dockerd's goroutine with it)."""
    if ex.admin or q.first(ex.query, "t") is None:
        return
    seconds = q.first_int(ex.query, "t")
    if not 0 <= seconds <= STOP_WAIT_MAX:
        raise Refusal(
            403,
            f"{who(ex)} may not ask dockerd to wait {seconds} s for the container to stop "
            f"(t): 0 to {STOP_WAIT_MAX} s",
            rule="stop timeout",
        )


async def check_started(ex: Exchange, found: Resolved) -> None:
    """Its networks must still be the caller's (``check_stored_networks``), its bind
    mounts must still pass the profile (``check_present_binds``). A stopped container
    must fit in the memory quota when it starts again; the user's lock is then held
    until the start is forwarded, as for a create."""
    await check_stored_networks(ex, found.obj)
    # Not even a restart of a running one: dockerd stops it, Swarm starts a new task
    # for the one that died, then dockerd starts the old one again: two containers.
    refuse_task_container(ex, found, "start or restart")
    if not ex.admin:  # bound again at every start
        check_present_binds(ex.profile, found.obj, "Mounts", flat=await flat_binds(ex, found.obj))
    if ex.admin or ex.profile.quota_memory is None:
        return
    # Read after the checks above, which wait on the daemon: the state decides.
    state = (await inspect_again(ex, found)).get("State") or {}
    if state.get("Running") or state.get("Restarting"):
        # A restart of a running one: counted at its limit already, and no lock,
        # which it would hold through dockerd's whole stop wait (the user's creates
        # waited). A stopped one, even one dockerd would restart, takes the lock: an
        # update under it may stop it counting meanwhile.
        return
    await ex.hold(user_lock(ex.identity.name))
    # Read again under the lock: an update queued before it may have raised the limit.
    current = await inspect_again(ex, found)
    memory = int((current.get("HostConfig") or {}).get("Memory") or 0)
    await check_memory_quota(ex.daemon, ex.profile, ex.identity.name, found.id, memory)


@handles("exec.start")
async def exec_start(ex: Exchange) -> None:
    """The exec's owner is its container's; the small start body is checked too."""
    await owned_object(ex)
    if ex.req.has_body and not ex.admin:
        ex.set_json(await ex.read_json("exec.start"))


# dockerd keeps an exec in its own memory from create until it ends (one never
# started: until its container is removed), outside every cgroup and quota; a 1.9 MB
# command line cost it 4.8 MiB (review 17b). Non-admins: at most this many execs of a
# container at once, each body at most this big (a command line, its environment).
EXEC_PENDING_MAX = 32
EXEC_BODY_MAX = 128 << 10


@handles("exec.create")
async def exec_create(ex: Exchange) -> None:
    body = await ex.read_json_object("exec.create")
    if not ex.admin:
        # The container's execs are counted under the user's lock, which holds until
        # dockerd has answered (parallel creates would all see the same count); taken
        # once the body is in, so a client slow to send it holds nothing of theirs.
        await ex.hold(user_lock(ex.identity.name))
    found = await owned_object(ex)
    check_exec(ex.profile, body, str((found.obj.get("Config") or {}).get("User") or ""))
    ex.set_json(body)
    if ex.admin:
        return
    if ex.body is not None and len(ex.body) > EXEC_BODY_MAX:
        raise Refusal(
            403,
            f"{who(ex)} may not create an exec of {len(ex.body)} bytes (command and "
            f"environment; at most {EXEC_BODY_MAX >> 10} KiB): dockerd keeps it in memory; "
            "copy a script into the container and run that",
            rule="exec size",
        )
    execs = found.obj.get("ExecIDs") or []
    if isinstance(execs, list) and len(execs) >= EXEC_PENDING_MAX:
        raise Refusal(
            403,
            f"{who(ex)} may not create another exec in container {found.id[:12]}: it has "
            f"{len(execs)} not yet ended (created and never started, or running), at most "
            f"{EXEC_PENDING_MAX}; start or end them, or remove the container",
            rule="execs per container",
        )


@handles("image.commit")
async def commit(ex: Exchange) -> None:
    """``POST /commit?container=x``: the container must be the caller's. The image's
    author is the committer, an admin too: dockerd copies the container's labels into
    the image, ``built-by`` of the member whose image it ran included, which would make
    an admin's image that member's to move and remove."""
    if ex.admin:
        await hold_admin_tag(ex, q.first(ex.query, "repo") or "", q.first(ex.query, "tag") or "")
        ex.set_json(await _commit_config(ex))
        return
    container = q.first(ex.query, "container")
    if not container:
        raise Refusal(400, "commit: the container parameter is required")
    found = await resolve_owned(ex.daemon, ex.identity, "container", container)
    await check_new_tag(ex, q.first(ex.query, "repo") or "", q.first(ex.query, "tag") or "")
    check_changes(ex)
    ex.set_query(q.replace(ex.query, "container", found.id))
    config = await _commit_config(ex)
    # dockerd takes the body's health check settings over the container's own, and a
    # HEALTHCHECK line of changes over both (its zero intervals from the container's).
    own = changes_healthcheck(ex) or config.get("Healthcheck")
    check_healthcheck(ex.profile, own, "Healthcheck", image=True)
    check_inherited_healthcheck(
        ex.profile,
        own,
        (found.obj.get("Config") or {}).get("Healthcheck"),
        "the committed image's HEALTHCHECK (Healthcheck, changes)",
        into_image=True,
    )
    onbuild = config.get("OnBuild") or []
    if not isinstance(onbuild, list):
        raise Refusal(400, "commit: OnBuild must be a list")
    check_onbuild(ex, [str(trigger) for trigger in onbuild], "OnBuild", triggers=True)
    # A task container's Swarm labels would go into the image (dockerd merges the
    # container's labels into it) and make its containers refused: emptied.
    for key in (found.obj.get("Config") or {}).get("Labels") or {}:
        if str(key).startswith(SWARM_LABEL_PREFIX):
            config["Labels"][key] = ""
    ex.set_json(config)


async def _commit_config(ex: Exchange) -> dict[str, Any]:
    """The commit's body (a container config merged over the container's), with the
    image's labels: the author, and an empty owner label over the container's own."""
    config: Any = await ex.read_json("image.commit") if ex.req.has_body else None
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise Refusal(400, "commit: body must be a JSON object")
    config["Labels"] = image_labels(config.get("Labels"), ex.identity.name)
    return config
