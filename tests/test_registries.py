"""The registries are the only lists of names; the conditions module states the paper's formulas;
every kind of user error is one paragraph and exit code 2."""

from __future__ import annotations

import sympy
from typer.testing import CliRunner

import paramcalc
from paramcalc import conditions, registry
from paramcalc.cli import Emit, Opt, Param, TableFormat, app
from paramcalc.engine import OPTIMIZERS, RULES, get_optimizer, get_rule
from paramcalc.engine.rules import title_in
from tests.conftest import EXAMPLES

n, m = sympy.symbols("n m", positive=True)


def test_cli_choices_are_the_registries():
    assert [e.value for e in Param] == list(registry.PARAMETRIZATIONS) == list(RULES)
    assert [e.value for e in Opt] == list(registry.OPTIMIZERS) == list(OPTIMIZERS)
    assert [e.value for e in Emit] == ["table", *registry.EMITTERS]
    assert [e.value for e in TableFormat] == list(registry.TABLE_FORMATS)


def test_every_name_has_a_title_in_every_format():
    for obj in (*RULES.values(), *OPTIMIZERS.values()):
        for fmt in registry.TABLE_FORMATS:
            assert title_in(obj, fmt)
    assert title_in(get_rule("mup"), "latex") == r"$\mu$P" and title_in(get_rule("mup"), "html") == "&#956;P"


def test_unknown_names_list_the_known_ones():
    for lookup_, what in ((get_rule, "parametrization"), (get_optimizer, "optimizer")):
        try:
            lookup_("nope")
        except ValueError as exc:
            assert what in str(exc) and "expected one of" in str(exc)
        else:  # pragma: no cover
            raise AssertionError("no error")


def test_optimizer_laws_by_shape():
    sgd, adam = get_optimizer("sgd"), get_optimizer("adam")
    # Condition 1's target sqrt(fan_out/d_in) for a hidden n x n matrix: SGD lr Theta(1), Adam 1/n.
    target = conditions.condition1(n, n)
    assert sgd.lr_for_update(target, n, n) == 1
    assert adam.lr_for_update(target, n, n) == 1 / n
    assert adam.update_norm(1 / n, None, n, 4 * n) == 2  # lr sqrt(fan_out d_in)
    assert (sgd.symmetry_power, adam.symmetry_power) == (2, 1)


def test_optimizer_objects_build_real_optimizers():
    import torch

    w = torch.nn.Parameter(torch.zeros(3))
    assert isinstance(get_optimizer("adam").torch([{"params": [w]}], 0.1), torch.optim.Adam)
    assert isinstance(get_optimizer("sgd").torch([{"params": [w]}], 0.1), torch.optim.SGD)


def test_conditions_are_the_papers():
    assert conditions.natural_d_in(n, "dense") == n and conditions.natural_d_in(n, "sparse") == 1
    scaling = frozenset({n})
    assert [conditions.role(a, b, scaling) for a, b in ((1, n), (n, n), (n, 10), (3, 10))] == [
        "input", "hidden", "output", "fixed"]
    assert conditions.condition1(10, n) == sympy.sqrt(10 / n)
    assert conditions.gaussian_spectral_norm(1 / sympy.sqrt(n), n, n) == 2
    mult, std, mean, lr = conditions.abc_shift(1, 1 / sympy.sqrt(n), 0, 1 / n, 1 / m, 2)
    assert (mult, std, mean, lr) == (1 / m, m / sympy.sqrt(n), 0, m**2 / n)


def test_every_user_error_is_one_paragraph_and_exit_2(tmp_path):
    runner = CliRunner()
    cases = [
        ["derive", str(tmp_path / "missing.yaml")],                                    # SpecError
        ["derive", str(EXAMPLES / "mlp.yaml"), "--widths", "d=x"],                     # UsageError
        ["verify", str(EXAMPLES / "mlp.yaml"), "--model", "no_such_module_xyz:f"],      # FactoryError
        ["verify", str(EXAMPLES / "mlp.yaml"), "--widths", "64"],                       # UsageError
    ]
    for args in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output and "error:" in result.output


def test_public_names_load_from_one_list():
    for name in paramcalc.__all__:
        assert getattr(paramcalc, name) is not None
    assert {"verify", "emit", "build_model", "VerifyConfig", "derive"} <= set(paramcalc.__all__)
