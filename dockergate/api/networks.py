"""Networks: stamped at create; connect/disconnect need both network and container."""

from __future__ import annotations

from dockergate.api.containers import endpoint_network_usable
from dockergate.api.dispatch import handles, own_filters, owned_object, referenced_owned
from dockergate.api.exchange import Exchange
from dockergate.api.labels import stamp
from dockergate.listen.identity import Refusal
from dockergate.policy.checks import check_network


@handles("network.list", "network.prune")
async def network_list(ex: Exchange) -> None:
    own_filters(ex)


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
    await owned_object(ex)
    body = await ex.read_json(ex.route.name)
    if not isinstance(body, dict):
        raise Refusal(400, f"{ex.route.name}: body must be a JSON object")
    container = str(body.get("Container") or "")
    if not ex.admin and container:
        await referenced_owned(ex, "container", container, f"Container={container}")
    await endpoint_network_usable(ex, body.get("EndpointConfig"), "EndpointConfig")
    ex.set_json(body)
