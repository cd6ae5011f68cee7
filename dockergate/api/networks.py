"""Networks: stamped at create; connect/disconnect need both network and container."""

from __future__ import annotations

from dockergate.api.containers import endpoint_network
from dockergate.api.dispatch import handles, own_filters, owned_object, referenced_owned
from dockergate.api.exchange import Exchange
from dockergate.api.images import check_not_a_build_network
from dockergate.api.labels import stamp
from dockergate.listen.identity import Refusal
from dockergate.policy.checks import check_network


@handles("network.list", "network.prune")
async def network_list(ex: Exchange) -> None:
    own_filters(ex)
    if ex.route_name == "network.prune" and not ex.admin:
        check_not_a_build_network(ex, f"user:{ex.identity.name}")


@handles("network.delete")
async def network_delete(ex: Exchange) -> None:
    """Not while a build of the owner's runs on it (``images.pin_build_network``)."""
    if not ex.admin:
        check_not_a_build_network(ex, (await owned_object(ex)).id)


@handles("network.create")
async def network_create(ex: Exchange) -> None:
    body = await ex.read_json("network.create")
    if not isinstance(body, dict):
        raise Refusal(400, "network create: body must be a JSON object")
    body["Labels"] = stamp(body.get("Labels"), ex.identity.name)
    check_network(ex.profile, body)
    ex.set_json(body)


@handles("network.connect", "network.disconnect")
async def network_connect(ex: Exchange) -> None:
    assert ex.route is not None
    found = await owned_object(ex)
    body = await ex.read_json(ex.route.name)
    if not isinstance(body, dict):
        raise Refusal(400, f"{ex.route.name}: body must be a JSON object")
    container = str(body.get("Container") or "")
    if not ex.admin and container:
        await referenced_owned(ex, "container", container, f"Container={container}")
    if ex.route.name == "network.connect":
        await endpoint_network(ex, found.id, body)
    ex.set_json(body)
