"""The OpenAPI document says what the service sends: it is a valid OpenAPI 3.1
document, every route declares a typed 200 and its refusals in the shape sent
({"error": ...}), and real answers of a running service (successes and errors)
validate against the schema declared for their status and media type.  /docs and
/redoc load their assets from the service itself (no CDN)."""
import json
import re
import urllib.parse

import pytest

from access_support import get_json, http

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def spec(service):
    status, doc = get_json(service + "/openapi.json")
    assert status == 200
    return doc


def test_document_is_valid_openapi(spec):
    from openapi_spec_validator import validate
    validate(spec)
    assert spec["openapi"].startswith("3.1")


def test_every_route_is_typed_and_declares_its_refusals(spec):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            resp = op["responses"]
            ok = resp["200"]["content"]
            schemas = [c.get("schema", {}) for c in ok.values()]
            assert schemas and all(s not in ({}, None) for s in schemas), (path, method, ok)
            want = {"408", "503"} if path == "/health" else {"400", "401", "404", "408", "413", "422", "503"}
            if path in ("/api/v1/sources", "/metrics", "/api/v1/capabilities"):
                want = {"401", "408", "503"}
            assert want <= set(resp), (path, method, sorted(resp))
            for code in want:
                ref = resp[code]["content"]["application/json"]["schema"]
                assert ref == {"$ref": "#/components/schemas/ErrorBody"}, (path, code, ref)
    err = spec["components"]["schemas"]["ErrorBody"]
    assert err["required"] == ["error"] and err["properties"]["error"]["type"] == "string"
    assert "HTTPValidationError" not in spec["components"]["schemas"]   # FastAPI's shape is never sent


def _validator(spec, path, method, status, media):
    from jsonschema import Draft202012Validator
    op = spec["paths"][path][method]
    schema = op["responses"][str(status)]["content"][media]["schema"]
    return Draft202012Validator({**schema, "components": spec["components"]})


def _template(spec, url_path):
    for p in spec["paths"]:
        rx = "^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$"
        if re.match(rx, url_path):
            return p
    raise AssertionError(f"no path of the document matches {url_path}")


def check(spec, base, method, url, body=None):
    """Sends one real request; validates the answer against the document."""
    status, headers, raw = http(method.upper(), base + url, body)
    media = headers.get("content-type", "").split(";")[0]
    path = _template(spec, urllib.parse.urlsplit(url).path)
    declared = spec["paths"][path][method]["responses"]
    assert str(status) in declared, (url, status, sorted(declared))
    assert media in declared[str(status)]["content"], (url, status, media)
    if media == "application/json":
        doc = json.loads(raw)
        errors = sorted(_validator(spec, path, method, status, media).iter_errors(doc), key=str)
        assert not errors, (url, status, [e.message for e in errors[:3]])
    return status


def test_real_answers_validate(spec, service):
    first = json.loads(http("GET", service + "/api/v1/failures?source=run")[2])["items"][0]["task_id"]
    q = urllib.parse.quote
    cases = [
        ("get", "/health", None, 200),
        ("get", "/api/v1/sources", None, 200),
        ("get", "/api/v1/tasks?source=run&limit=50", None, 200),
        ("get", "/api/v1/tasks?source=runs&limit=5&projection=task_id,used.model", None, 200),
        ("post", "/api/v1/tasks/query", {"source": "run", "filter": {"status": "ERROR"}}, 200),
        ("get", f"/api/v1/tasks/{first}?source=run", None, 200),
        ("get", f"/api/v1/tasks/{first}/ancestors?source=runs", None, 200),
        ("get", f"/api/v1/tasks/{first}/descendants?source=run", None, 200),
        ("get", "/api/v1/workflows?source=run", None, 200),
        ("get", "/api/v1/workflows/summary?source=runs", None, 200),
        ("get", "/api/v1/stats?source=run&by=activity", None, 200),
        ("get", "/api/v1/stats?source=runs&by=rank", None, 200),
        ("get", "/api/v1/stats?source=run&by=hostname", None, 200),
        ("get", "/api/v1/stats?source=run&by=status", None, 200),
        ("get", "/api/v1/failures?source=run", None, 200),
        ("get", "/api/v1/prov?source=run", None, 200),
        ("get", "/api/v1/prov?source=run&format=provn", None, 200),
        ("get", "/api/v1/prov?source=run&format=xml", None, 200),
        ("get", "/api/v1/tasks/stream?source=run&limit=3", None, 200),
        ("get", "/api/v1/tasks/export?source=run&format=csv&limit=3", None, 200),
        ("get", "/api/v1/tasks/export?source=run&format=jsonl", None, 200),
        ("get", "/api/v1/tasks/export?source=run&format=pdf", None, 400),
        ("get", f"/api/v1/tasks/{first}/graph?source=run", None, 200),
        ("get", "/api/v1/runs", None, 200),
        ("get", "/api/v1/timeline?source=run", None, 200),
        ("get", "/api/v1/timeline?source=run&bins=4&max_tasks=2", None, 200),
        ("get", "/api/v1/failures/groups?source=runs", None, 200),
        ("get", "/api/v1/capabilities", None, 200),
        ("post", "/api/v1/ask", {"question": "which tasks failed?"}, 404),
        ("post", "/api/v1/ask", {"question": ""}, 422),
        ("get", "/api/v1/tasks?source=run&filter=" + q("{bad"), None, 400),
        ("get", "/api/v1/tasks", None, 400),
        ("get", "/api/v1/tasks?source=nope", None, 404),
        ("get", "/api/v1/tasks/0000000000000001-0000000000000001?source=run", None, 404),
        ("get", "/api/v1/tasks?source=run&limit=abc", None, 422),
        ("post", "/api/v1/tasks/query", {"source": "run", "bogus": 1}, 422),
        ("post", "/api/v1/tasks/query", b"x" * (2 << 20), 413),
        ("get", "/api/v1/stats?source=run&by=color", None, 400),
        ("get", "/api/v1/prov?source=run&format=pdf", None, 400),
    ]
    for method, url, body, want in cases:
        assert check(spec, service, method, url, body) == want, url


def test_query_budget_503_validates(spec, run_data):
    from access_support import start_server, stop
    proc, base = start_server([run_data["h5"], "--query-timeout", "0.000001"])
    try:
        assert check(spec, base, "get", "/api/v1/tasks") == 503
    finally:
        stop(proc)


def test_docs_pages_load_their_assets_locally(service):
    for page, assets in (("/docs", ("swagger-ui-bundle.js", "swagger-ui.css")), ("/redoc", ("redoc.standalone.js",))):
        status, _h, raw = http("GET", service + page)
        text = raw.decode()
        assert status == 200 and "/openapi.json" in text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url:\s*'([^']+)'""", text)
        urls = [a or b for a, b in urls]
        assert not [u for u in urls if u.startswith(("http:", "https:", "//"))], urls
        for name in assets:
            local = [u for u in urls if u.endswith(name)]
            assert local, (page, name, urls)
            status, _h, body = http("GET", service + local[0])
            assert status == 200 and len(body) > 50_000, (local[0], status, len(body))
