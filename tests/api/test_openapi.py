from __future__ import annotations

import pytest

from agentmarket.cli import main, render_openapi
from agentmarket.core import paths


def test_docs_openapi_json_matches_the_app(capsys: pytest.CaptureFixture[str]) -> None:
    committed = (paths.project_root() / "docs" / "openapi.json").read_text()
    assert committed == render_openapi(), "run `agentmarket openapi --write`"
    assert main(["openapi", "--check"]) == 0
    assert "matches the app" in capsys.readouterr().out


def test_every_documented_route_is_in_the_spec() -> None:
    import json

    spec = json.loads(render_openapi())
    expected = {
        ("get", "/api/marketplace/agents"),
        ("get", "/api/marketplace/agents/{agent}"),
        ("get", "/api/marketplace/categories"),
        ("post", "/api/marketplace/deploy"),
        ("get", "/api/deployments"),
        ("get", "/api/deployments/{deployment_id}"),
        ("patch", "/api/deployments/{deployment_id}"),
        ("delete", "/api/deployments/{deployment_id}"),
        ("get", "/healthz"),
        ("get", "/readyz"),
    }
    actual = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert expected <= actual
    assert "Problem" in spec["components"]["schemas"]


def test_every_route_that_reads_the_database_documents_its_503() -> None:
    """Any route that reads or writes the database answers 503 database_unavailable (problem+json,
    Retry-After) while it is away (docs/operations.md#database-outages): the spec says so."""
    import json

    spec = json.loads(render_openapi())
    missing = [
        (method, path)
        for path, ops in spec["paths"].items()
        if path.startswith("/api/") and path != "/api/client-config"  # settings only
        for method, op in ops.items()
        if "application/problem+json" not in op["responses"].get("503", {}).get("content", {})
    ]
    assert missing == []
    assert "503" in spec["paths"]["/readyz"]["get"]["responses"]  # its own report, not a problem
