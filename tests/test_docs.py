"""docs/examples.md is generated from examples/: it fails here when it is out of date."""

from __future__ import annotations

import shutil

from paramcalc.emit import docs
from tests.conftest import EXAMPLES, ROOT

PAGE = ROOT / "docs" / "examples.md"


def test_examples_page_is_up_to_date():
    assert PAGE.read_text(encoding="utf-8") == docs.examples_page(EXAMPLES), (
        "docs/examples.md is out of date: run `python -m paramcalc.emit.docs`"
    )


def test_page_has_every_example_and_its_tables():
    page = PAGE.read_text(encoding="utf-8")
    for spec in sorted(EXAMPLES.glob("*.yaml")):
        assert f"## `{spec.name}`" in page
        assert spec.read_text(encoding="utf-8").rstrip() in page
    n = len(list(EXAMPLES.glob("*.yaml")))
    for title in ("SGD", "Adam", "AdamW", "Lion", "Muon"):  # one section per optimizer per example
        assert page.count(f"#### {title}\n") == n, title


def test_check_and_regenerate(tmp_path, capsys):
    examples = tmp_path / "examples"
    shutil.copytree(EXAMPLES, examples)
    page = tmp_path / "docs" / "examples.md"
    args = ["--examples", str(examples), "--output", str(page)]
    assert docs.main(["--check", *args]) == 1  # missing
    assert docs.main(args) == 0 and page.read_text(encoding="utf-8") == docs.examples_page(examples)
    assert docs.main(["--check", *args]) == 0
    spec = examples / "mlp.yaml"
    spec.write_text(spec.read_text().replace("n_out: 10", "n_out: 100"))
    assert docs.main(["--check", *args]) == 1
    assert "out of date" in capsys.readouterr().err


def test_your_model_page_shows_the_inferred_specs():
    import pytest

    pytest.importorskip("transformers")
    from paramcalc.emit import model_docs

    page = (ROOT / "docs" / "your-model.md").read_text(encoding="utf-8")
    section = model_docs.inferred_section()
    assert model_docs.replace_section(page, section) == page, (
        "docs/your-model.md is out of date: run `python -m paramcalc.emit.model_docs`"
    )
    for name in ("gpt2", "llama", "vit", "resnet"):
        assert f"$ paramcalc infer examples.hf_models:{name}\n" in section
    assert "layout: in_out" in section and "n_kv_heads: n_kv_heads" in section and "kind: conv2d" in section
