"""Services and tasks: stamping a service *and* its task containers, checking references.

The owner label goes on the service's ``Labels`` and on
``TaskTemplate.ContainerSpec.Labels``, so that the containers Swarm starts for it on
any node carry it too. Updates replace the whole spec, so they are stamped again.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from dockergate.api import query as q
from dockergate.api.containers import volume_mounts_usable
from dockergate.api.dispatch import (
    handles,
    own_filter_references,
    own_filters,
    owned_object,
    referenced_owned,
    who,
)
from dockergate.api.exchange import Exchange, ResponseFilter
from dockergate.api.images import image_config_of
from dockergate.api.labels import stamp, stamp_volume_mounts
from dockergate.api.versions import SERVICE_FIELDS, refuse_dropped_fields
from dockergate.api.volumes import claim_names
from dockergate.listen.identity import Refusal
from dockergate.policy.quota import check_service_quota, user_lock
from dockergate.policy.resources import check_inherited_healthcheck
from dockergate.policy.rules import Denied
from dockergate.policy.service import check_service


@handles("service.list", "task.list")
async def service_list(ex: Exchange) -> None:
    own_filters(ex)
    if ex.route_name == "task.list":
        await own_filter_references(ex, "service", ("service",))


@handles("service.create")
async def service_create(ex: Exchange) -> None:
    await _service_spec(ex, "service.create", ex.identity.name, None)


@handles("service.update")
async def service_update(ex: Exchange) -> None:
    found = await owned_object(ex)
    spec = await _service_spec(ex, "service.update", found.owner, found.id)
    if ex.admin:
        return
    if q.first(ex.query, "rollback") == "previous":
        # Swarm then applies the service's PreviousSpec and ignores the body: that
        # spec is what must pass the profile and the quota now.
        await _check_restored(ex, found.obj.get("PreviousSpec"), found.id)
    elif (spec.get("UpdateConfig") or {}).get("FailureAction") == "rollback":
        # If this update fails, Swarm rolls back by itself to the spec running now,
        # which passed the profile as it was then: it must pass it as it is. When it
        # no longer does (the profile changed since), this update goes ahead, itself
        # checked, with FailureAction pause, and the CLI prints why.
        try:
            await _check_restored(ex, found.obj.get("Spec"), found.id)
        except (Denied, Refusal) as exc:
            if isinstance(exc, Refusal) and exc.status != 403:
                raise
            spec["UpdateConfig"]["FailureAction"] = "pause"
            ex.set_json(spec)
            ex.response_filter = with_warning(
                "dockergate: UpdateConfig.FailureAction (failure_action) is pause for this "
                "update, not rollback: the running spec Swarm would roll back to no longer "
                f"fits the profile ({exc.message})"
            )


def with_warning(warning: str) -> ResponseFilter:
    """Add ``warning`` to the ``Warnings`` of a JSON answer (the CLI prints them)."""

    async def add(body: bytes) -> bytes:
        try:
            answer = json.loads(body)
        except ValueError:
            return body
        if not isinstance(answer, dict):
            return body
        answer["Warnings"] = [*(answer.get("Warnings") or []), warning]
        return json.dumps(answer).encode()

    return add


async def _check_restored(ex: Exchange, spec: Any, service_id: str) -> None:
    """A spec Swarm may go back to without asking the gate. Swarm restores it as
    stored, so what the profile would fill in today (placement off managers after a
    move to a stricter profile, a default limit) would never reach it: such a spec
    is refused, not passed as if it fitted."""
    if isinstance(spec, dict):
        spec = copy.deepcopy(spec)
        template = spec.get("TaskTemplate") or {}
        await _check_references(ex, spec, template, template.get("ContainerSpec") or {})
        stored = copy.deepcopy(spec)
        check_service(ex.profile, spec, await ex.daemon.facts())
        await check_task_image_healthcheck(ex, template.get("ContainerSpec") or {})
        changed = first_difference(stored, spec)
        if changed is not None:
            raise Refusal(
                403,
                f"{who(ex)} may not go back to a spec that no longer fits profile "
                f"{ex.profile.name!r} (it would need {changed}); update the service "
                "instead (docker service update), which applies the profile",
            )
        await check_service_quota(ex.daemon, ex.profile, ex.identity.name, spec, service_id)


def first_difference(before: Any, after: Any, path: str = "") -> str | None:
    """Where ``after`` first differs from ``before`` (a dotted path), or None."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in [*before, *(k for k in after if k not in before)]:
            found = first_difference(before.get(key), after.get(key), f"{path}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for i, (a, b) in enumerate(zip(before, after, strict=True)):
            found = first_difference(a, b, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    return None if before == after else (path.lstrip(".") or "the spec")


async def _service_spec(
    ex: Exchange, schema: str, owner: str | None, service_id: str | None
) -> dict[str, Any]:
    """Stamp ``owner`` (the creator; on update, the existing owner, so an admin's
    edit does not take a user's service away from them)."""
    spec = await ex.read_json_object(schema)
    spec["Labels"] = stamp(spec.get("Labels"), owner)
    template = spec.get("TaskTemplate")
    if not isinstance(template, dict):
        template = spec["TaskTemplate"] = {}
    if not ex.admin and (template.get("PluginSpec") or template.get("NetworkAttachmentSpec")):
        raise Refusal(403, f"{who(ex)} may not create plugin or attachment services: admins only")
    container = template.get("ContainerSpec")
    if not isinstance(container, dict):
        container = template["ContainerSpec"] = {}
    container["Labels"] = stamp(container.get("Labels"), owner)
    stamp_volume_mounts(container.get("Mounts"), owner)
    await _check_references(ex, spec, template, container)
    check_service(ex.profile, spec, await ex.daemon.facts())
    refuse_dropped_fields(ex, spec, SERVICE_FIELDS)
    await check_task_image_healthcheck(ex, container)
    await ex.hold(user_lock(ex.identity.name))
    await check_service_quota(ex.daemon, ex.profile, ex.identity.name, spec, service_id)
    await claim_names(ex)
    ex.set_json(spec)
    return spec


async def check_task_image_healthcheck(ex: Exchange, container: dict[str, Any]) -> None:
    """The task's image's ``HEALTHCHECK``, as this engine has the image (a node that
    pulls another under the same name is beyond what the gate sees)."""
    if ex.admin:
        return
    reference = str(container.get("Image") or "")
    image = await image_config_of(ex, reference) or {}
    check_inherited_healthcheck(
        ex.profile,
        container.get("Healthcheck"),
        image.get("Healthcheck"),
        f"the image {reference}'s HEALTHCHECK",
    )


async def _check_references(
    ex: Exchange, spec: dict[str, Any], template: dict[str, Any], container: dict[str, Any]
) -> None:
    if ex.admin:
        return
    refuse_node_templates(ex, spec, template, container)
    for attachment in [*(template.get("Networks") or []), *(spec.get("Networks") or [])]:
        target = str((attachment or {}).get("Target") or "")
        if target:
            found = await referenced_owned(ex, "network", target, f"Networks.Target={target}")
            attachment["Target"] = found.id  # what was checked, not a name found again
    for secret in container.get("Secrets") or []:
        name = str((secret or {}).get("SecretID") or (secret or {}).get("SecretName") or "")
        await referenced_owned(ex, "secret", name, f"ContainerSpec.Secrets={name}")
    for config in container.get("Configs") or []:
        name = str((config or {}).get("ConfigID") or (config or {}).get("ConfigName") or "")
        await referenced_owned(ex, "config", name, f"ContainerSpec.Configs={name}")
    await volume_mounts_usable(ex, container.get("Mounts"), "ContainerSpec.Mounts")


TEMPLATE_OPEN = "{{"


def refuse_node_templates(
    ex: Exchange, spec: dict[str, Any], template: dict[str, Any], container: dict[str, Any]
) -> None:
    """Refuse Go templates where they name host or shared objects.

    Swarm expands ``{{...}}`` in a task's mount sources and targets, volume labels and
    driver options, and network driver options on the node, just before it makes the
    container (swarmkit ``template.ExpandContainerSpec``, ``ExpandNetworks``): long after
    the gate checked the text as a literal. ``{{"../.."}}`` or a service label then
    names a host path outside the bind roots, another user's volume or the read-only
    shared volume made writable. Templates stay allowed where they name nothing
    (``Hostname``, ``Env``, network ``Aliases``)."""
    fields: list[tuple[str, Any]] = []
    for i, mount in enumerate(container.get("Mounts") or []):
        if not isinstance(mount, dict):
            continue
        where = f"ContainerSpec.Mounts[{i}]"
        fields += [
            (f"{where}.Source", mount.get("Source")),
            (f"{where}.Target", mount.get("Target")),
        ]
        options = mount.get("VolumeOptions") or {}
        for key, value in (options.get("Labels") or {}).items():
            fields.append((f"{where}.VolumeOptions.Labels[{key}]", value))
        driver = options.get("DriverConfig") or {}
        for key, value in (driver.get("Options") or {}).items():
            fields.append((f"{where}.VolumeOptions.DriverConfig.Options[{key}]", value))
    for i, attachment in enumerate(
        [*(template.get("Networks") or []), *(spec.get("Networks") or [])]
    ):
        for key, value in ((attachment or {}).get("DriverOpts") or {}).items():
            fields.append((f"Networks[{i}].DriverOpts[{key}]", value))
    for field, value in fields:
        if isinstance(value, str) and TEMPLATE_OPEN in value:
            raise Refusal(
                403,
                f"{who(ex)} may not put a template ({TEMPLATE_OPEN}...}}}}) in {field}: Swarm "
                "expands it on the node after the gate checked the text, so it could name "
                "another path or volume; write the name out (templates stay allowed in "
                "Hostname, Env and network Aliases)",
            )
