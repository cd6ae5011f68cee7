"""Volumes: stamped at create, listed and pruned through the owner filter."""

from __future__ import annotations

from dockergate.api.dispatch import handles, own_filters, who
from dockergate.api.exchange import Exchange
from dockergate.api.labels import stamp
from dockergate.api.ownership import resolve
from dockergate.listen.identity import Refusal
from dockergate.policy.checks import check_volume_driver


@handles("volume.list", "volume.prune")
async def volume_list(ex: Exchange) -> None:
    own_filters(ex)


@handles("volume.create")
async def volume_create(ex: Exchange) -> None:
    body = await ex.read_json("volume.create")
    if not isinstance(body, dict):
        raise Refusal(400, "volume create: body must be a JSON object")
    body["Labels"] = stamp(body.get("Labels"), ex.identity.name)
    if not ex.profile.admin:
        name = str(body.get("Name") or "")
        if name in ex.shared_volume_names:
            raise Refusal(
                403,
                f"{who(ex)} may not create volume {name!r}: it is a shared volume of a "
                "profile, created by an admin",
            )
        driver = str(body.get("Driver") or "")
        check_volume_driver(ex.profile, driver, body.get("DriverOpts"), "DriverOpts")
        if name:
            # dockerd answers a create of an existing name with that volume (labels,
            # mountpoint): someone else's must not come back.
            existing = await resolve(ex.daemon, "volume", name)
            if existing is not None and existing.owner != ex.identity.name:
                raise Refusal(409, f"a volume named {name!r} already exists; choose another name")
    ex.set_json(body)
