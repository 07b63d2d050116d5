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
