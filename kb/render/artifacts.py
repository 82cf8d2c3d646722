"""A group's finished pictures become artifacts: PNG bytes in the artifact store (kb.render.storage, by content
hash), one artifact row per hash recording its parameters and what made it (versions, device, precision), and
each job DONE. A job that is no longer RUNNING (cancelled meanwhile) lands nothing: no image, no artifact row."""

from __future__ import annotations

import functools
import hashlib
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from kb.render import images, jobs
from kb.render.storage import storage_from_settings
from kb.render.worker_device import bf16, device
from kb.settings import Settings

if TYPE_CHECKING:
    import numpy as np


def versions() -> dict[str, Any]:
    from importlib.metadata import version

    import torch
    import torchvision

    from kb.render.lucent_adapter import lucent_version

    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lucent": lucent_version(),
        "circuit-kb": version("circuit-kb"),
    }


def store(engine: sa.Engine, settings: Settings, group: list[dict[str, Any]], pictures: list[np.ndarray]) -> list[int]:
    """Land each job with its picture; returns the ids that landed."""
    kind, params = group[0]["kind"], group[0]["params"]
    storage = storage_from_settings(settings, engine)
    made_by = {
        **versions(),
        "device": device(settings).type,
        "bf16": kind in ("FEATURE_VIS", "NEURON_VIS") and bf16(settings),
    }
    landed = []
    with engine.begin() as conn:
        for job, rgb in zip(group, pictures, strict=True):
            data = images.png(rgb)
            sha = hashlib.sha256(data).hexdigest()  # the storage's key for these bytes
            artifact_id = jobs.finish(
                conn,
                job["id"],
                {
                    "sha256": sha,
                    "content_type": "image/png",
                    "bytes": len(data),
                    "width": int(rgb.shape[1]),
                    "height": int(rgb.shape[0]),
                    "kind": kind,
                    "params": params,
                    "versions": made_by,
                    "meta": {
                        "model": f"{job['model_key']}@{job['model_sha256'][:12]}",
                        **(
                            {"layer": job["layer_key"]}
                            if job["unit"] == jobs.LAYER_UNIT
                            else {"unit": f"{job['layer_key']}:{job['unit']}"}
                        ),
                    },
                },
                write=functools.partial(storage.put, data, ".png", conn),  # with the job's rows
            )
            if artifact_id is not None:
                landed.append(job["id"])
        views = [j for j in group if j["id"] in landed and j.get("lane") == "view" and j.get("batch_id") is None]
        if views:  # pages' thumbnails: one activity entry for the batch (kb.claims.activity.render_ended skips them)
            from kb.claims import activity

            activity.thumbnails_landed(conn, views)
    return landed
