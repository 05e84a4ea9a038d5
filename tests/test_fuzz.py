"""Fuzzing: generated specs, plausible and hostile, are accepted (and then derive and emit) or rejected
with one UserError; nothing else (tests/fuzz_specs.py; 10,000 of them: benchmarks/fuzz_specs.py)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz_specs import OPTIMIZERS, PARAMETRIZATIONS, check_spec, specs


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(spec=specs(), parametrization=st.sampled_from(PARAMETRIZATIONS), optimizer=st.sampled_from(OPTIMIZERS))
def test_generated_specs_are_accepted_or_rejected(spec, parametrization, optimizer):
    assert check_spec(spec, parametrization, optimizer) in ("accepted", "rejected")


def test_the_generator_reaches_both_outcomes():
    """A fuzzer that only ever produces rejected specs tests the schema, not the engine."""
    outcomes = set()

    @settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(spec=specs())
    def run(spec):
        outcomes.add(check_spec(spec, "mup", "adam"))

    run()
    assert outcomes == {"accepted", "rejected"}, outcomes


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
