"""GET /api/agents/{deployment_id}/conversations/{id}/export?format=json|md: the whole
conversation with every message, streamed in parts; another user's conversation is a 404; in the
Markdown transcript no message content can change the document's structure."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from markdown_it import MarkdownIt

from agentmarket.core.config import Settings
from agentmarket.db.caller import CallerSession
from agentmarket.services import export
from tests.api.conftest import Caller
from tests.api.test_errors import assert_problem

pytestmark = pytest.mark.db

HOSTILE = [
    "```\n# not a heading\n```",
    "````python\nprint('x')\n`````\n## Injected heading\n<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>\n\n[click](javascript:alert(1))\n\n---\n# Title",
    "   ```\nindented fence\n",
    "~~~\ntilde fence\n~~~",
    "line\r```\rcarriage returns",
    "",
    "ends with backticks ``",
]


async def deploy(client: httpx.AsyncClient, caller: Caller) -> str:
    response = await client.post(
        "/api/marketplace/deploy",
        json={"agent_id": "sql-sidekick", "config": {}, "name": "My <b>SQL</b> *helper*"},
        headers=caller.headers,
    )
    assert response.status_code == 201, response.text
    deployment_id: str = response.json()["id"]
    return deployment_id


def conversation(
    conn: psycopg.Connection,
    caller: Caller,
    deployment_id: str,
    contents: list[str],
    title: str | None = "Weekly report",
) -> uuid.UUID:
    """A conversation of user messages and (after every other one) a completed reply, a second
    apart, oldest first; the last reply failed."""
    row = conn.execute(
        "insert into public.agent_conversations (deployment_id, user_id, title) values (%s, %s, %s)"
        " returning id",
        (deployment_id, caller.user.id, title),
    ).fetchone()
    assert row is not None
    conversation_id: uuid.UUID = row[0]
    question = None
    for n, content in enumerate(contents):
        last = n == len(contents) - 1
        assistant = n % 2 == 1
        status = "failed" if assistant and last else "completed"
        inserted = conn.execute(
            "insert into public.agent_messages (conversation_id, user_id, role, content, status,"
            " reply_to, model, error_code, error_message, created_at, completed_at)"
            " values (%(c)s, %(u)s, %(role)s, %(content)s, %(status)s, %(q)s, %(model)s,"
            "  %(code)s, %(error)s, now() - make_interval(secs => %(ago)s), now())"
            " returning id",
            {
                "c": conversation_id,
                "u": caller.user.id,
                "role": "assistant" if assistant else "user",
                "content": content,
                "status": status,
                "q": question if assistant else None,
                "model": "gpt-<i>4o</i>" if assistant else None,
                "code": "model_error" if status == "failed" else None,
                "error": "upstream said <b>no</b>\n# boom" if status == "failed" else None,
                "ago": 100_000 - n,
            },
        ).fetchone()
        assert inserted is not None
        if not assistant:
            question = inserted[0]
    return conversation_id


def stored(conn: psycopg.Connection, conversation_id: uuid.UUID) -> list[tuple[str, str]]:
    return [
        (str(r[0]), r[1])
        for r in conn.execute(
            "select id, content from public.agent_messages where conversation_id = %s"
            " order by created_at, id",
            (conversation_id,),
        )
    ]


async def test_json_has_the_conversation_and_every_message_in_order(
    client: httpx.AsyncClient,
    alice: Caller,
    conn: psycopg.Connection,
    settings: Settings,
) -> None:
    settings.max_page_bytes = 65_536  # 30 kB messages: two per part
    deployment_id = await deploy(client, alice)
    contents = [f"message {n} " + ("é" * 15_000 if n % 7 == 0 else "x") for n in range(450)]
    conversation_id = conversation(conn, alice, deployment_id, contents)

    response = await client.get(
        f"/api/agents/{deployment_id}/conversations/{conversation_id}/export",
        headers=alice.headers,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"] == (
        f'attachment; filename="conversation-{conversation_id}.json"'
    )
    body = response.json()
    assert body["conversation"]["id"] == str(conversation_id)
    assert body["conversation"]["deployment_id"] == deployment_id
    assert body["conversation"]["title"] == "Weekly report"
    assert body["conversation"]["deployment_name"] == "My <b>SQL</b> *helper*"
    assert body["conversation"]["agent_name"]
    assert [(m["id"], m["content"]) for m in body["messages"]] == stored(conn, conversation_id)
    # The messages as every other route serializes them.
    one = await client.get(f"/api/messages/{body['messages'][-1]['id']}", headers=alice.headers)
    assert one.json() == body["messages"][-1]
    assert body["messages"][-1]["error"] == {
        "code": "model_error",
        "message": "upstream said <b>no</b>\n# boom",
    }


async def test_parts_hold_at_most_the_page_bytes_and_the_part_size(
    app: FastAPI, client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    deployment_id = await deploy(client, alice)
    contents = ["é" * 15_000] * 5 + ["x"] * 450  # 30 kB each, then small ones
    conversation_id = conversation(conn, alice, deployment_id, contents)
    claims = {"sub": str(alice.user.id), "role": "authenticated"}
    async with CallerSession(app.state.agentmarket.pool, claims) as db:
        exported = await export.open_export(
            db=db,
            deployment_id=uuid.UUID(deployment_id),
            conversation_id=conversation_id,
            max_part_bytes=65_536,
        )
        await db.commit()
        parts = [part async for part in exported.messages()]
    assert [len(part) for part in parts] == [2, 2, 200, 200, 51]
    assert [str(m.id) for part in parts for m in part] == [
        i for i, _ in stored(conn, conversation_id)
    ]


async def test_an_empty_conversation_exports(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    deployment_id = await deploy(client, alice)
    conversation_id = conversation(conn, alice, deployment_id, [], title=None)
    url = f"/api/agents/{deployment_id}/conversations/{conversation_id}/export"
    as_json = await client.get(url, headers=alice.headers)
    assert as_json.json()["messages"] == []
    as_md = await client.get(url, params={"format": "md"}, headers=alice.headers)
    assert as_md.text.startswith("# Conversation\n")


def blocks(markdown: str) -> list[tuple[str, Any]]:
    """The document's top-level blocks as CommonMark (HTML allowed) parses them: (type, detail)."""
    tokens = MarkdownIt("commonmark", {"html": True}).parse(markdown)
    found: list[tuple[str, Any]] = []
    for token in tokens:
        if token.level != 0 or token.type.endswith("_close"):
            continue
        if token.type == "heading_open":
            found.append((token.tag, None))
        elif token.type == "fence":
            found.append(("fence", token.content))
        else:
            found.append((token.type, None))
    return found


async def test_markdown_keeps_its_structure_whatever_the_messages_hold(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    deployment_id = await deploy(client, alice)
    title = "<script>alert('t')</script>\n# Not the title [x](javascript:y) &amp;"
    conversation_id = conversation(conn, alice, deployment_id, HOSTILE, title=title)

    response = await client.get(
        f"/api/agents/{deployment_id}/conversations/{conversation_id}/export",
        params={"format": "md"},
        headers=alice.headers,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/markdown; charset=utf-8"
    assert response.headers["content-disposition"] == (
        f'attachment; filename="conversation-{conversation_id}.md"'
    )
    markdown = response.text

    # One title, a list of facts, then per message a heading and its content fenced verbatim;
    # the failed reply's error as a quote. Nothing else at the top level: no heading, HTML
    # block, rule or paragraph came out of the content.
    expected: list[tuple[str, Any]] = [("h1", None), ("bullet_list_open", None)]
    for n, content in enumerate(HOSTILE):
        closed = not content or content.endswith("\n")
        expected += [
            ("h2", None),
            ("fence", content.replace("\r", "\n") + ("" if closed else "\n")),
        ]
        if n == len(HOSTILE) - 1:
            expected.append(("blockquote_open", None))
    assert blocks(markdown) == expected

    html = MarkdownIt("commonmark", {"html": True}).render(markdown)
    assert "<script" not in html
    assert "<img" not in html
    assert "<b>" not in html and "<i>" not in html
    assert 'href="javascript' not in html
    first_line = markdown.splitlines()[0]
    assert first_line.startswith("# \\<script\\>")
    assert "Not the title" in first_line  # the title's line break folded into its heading


async def test_another_users_conversation_is_404_and_anonymous_is_401(
    client: httpx.AsyncClient, alice: Caller, bob: Caller, conn: psycopg.Connection
) -> None:
    bobs_deployment = await deploy(client, bob)
    bobs = conversation(conn, bob, bobs_deployment, ["bob's secret"])
    alices_deployment = await deploy(client, alice)
    alices = conversation(conn, alice, alices_deployment, ["alice's"])

    for deployment_id, conversation_id in (
        (bobs_deployment, bobs),  # Bob's, by its real address
        (alices_deployment, bobs),  # Bob's conversation under Alice's deployment
        (bobs_deployment, alices),  # Alice's conversation under Bob's deployment
        (alices_deployment, uuid.uuid4()),
    ):
        for fmt in ("json", "md"):
            response = await client.get(
                f"/api/agents/{deployment_id}/conversations/{conversation_id}/export",
                params={"format": fmt},
                headers=alice.headers,
            )
            assert_problem(response, 404, "conversation_not_found")
            assert "bob's secret" not in response.text

    url = f"/api/agents/{alices_deployment}/conversations/{alices}/export"
    assert_problem(await client.get(url), 401, "unauthorized")
    bad = await client.get(url, params={"format": "pdf"}, headers=alice.headers)
    body = assert_problem(bad, 422, "validation_failed")
    errors: list[dict[str, str]] = body["errors"]  # type: ignore[assignment]
    assert [e["path"] for e in errors] == ["/query/format"]
    ok = await client.get(url, headers=alice.headers)
    assert json.loads(ok.text)["messages"][0]["content"] == "alice's"
