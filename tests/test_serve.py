"""`kb serve` as the README starts it: a real uvicorn process answering the README's example."""

import httpx
from servers import kb_serve


def test_kb_serve_answers_the_readme_example(db_url, inceptionv1):
    with kb_serve({"KB_DATABASE_URL": db_url}, "--no-render-worker") as base:
        query = """{ neuron(key: "InceptionV1 4c:447") { key pinnedKey url
            inputs(first: 5, orderBy: WEIGHT) { edges { weight magnitude node { key } } } } }"""
        r = httpx.post(f"{base}/graphql", json={"query": query}, timeout=120)
    body = r.json()
    assert r.status_code == 200 and "errors" not in body, body
    n = body["data"]["neuron"]
    assert n["key"] == "inceptionv1/mixed4c:447" and len(n["inputs"]["edges"]) == 5
    assert n["url"].startswith(f"{base}/n/inceptionv1")  # no KB_PUBLIC_URL: links point at this server
    assert all(e["node"]["key"].startswith("inceptionv1/mixed4b:") for e in n["inputs"]["edges"])
