"""Family claims imported onto random weights (issue 24 item 7.6): the annotation was made on the trained
InceptionV1, so every chip of such a claim says so in its title (and is marked), on the neuron, layer and claim
pages; the claim page's warning is tests/test_pages_newcomer.py's. Other claims' chips keep their plain label."""

import html
import re
import secrets

import sqlalchemy as sa
from conftest import as_user

from kb.web.templating import FAMILY_ON_RANDOM

CREATE = """mutation($input: ClaimInput!) { createClaim(input: $input) { key } }"""


def _chips(page: str, label: str) -> list[tuple[str, str]]:
    """(class, title) of each chip of the claim labelled ``label``."""
    return [
        (cls, html.unescape(title))
        for cls, title, text in re.findall(r'<a class="chip ([^"]*)"[^>]*title="([^"]*)">([^<]*)</a>', page)
        + re.findall(r'<a href="[^"]*" class="chip ([^"]*)" title="([^"]*)">([^<]*)</a>', page)
        if html.unescape(text) == label
    ]


def test_family_chips_on_random_weights_warn_and_others_do_not(api, engine, accounts, tmp_path):
    from kb.claims.families import import_families
    from kb.db.catalog import load_catalog

    name = f"fam-{secrets.token_hex(3)}"
    with engine.connect() as conn:  # units no claim is about yet: a layer card shows its first two chips only
        taken = set(
            conn.execute(
                sa.text(
                    "SELECT neuron_index FROM claim_subject WHERE model_key = 'inceptionv1' AND layer_key = 'mixed5b'"
                )
            ).scalars()
        )
    unit = next(u for u in range(1024) if u not in taken)  # mixed5b: the early layers carry Distill's families
    family = f'[{{"name": "{name}", "units": [{unit}], "comment": "curves"}}]'
    (tmp_path / "mixed5b.json").write_text(family)
    with engine.begin() as conn:
        import_families(conn, load_catalog(conn), tmp_path, "inceptionv1", "doi:10.23915/distill.00024.006")
        number = conn.execute(sa.text("SELECT id FROM claim WHERE label = :l"), {"l": name}).scalar_one()
    plain = f"plain-{secrets.token_hex(3)}"
    as_user(
        api,
        accounts["editor"]["token"],
        CREATE,
        {"input": {"label": plain, "kind": "FEATURE", "subjects": [f"InceptionV1 5b:{unit}"], "body": "a feature"}},
    )
    pages = {
        "neuron": api.get(f"/n/inceptionv1/mixed5b/{unit}").text,
        "layer": api.get("/n/inceptionv1/mixed5b").text,
        "claim": api.get(f"/c/{number}").text,  # its subjects' cards carry its chip
    }
    for where, page in pages.items():
        family = _chips(page, name)
        assert family, f"no chip of the family on the {where} page"
        assert all("untrained" in cls.split() and title == f"{name} — {FAMILY_ON_RANDOM}" for cls, title in family)
        if where != "claim":
            others = _chips(page, plain)
            assert others and all("untrained" not in cls and title == plain for cls, title in others), where
    assert "trained InceptionV1" in FAMILY_ON_RANDOM and "random weights" in FAMILY_ON_RANDOM
