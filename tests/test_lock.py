"""requirements.lock (bin/lock writes it, bin/setup installs from it) against pyproject.toml: every dependency of
the project and of its dev extra is pinned at a version its specifier accepts, and nothing of torch's is in it
(bin/setup installs torch and torchvision first, from this machine's pinned wheels)."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
TORCH_ONLY = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)$")


def locked() -> dict[str, list[Requirement]]:
    """The lock's pins by normalised name (a name has several where the lock forks on the Python version)."""
    pins: dict[str, list[Requirement]] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            req = Requirement(line)
            assert str(req.specifier).startswith("==") and len(req.specifier) == 1, f"not a pin: {line}"
            pins.setdefault(canonicalize_name(req.name), []).append(req)
    return pins


def test_the_lock_pins_every_dependency_within_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = locked()
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} (pyproject.toml) is not in requirements.lock: run bin/lock"
        for pin in pins[name]:
            version = next(iter(pin.specifier)).version
            assert req.specifier.contains(version, prereleases=True), f"{pin} does not meet {req}: run bin/lock"
    assert "psycopg-binary" in pins  # extras' packages too (psycopg[binary])


def test_the_lock_has_nothing_of_torchs():
    pins = locked()
    assert len(pins) > 50, "requirements.lock looks empty"
    assert not [name for name in pins if TORCH_ONLY.match(name)]
    assert {"torch-lucent", "kornia"} <= set(pins)  # they need torch: the one installed first satisfies them
