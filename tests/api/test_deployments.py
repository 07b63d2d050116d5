from __future__ import annotations

import asyncio
import subprocess
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from agentmarket.core.config import Settings
from agentmarket.core.metrics import DEPLOYMENTS
from functions.app import create_app
from tests.api.conftest import Caller

pytestmark = pytest.mark.db

KEY = "sk-proj-Zx81LmQ2vT5rY7uW9iOpA3sD6fGhJkL4"  # required by code-review-buddy
OTHER_KEY = "sk-Qw3rTy8u-Io1pAs5dFg7-hJk2lZx4cVb6nM9mN"


async def deploy(
    client: httpx.AsyncClient, caller: Caller, agent: str, config: dict[str, Any], **extra: Any
) -> httpx.Response:
    return await client.post(
        "/api/marketplace/deploy",
        json={"agent_id": agent, "config": config, **extra},
        headers=caller.headers,
    )


def metric(result: str) -> float:
    value: float = DEPLOYMENTS.labels(result=result)._value.get()
    return value


async def test_deploy_validates_applies_defaults_and_seals_the_key(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    before = metric("success")
    response = await deploy(
        client,
        alice,
        "code-review-buddy",
        {"openai_api_key": KEY, "persona_name": "Ada"},
        name="My reviewer",
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "My reviewer"
    assert body["status"] == "active"
    assert body["agent"]["slug"] == "code-review-buddy"
    assert body["config"]["persona_name"] == "Ada"
    assert body["config"]["temperature"] == 0.3  # from the agent's defaults
    assert "openai_api_key" not in body["config"]
    assert body["secrets"] == {"openai_api_key": "sk-proj-…JkL4"}
    assert KEY not in response.text
    assert metric("success") == before + 1

    stored = conn.execute(
        "select field, key_id, ciphertext, hint from private.deployment_secrets"
        " where deployment_id = %s",
        (body["id"],),
    ).fetchall()
    assert [(f, k, h) for f, k, _, h in stored] == [("openai_api_key", "dev", "sk-proj-…JkL4")]
    assert KEY.encode() not in bytes(stored[0][2])
    event = conn.execute(
        "select user_id, deployment_id from private.telemetry_events"
        " where name = 'marketplace.agent.deployed'"
    ).fetchone()
    assert event == (alice.user.id, uuid.UUID(body["id"]))


async def test_the_key_appears_nowhere_in_the_database_or_a_dump(
    client: httpx.AsyncClient, alice: Caller, db_url: str
) -> None:
    response = await deploy(client, alice, "code-review-buddy", {"openai_api_key": KEY})
    assert response.status_code == 201
    dump = (
        await asyncio.to_thread(
            subprocess.run,
            ["pg_dump", "--data-only", f"--dbname={db_url}"],
            capture_output=True,
            check=True,
        )
    ).stdout
    assert KEY.encode() not in dump
    assert KEY[8:24].encode() not in dump


async def test_every_invalid_field_is_reported_at_once(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    before = metric("invalid_config")
    response = await deploy(
        client,
        alice,
        "code-review-buddy",
        {
            "openai_api_key": "not-a-key-" + KEY,
            "temperature": 9,
            "response_style": "rude",
            "surprise": True,
        },
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_config"
    paths = [e["path"] for e in body["errors"]]
    assert paths == sorted(paths)
    assert set(paths) == {
        "/config/openai_api_key",
        "/config/temperature",
        "/config/response_style",
        "/config/surprise",
    }
    assert KEY not in response.text
    assert metric("invalid_config") == before + 1
    assert conn.execute("select count(*) from public.agent_deployments").fetchone() == (0,)


async def test_missing_required_config_deploys_as_configuring(
    client: httpx.AsyncClient, alice: Caller
) -> None:
    response = await deploy(client, alice, "code-review-buddy", {})
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "configuring"
    assert "openai_api_key" in body["status_reason"]

    activate = await client.patch(
        f"/api/deployments/{body['id']}", json={"status": "active"}, headers=alice.headers
    )
    assert activate.status_code == 409
    assert activate.json()["code"] == "deployment_not_configured"
    assert activate.json()["detail"] == (
        "Cannot activate: missing required configuration: openai_api_key."
    )

    configured = await client.patch(
        f"/api/deployments/{body['id']}",
        json={"config": {"openai_api_key": KEY}},
        headers=alice.headers,
    )
    assert configured.status_code == 200
    assert configured.json()["status"] == "active"
    assert configured.json()["status_reason"] is None


async def test_unknown_or_unpublished_agents_cannot_be_deployed(
    client: httpx.AsyncClient, alice: Caller, admin: Caller
) -> None:
    for ref, caller in [
        ("no-such-agent", alice),
        (str(uuid.uuid4()), alice),
        ("release-notes-writer", alice),  # unpublished
        ("release-notes-writer", admin),  # even admins see it, but cannot deploy it
    ]:
        response = await deploy(client, caller, ref, {})
        assert response.status_code == 404, ref
        assert response.json()["code"] == "agent_not_found"


async def test_the_cap_on_active_deployments_is_a_409_and_paused_ones_do_not_count(
    client: httpx.AsyncClient, alice: Caller, bob: Caller
) -> None:
    ids = []
    for _ in range(3):  # the test settings cap at 3
        response = await deploy(client, alice, "sql-sidekick", {})
        assert response.status_code == 201
        ids.append(response.json()["id"])
    over = await deploy(client, alice, "sql-sidekick", {})
    assert over.status_code == 409
    assert over.json()["code"] == "deployment_limit_reached"
    assert (await deploy(client, bob, "sql-sidekick", {})).status_code == 201  # per user

    paused = await client.patch(
        f"/api/deployments/{ids[0]}", json={"status": "paused"}, headers=alice.headers
    )
    assert paused.json()["status"] == "paused"
    assert (await deploy(client, alice, "sql-sidekick", {})).status_code == 201
    resume = await client.patch(
        f"/api/deployments/{ids[0]}", json={"status": "active"}, headers=alice.headers
    )
    assert resume.status_code == 409
    assert resume.json()["code"] == "deployment_limit_reached"


async def test_reconfigure_keeps_secrets_left_out_and_replaces_given_ones(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    created = (await deploy(client, alice, "code-review-buddy", {"openai_api_key": KEY})).json()
    url = f"/api/deployments/{created['id']}"
    renamed = await client.patch(
        url, json={"name": "Renamed", "config": {"persona_name": "Grace"}}, headers=alice.headers
    )
    assert renamed.status_code == 200, renamed.text
    body = renamed.json()
    assert (body["name"], body["status"]) == ("Renamed", "active")
    assert body["config"]["persona_name"] == "Grace"
    assert body["secrets"] == {"openai_api_key": "sk-proj-…JkL4"}

    rekeyed = await client.patch(
        url, json={"config": {"openai_api_key": OTHER_KEY}}, headers=alice.headers
    )
    assert rekeyed.json()["secrets"] == {"openai_api_key": "sk-…" + OTHER_KEY[-4:]}
    assert conn.execute("select count(*) from private.deployment_secrets").fetchone() == (1,)

    invalid = await client.patch(
        url, json={"config": {"temperature": "hot"}}, headers=alice.headers
    )
    assert invalid.status_code == 422
    assert [e["path"] for e in invalid.json()["errors"]] == ["/config/temperature"]


async def test_list_get_pause_and_delete(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    first = (await deploy(client, alice, "sql-sidekick", {})).json()
    second = (await deploy(client, alice, "code-review-buddy", {"openai_api_key": KEY})).json()
    listed = await client.get("/api/deployments", headers=alice.headers)
    assert [d["id"] for d in listed.json()["data"]] == [second["id"], first["id"]]
    assert listed.json()["data"][0]["secrets"] == {"openai_api_key": "sk-proj-…JkL4"}

    one = await client.get(f"/api/deployments/{first['id']}", headers=alice.headers)
    assert one.json() == first | {"updated_at": one.json()["updated_at"]}

    deleted = await client.delete(f"/api/deployments/{second['id']}", headers=alice.headers)
    assert deleted.status_code == 204
    gone = await client.get(f"/api/deployments/{second['id']}", headers=alice.headers)
    assert gone.status_code == 404
    assert (
        await client.delete(f"/api/deployments/{second['id']}", headers=alice.headers)
    ).status_code == 404
    listed = await client.get("/api/deployments", headers=alice.headers)
    assert [d["id"] for d in listed.json()["data"]] == [first["id"]]
    # The key is destroyed with the deployment; the agent's count goes back down.
    assert conn.execute("select count(*) from private.deployment_secrets").fetchone() == (0,)
    count = conn.execute(
        "select deploy_count from public.marketplace_agents where slug = 'code-review-buddy'"
    ).fetchone()
    assert count == (0,)


async def test_another_users_deployment_is_404_on_every_route(
    client: httpx.AsyncClient, alice: Caller, bob: Caller, conn: psycopg.Connection
) -> None:
    mine = (await deploy(client, alice, "code-review-buddy", {"openai_api_key": KEY})).json()
    url = f"/api/deployments/{mine['id']}"
    for method, body in [("GET", None), ("PATCH", {"name": "stolen"}), ("DELETE", None)]:
        response = await client.request(method, url, json=body, headers=bob.headers)
        assert response.status_code == 404, method
        assert response.json()["code"] == "deployment_not_found"
    assert (await client.get("/api/deployments", headers=bob.headers)).json() == {"data": []}
    still = await client.get(url, headers=alice.headers)
    assert still.json()["name"] == mine["name"]
    assert conn.execute("select count(*) from private.deployment_secrets").fetchone() == (1,)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/deployments"),
        ("GET", f"/api/deployments/{uuid.uuid4()}"),
        ("PATCH", f"/api/deployments/{uuid.uuid4()}"),
        ("DELETE", f"/api/deployments/{uuid.uuid4()}"),
        ("POST", "/api/marketplace/deploy"),
    ],
)
async def test_anonymous_callers_get_401_on_user_routes(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path, json={"agent_id": "sql-sidekick", "name": "x"})
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


async def test_invalid_tokens_get_401(client: httpx.AsyncClient, alice: Caller) -> None:
    for header in ["Bearer not.a.jwt", "Bearer " + alice.token[:-4] + "AAAA", "Basic abc"]:
        response = await client.get("/api/deployments", headers={"Authorization": header})
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_token"
        assert alice.token not in response.text


async def test_concurrent_deploys_cannot_exceed_the_cap(
    client: httpx.AsyncClient, alice: Caller
) -> None:
    responses = await asyncio.gather(*(deploy(client, alice, "sql-sidekick", {}) for _ in range(6)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [201, 201, 201, 409, 409, 409]


NON_PUBLIC = "must not point to a private, loopback, link-local, multicast or reserved IP address"


async def test_url_fields_take_public_https_urls_only_on_deploy_and_reconfigure(
    client: httpx.AsyncClient, alice: Caller
) -> None:
    refused = {
        "http://docs.example.com/": "must be an https:// URL",
        "file:///etc/passwd": "must be an https:// URL",
        "https://user:pw@docs.example.com/": "must not contain a user name or password",
        "https://169.254.169.254/latest/meta-data": NON_PUBLIC,
        "https://2130706433/": NON_PUBLIC,
        "https://[::ffff:127.0.0.1]/": NON_PUBLIC,
        "https://api.localhost/": "must not point to localhost",
    }
    for url, message in refused.items():
        response = await deploy(client, alice, "api-docs-concierge", {"docs_url": url})
        assert response.status_code == 422, (url, response.text)
        assert response.json()["code"] == "invalid_config"
        assert response.json()["errors"] == [{"path": "/config/docs_url", "message": message}]

    created = await deploy(client, alice, "api-docs-concierge", {"docs_url": "https://d.example"})
    assert created.status_code == 201, created.text
    url = f"/api/deployments/{created.json()['id']}"
    for bad, message in refused.items():
        patched = await client.patch(url, json={"config": {"docs_url": bad}}, headers=alice.headers)
        assert patched.status_code == 422, (bad, patched.text)
        assert patched.json()["errors"] == [{"path": "/config/docs_url", "message": message}]


async def test_allow_http_urls_lets_http_through_on_deploy_and_reconfigure(
    settings: Settings, alice: Caller
) -> None:
    app = create_app(settings.model_copy(update={"allow_http_urls": True}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        config = {"docs_url": "http://docs.example.com/"}
        created = await deploy(client, alice, "api-docs-concierge", config)
        assert created.status_code == 201, created.text
        assert created.json()["config"]["docs_url"] == "http://docs.example.com/"
        patched = await client.patch(
            f"/api/deployments/{created.json()['id']}",
            json={"config": {"docs_url": "http://other.example.com/"}},
            headers=alice.headers,
        )
        assert patched.status_code == 200, patched.text
        private = await deploy(
            client, alice, "api-docs-concierge", {"docs_url": "http://10.0.0.5/"}
        )
        assert private.json()["errors"] == [{"path": "/config/docs_url", "message": NON_PUBLIC}]
