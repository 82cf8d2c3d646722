"""What the pages' render controls show: the choices of kind and preset on a neuron page, and a layer's render
requests with their progress and whether the reader may cancel them. Reads only; the forms that act on them are
kb.web.render_forms."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from kb.app import datasets as datasets_app
from kb.app import renders
from kb.claims import sessions
from kb.render.layer_renders import LayerRequest
from kb.render.presets import CHOICES, DEFAULT, presets
from kb.settings import Settings

if TYPE_CHECKING:
    from kb.schema.context import Context

KIND_TITLES = {"FEATURE_VIS": "Feature visualization", "NEURON_VIS": "Neuron (centre)"}

__all__ = ["DEFAULT", "layer_requests", "neuron_choices", "preset_of", "presets"]


def preset_of(params: dict[str, Any], settings: Settings) -> str:
    """A preset's title when the parameters are that preset's, else what they are."""
    for p in presets(settings).values():
        if params.get("size") == p.params.size and params.get("steps") == p.params.steps:
            return p.title
    return f"{params.get('size')} px, {params.get('steps')} steps"


async def neuron_choices(context: Context, me: sessions.SessionInfo | None) -> dict[str, Any] | None:
    """The kinds and presets an editor chooses from on a neuron page (dataset examples only when a data set has
    been added); None for anyone else."""
    if me is None or not me.account.at_least("editor"):
        return None

    datasets = [d.name for d in await run_in_threadpool(datasets_app.datasets, context.engine)]
    kinds = [c for c in CHOICES.values() if datasets or not c.needs_dataset]
    return {
        "kinds": kinds,
        "presets": list(presets(context.settings).values()),
        "default": DEFAULT,
        "datasets": datasets,
    }


def _shown(r: LayerRequest, units: int, moderator: bool, settings: Settings) -> dict[str, Any]:
    title = KIND_TITLES.get(r.kind, r.kind.replace("_", " ").lower())
    if r.params.get("negative"):
        title = "Negative " + title[0].lower() + title[1:]
    parts = [f"{n:,} {what}" for n, what in ((r.running, "running"), (r.queued, "queued"))]
    parts += [f"{n:,} {what}" for n, what in ((r.cancelled, "cancelled"), (r.failed, "failed"))]
    return {
        "id": r.id,
        "title": f"{title}, {preset_of(r.params, settings)}",
        "done": r.done,
        "units": units,
        "share": min(1.0, r.done / units) if units else 0.0,
        "states": [p for p in parts if not p.startswith("0 ")],
        "open": r.open,
        "cancellable": r.open > 0 and (moderator or r.mine_open > 0),
    }


async def layer_requests(
    context: Context, layer: dict[str, Any], me: sessions.SessionInfo | None
) -> list[dict[str, Any]]:
    """The layer's recent whole-layer requests as its page shows them (``layer``: its key, units and model's
    sha256, from the page's query)."""
    reader = me.account.id if me else None
    moderator = bool(me and me.account.at_least("moderator"))
    name = layer["key"].partition("/")[2]

    found = await run_in_threadpool(renders.layer_requests, context.engine, layer["model"]["sha256"], name, reader)
    return [_shown(r, layer["units"], moderator, context.settings) for r in found]
