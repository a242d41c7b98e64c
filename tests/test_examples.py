"""The ready-to-import automation examples name routes the proxy serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

from proxy.app import create_app
from proxy.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _served(tmp_path: Path) -> list[tuple[str, re.Pattern[str]]]:
    app = create_app(Settings(data_dir=tmp_path, comfyui_urls=["http://127.0.0.1:1"]))
    routes = []
    for path, item in app.openapi()["paths"].items():
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")
        routes += [(method.upper(), pattern) for method in item]
    return routes


def test_the_n8n_workflow_calls_existing_routes(tmp_path: Path) -> None:
    workflow = json.loads((EXAMPLES / "n8n" / "fastwan-wait-then-callback.json").read_text())
    names = {node["name"] for node in workflow["nodes"]}
    for source, outputs in workflow["connections"].items():
        assert source in names
        for branch in outputs["main"]:
            assert all(link["node"] in names for link in branch)
    routes = _served(tmp_path)
    calls = [n for n in workflow["nodes"] if n["type"] == "n8n-nodes-base.httpRequest"]
    assert len(calls) == 2
    for node in calls:
        url = node["parameters"]["url"]
        path = re.sub(r"\{\{[^}]*\}\}", "x", url.split("base_url }}", 1)[1])
        method = node["parameters"]["method"]
        assert any(m == method and p.match(path) for m, p in routes), (method, path)
    create = calls[0]["parameters"]
    headers = {h["name"]: h["value"] for h in create["headerParameters"]["parameters"]}
    assert headers["Prefer"] == "wait=25" and "Idempotency-Key" in headers
    assert "$execution.resumeUrl" in create["jsonBody"]


def test_the_zapier_guide_calls_existing_routes(tmp_path: Path) -> None:
    text = (EXAMPLES / "zapier.md").read_text()
    routes = _served(tmp_path)
    called = re.findall(r"`(GET|POST) https://YOUR-PROXY(/[^`\s{]*)", text)
    called += [("POST", p) for p in re.findall(r"URL `https://YOUR-PROXY(/[^`]*)`", text)]
    called += [("POST", p) for p in re.findall(r"`https://YOUR-PROXY(/api/jobs)`", text)]
    assert called
    for method, path in called:
        assert any(m == method and p.match(path) for m, p in routes), (method, path)
