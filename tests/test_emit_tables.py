"""Tables (`paramcalc table`, `derive --emit latex|markdown`) and what every target shares:
the CLI works for every example, output is byte-identical across runs and processes, and user
text is escaped for the output language."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser

import pytest
import sympy
from typer.testing import CliRunner

import paramcalc
from paramcalc import registry
from paramcalc.cli import app
from paramcalc.emit import emit
from paramcalc.emit.printing import latex, text
from paramcalc.emit.tables import number_text, render_table
from tests.conftest import EXAMPLES, ROOT

runner = CliRunner()
SPECS = sorted(EXAMPLES.glob("*.yaml"))
MLP = str(EXAMPLES / "mlp.yaml")


def run(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_every_command_works_for_every_example(spec, tmp_path):
    for target in ("torch", "jax", "markdown", "latex", "json"):
        result = run("derive", str(spec), "-p", "mup", "--optimizer", "adam", "--emit", target)
        assert result.exit_code == 0, (target, result.output)
        assert result.stdout.strip()
    for fmt in list(registry.TABLE_FORMATS):
        out = tmp_path / f"table.{fmt}"
        result = run("table", str(spec), "--format", fmt, "-o", str(out))
        assert result.exit_code == 0, (fmt, result.output)
        assert out.read_text().strip() and result.stdout == ""


def test_markdown_table_cells_are_the_derivation():
    """Each cell is the engine's expression, and at --widths its number."""
    result = run("table", MLP, "--widths", "d=4096", "--optimizer", "sgd")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("| `")]
    assert len(lines) == 5
    header = next(line for line in result.stdout.splitlines() if line.startswith("| tensor"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[:4] == ["tensor", "role", "spectral \u03c3", "spectral \u03b7"]
    derivations = {p: paramcalc.derive(MLP, p, "sgd") for p in list(registry.PARAMETRIZATIONS)}
    titles = {"spectral": "spectral", "muP": "mup", "NTP": "ntp", "SP": "sp"}
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        name = cells[0].strip("`")
        for column, cell in zip(columns[2:], cells[2:], strict=True):
            title, symbol = column.split(" ")
            d = derivations[titles[title]]
            q = {"\u03c3": "init_std", "\u03b7": "lr"}[symbol]
            expr = getattr(d[name], q)
            expected = f"`{text(expr)}`"
            if not expr.is_Number:
                expected += f" = {number_text(d.evaluate({'d': 4096})[name][q])}"
            assert cell == expected, (name, column)


def test_multiplier_column_only_where_a_multiplier_acts():
    gpt = render_table(EXAMPLES / "gpt.yaml", "markdown", optimizers=["adam"])
    # Tied readout: every parametrization but SP has a multiplier other than 1.
    assert "| muP multiplier |" in gpt and "SP multiplier" not in gpt
    assert "| `lm_head` (uses `wte.weight`) | output |" in gpt
    assert "| `blocks.*.attn.q.weight` \u00d712 | hidden |" in gpt
    assert "blocks.3" not in gpt  # the 12 blocks are equal row by row
    assert "| `blocks.*.attn.scale` \u00d712 | `1/d_head` | `1/sqrt(d_head)` |" in gpt
    mlp = render_table(MLP, "markdown", optimizers=["sgd"])
    assert "| spectral \u03c3 |" in mlp and "multiplier |" not in mlp


def latex_tabulars(tex: str) -> list[list[str]]:
    return [m.group(1).strip().splitlines() for m in
            re.finditer(r"\\begin\{tabular\}\{[^}]*\}\n(.*?)\\end\{tabular\}", tex, re.S)]


def test_latex_is_well_formed_with_the_papers_symbols():
    tex = render_table(EXAMPLES / "gpt.yaml", "latex", widths={"d_model": 4096})
    # per optimizer: the parameter table and the attention-logit scales
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 2 * len(registry.OPTIMIZERS)
    for spec_line, rows in zip(re.findall(r"\\begin\{tabular\}\{([^}]*)\}", tex),
                               latex_tabulars(tex), strict=True):
        n_columns = len(spec_line.replace("|", ""))
        for row in rows:
            if row.startswith(r"\hline"):
                continue
            assert row.endswith(r"\\"), row
            cells = row[:-2].split(" & ")
            spans = sum(int(n) - 1 for n in re.findall(r"\\multicolumn\{(\d+)\}", row))
            assert len(cells) + spans == n_columns, row
            assert all(cell.count("$") % 2 == 0 for cell in cells), row
    for symbol in (r"$\sigma_\ell$", r"$\eta_\ell$", r"\sqrt{d_{model}}", r"\min\left(", r"$\mu$P",
                   r"\texttt{blocks.*.ln\_1.weight} ($\times 12$)", r"6.104 \times 10^{-5}"):
        assert symbol in tex, symbol
    assert tex.count("{") == tex.count("}")


def test_derive_emit_latex_has_expressions_exponents_and_numbers():
    d = paramcalc.derive(MLP, "mup", "sgd", form="table8")
    tex = emit(d, "latex", {"d": 1024})
    (rows,) = latex_tabulars(tex)
    head = next(r for r in rows if r.startswith(r"\texttt{head.weight}"))
    assert head == (
        r"\texttt{head.weight} & output & $n_{out} \times d$ & $\frac{1}{16}$ & "
        r"$\frac{d}{256} = 4$ & $\frac{256}{d} = 0.25$ & $0$, $1$, $-1$ \\"
    )
    assert f"${latex(d['fc1.weight'].init_std)}" in tex


class _Checker(HTMLParser):
    """Checks that elements nest properly and collects the text."""

    VOID = {"meta", "br"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_standalone_well_formed_and_escaped():
    spec = {
        "name": "</title><script>alert('x')</script> & co",
        "widths": {"d": {"base": 8}, "n_out": 3},
        "layers": [{"name": "fc", "fan_in": "d", "fan_out": "d", "bias": True},
                   {"name": "out", "fan_in": "d", "fan_out": "n_out"}],
    }
    page = render_table(spec, "html", widths={"d": 32})
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.stack == [] and "script" not in checker.tags
    assert {"math", "mfrac", "msqrt", "table", "thead", "tbody"} <= checker.tags
    assert "</title><script>alert('x')</script> & co: spectral" in "".join(checker.text)
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from outside


def test_latex_and_markdown_escape_user_text():
    spec = {"name": r"a_b&c%d$e#f{g}h\i~j^k|l*m`n<o>", "widths": {"d": {"base": 8}},
            "layers": [{"name": "fc", "fan_in": "d", "fan_out": "d"}]}
    tex = render_table(spec, "latex", optimizers=["sgd"])
    assert (r"a\_b\&c\%d\$e\#f\{g\}h\textbackslash{}i\textasciitilde{}j\textasciicircum{}k"
            r"\textbar{}l*m`n\textless{}o\textgreater{}") in tex
    md = render_table(spec, "markdown", optimizers=["sgd"])
    assert r"a\_b&c%d$e\#f{g}h\\i\~j^k\|l\*m\`n\<o\>" in md.splitlines()[0]


def test_one_parametrization_and_bad_input():
    result = run("table", MLP, "--param", "mup", "--optimizer", "adam", "--format", "latex")
    assert result.exit_code == 0
    # sigma, eta and Adam's epsilon factor (muP's multipliers are all 1 in its default form)
    assert r"\multicolumn{3}{|c}{$\mu$P}" in result.stdout and "NTP" not in result.stdout
    assert r"$\epsilon_\ell$" in result.stdout
    bad = run("table", MLP, "--widths", "dd=3")
    assert bad.exit_code == 2 and "widths.dd: unknown width symbol" in bad.stderr
    bad = run("table", MLP, "--format", "pdf")
    assert bad.exit_code == 2 and "'pdf' is not one of" in bad.output
    assert "Usage" in run("table", "--help").stdout


def _digests() -> dict[str, str]:
    out = {}
    for spec in SPECS:
        d = paramcalc.derive(spec, "mup", "adam", form=None)
        for target in ("torch", "jax", "latex", "html", "markdown", "json"):
            out[f"{spec.stem}.{target}"] = hashlib.sha256(emit(d, target).encode()).hexdigest()
        for fmt in list(registry.TABLE_FORMATS):
            text = render_table(spec, fmt, widths={})
            out[f"{spec.stem}.table.{fmt}"] = hashlib.sha256(text.encode()).hexdigest()
    return out


def test_output_is_byte_identical_across_runs_and_processes():
    here = _digests()
    assert _digests() == here
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    code = "import json; from tests.test_emit_tables import _digests; print(json.dumps(_digests()))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=ROOT, check=True)
    assert json.loads(proc.stdout) == here


def test_abc_shifted_form_keeps_symbols():
    d = paramcalc.derive(MLP, "mup", "sgd").shift({"fc2.weight": sympy.Symbol("d", positive=True)})
    md = emit(d, "markdown")
    assert "`d`" in md and "table3 (shifted)" in md


def test_rows_collapse_only_when_every_block_agrees():
    blocks = [{"name": f"blocks.{i}.fc", "fan_in": "d", "fan_out": "d" if i < 2 else "2*d"}
              for i in range(3)]
    spec = {"name": "s", "widths": {"d": {"base": 8}},
            "layers": [{"name": "inp", "fan_in": 4, "fan_out": "d"}, *blocks]}
    md = render_table(spec, "markdown", optimizers=["sgd"], parametrizations=["spectral"])
    assert "`blocks.0.fc.weight`" in md and "`blocks.1.fc.weight`" in md and "*" not in md
    spec["layers"][3]["fan_out"] = "d"
    md = render_table(spec, "markdown", optimizers=["sgd"], parametrizations=["spectral"])
    assert "`blocks.*.fc.weight` \u00d73" in md and "blocks.0" not in md


@pytest.mark.parametrize("fmt", list(registry.TABLE_FORMATS))
def test_constant_inits_are_explained_where_gains_exist(fmt):
    """A norm gain's init_std is 0 under a caption saying W ~ N(0, sigma^2): the tables say that it
    starts at 1, and only for specs that have gains."""
    gpt = render_table(EXAMPLES / "gpt.yaml", fmt, optimizers=["adam"], parametrizations=["mup"])
    assert "norm gains" in gpt and "at 1" in gpt
    mlp = render_table(EXAMPLES / "mlp.yaml", fmt, optimizers=["adam"], parametrizations=["mup"])
    assert "norm gains" not in mlp
