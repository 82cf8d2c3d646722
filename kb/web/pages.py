"""The web page behind every stable URL: /n/{model}[@hash]/{layer}/{index} and /c/{claim}[/{revision}], and the
pages to browse to them: / (the models), /n/{model} (its layers), /n/{model}/{layer} (its units and claims).

A page is one GraphQL query run on the same schema as /graphql (same resolvers, DataLoaders and error codes),
rendered to plain HTML with no script: what a researcher opens from a citation, and what a crawler archives.
An unknown key is a 404 page that says why; the links on a page are the neighbours' and claims' own pages.
"""

from __future__ import annotations

from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse

from kb.schema.errors import with_code
from kb.web.page_html import claim_html, layer_html, model_html, models_html, neuron_html, page

NEURON = """query($k: String!) { neuron(key: $k) { key pinnedKey url index
  layer { key name units } model { key source shortHash weights }
  excite: inputs(first: 10, orderBy: WEIGHT, sign: POSITIVE) { totalCount edges { weight method node { key url } } }
  inhibit: inputs(first: 5, orderBy: WEIGHT, sign: NEGATIVE) { edges { weight method node { key url } } }
  outputs(first: 10, orderBy: WEIGHT, sign: POSITIVE) { totalCount edges { weight method node { key url } } }
  claims { key label kind status revision supportCount disputeCount }
  visualizations { kind params artifact { url width height } }
  citation { text bibtex } } }"""

CLAIM = """query($k: String!, $r: Int!) { claim(key: $k) { key revision supportCount disputeCount
  revisions { revision createdAt message author { name } }
  reviews { verdict comment claimRevision stale reviewer { displayName name } }
  revisionAt(revision: $r) { key revision label body kind status confidence createdAt message circuit subjects
    author { displayName name } authors { displayName name }
    evidence { kind note neuron source target url doi visualization }
    citation { text bibtex } } } }"""

MODELS = """{ models { key source shortHash weights removed layers { units } } }"""

MODEL = """query($k: String!) { model(key: $k) { key source sha256 shortHash weights description importedAt removed
  inputShape layers { key name units kind outputShape aliases } } }"""

LAYER = """query($k: String!) { layer(key: $k) { key name units kind modulePath outputShape aliases
  model { key source shortHash } visualizations(kind: FEATURE_VIS) { index artifact { url } } }
  claims(layer: $k, first: 100) { totalCount edges { node { key label kind status subjects { key } } } } }"""

STATUS = {"NOT_FOUND": 404, "BAD_KEY": 404}


def _problem(errors: list) -> HTMLResponse:
    first = with_code(errors[0])
    code = (first.extensions or {}).get("code", "BAD_INPUT")
    status = STATUS.get(code, 400)
    title = "Not found" if status == 404 else "Bad request"
    return page(title, f"<h1>{title}</h1><p>{escape(first.message)}</p>", status)


class Pages:
    def __init__(self, schema, context_factory):
        self.schema = schema
        self.context_factory = context_factory

    async def _run(self, query: str, variables: dict):
        return await self.schema.execute(query, variable_values=variables, context_value=self.context_factory())

    async def home(self, request: Request) -> HTMLResponse:
        result = await self._run(MODELS, {})
        if result.errors:
            return _problem(result.errors)
        return page(*models_html(result.data["models"]))

    async def browse(self, request: Request) -> HTMLResponse:
        """/n/model, /n/model/layer and /n/model/layer/index (the model part may be pinned: model@hash)."""
        rest = request.path_params["rest"].strip("/")
        parts = rest.split("/")
        if len(parts) == 1:
            model, _, pin = parts[0].partition("@")
            result = await self._run(MODEL, {"k": model})
            if not result.errors and pin and not result.data["model"]["sha256"].startswith(pin.lower()):
                return page(
                    "Not found",
                    f"<h1>Not found</h1><p>{escape(model)} has weights "
                    f"{escape(result.data['model']['shortHash'])}, not {escape(pin)}</p>",
                    404,
                )
            return _problem(result.errors) if result.errors else page(*model_html(result.data["model"]))
        if len(parts) == 2:
            result = await self._run(LAYER, {"k": rest})
            if result.errors:
                return _problem(result.errors)
            return page(*layer_html(result.data["layer"], result.data["claims"]))
        result = await self._run(NEURON, {"k": "/n/" + rest})
        if result.errors:
            return _problem(result.errors)
        return page(*neuron_html(result.data["neuron"]))

    async def claim(self, request: Request) -> HTMLResponse:
        number, revision = request.path_params["number"], request.path_params.get("revision")
        if not number.isdigit() or (revision is not None and not revision.isdigit()):
            return page("Not found", "<h1>Not found</h1><p>claim pages are /c/N or /c/N/R</p>", 404)
        if revision is None:  # the current revision
            current = await self._run("query($k: String!) { claim(key: $k) { revision } }", {"k": f"claim:{number}"})
            if current.errors:
                return _problem(current.errors)
            revision = current.data["claim"]["revision"]
        result = await self._run(CLAIM, {"k": f"claim:{number}", "r": int(revision)})
        if result.errors:
            return _problem(result.errors)
        return page(*claim_html(result.data["claim"]))
