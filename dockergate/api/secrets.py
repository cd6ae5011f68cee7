"""Secrets and configs: stamped at create and again at update (updates replace labels)."""

from __future__ import annotations

from dockergate.api.dispatch import handles, own_filters, owned_object
from dockergate.api.exchange import Exchange
from dockergate.api.labels import stamp
from dockergate.listen.identity import Refusal
from dockergate.policy.quota import check_count_quota, user_lock


@handles("secret.list", "config.list")
async def secret_list(ex: Exchange) -> None:
    own_filters(ex)


@handles("secret.create", "config.create", "secret.update", "config.update")
async def secret_create(ex: Exchange) -> None:
    assert ex.route is not None
    owner: str | None = ex.identity.name
    if ex.route.name.endswith(".update"):
        owner = (await owned_object(ex)).owner
    body = await ex.read_json_object(ex.route.name)
    body["Labels"] = stamp(body.get("Labels"), owner)
    if body.get("Driver") is not None and not ex.admin:
        # An external secret provider (a plugin the admin installed) answers each task
        # with the value it keeps under the name and labels the secret gives: a
        # member's secret could name the admin's. The gate cannot tell what it hands out.
        raise Refusal(
            403,
            f"{ex.route.name}: Driver (an external secret provider plugin) is for admins; "
            "give the secret's data in the body",
            rule="secret drivers are for admins",
        )
    if ex.route.name.endswith(".create") and not ex.admin:
        kind = "secret" if ex.route.name.startswith("secret.") else "config"
        await ex.hold(user_lock(ex.identity.name))  # the count holds until the create
        await check_count_quota(ex.daemon, ex.profile, ex.identity.name, kind)
    ex.set_json(body)
