from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def mlp_dict(**overrides):
    """The paper's 3-layer MLP shape, as a spec dict (biases optional)."""
    spec = {
        "name": "mlp",
        "widths": {"n0": 3072, "d": {"base": 256}, "n_out": 10},
        "layers": [
            {"name": "fc1", "fan_in": "n0", "fan_out": "d"},
            {"name": "fc2", "fan_in": "d", "fan_out": "d"},
            {"name": "head", "fan_in": "d", "fan_out": "n_out"},
        ],
    }
    spec.update(overrides)
    return spec


@pytest.fixture
def write_spec(tmp_path):
    def write(text: str | bytes, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path

    return write
