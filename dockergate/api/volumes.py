"""Volumes: stamped at create, listed and pruned through the owner filter."""

from __future__ import annotations

from dockergate.api.dispatch import handles, own_filters
from dockergate.api.exchange import Exchange
from dockergate.api.labels import stamp
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
        driver = str(body.get("Driver") or "")
        check_volume_driver(ex.profile, driver, body.get("DriverOpts"), "DriverOpts")
    ex.set_json(body)
