"""Spectral norms without a full SVD, checked against ``torch.linalg.svdvals`` on small matrices."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from paramcalc.verify.linalg import GRAM_LIMIT, spectral_norm, stable_rank  # noqa: E402


def exact(a: torch.Tensor) -> float:
    return float(torch.linalg.svdvals(a.double())[0])


def gaussian(m: int, n: int, seed: int) -> torch.Tensor:
    return torch.randn(m, n, generator=torch.Generator().manual_seed(seed))


SHAPES = [(300, 700), (700, 300), (400, 400), (200, 200), (129, 1000), (40, 900), (1, 300), (300, 1)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gaussian_within_one_percent_from_below(shape, seed):
    """A Gaussian init has no gap at the top of its spectrum: the hardest case for Lanczos."""
    a = gaussian(*shape, seed)
    est = spectral_norm(a, generator=torch.Generator().manual_seed(seed))
    true = exact(a)
    assert 0.99 * true <= est.value <= true * (1 + 1e-5)


def _sgd_update(width: int, batch: int, steps: int, seed: int) -> torch.Tensor:
    """W_2(t) - W_2(0) of a small ReLU MLP after a few SGD steps: rank <= steps * batch."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(width, 64, generator=g) / 8
    w2 = (torch.randn(width, width, generator=g) / width**0.5).requires_grad_()
    w3 = torch.randn(3, width, generator=g) / width
    x = torch.randn(batch, 64, generator=g)
    y = torch.randn(batch, 3, generator=g)
    w2_0 = w2.detach().clone()
    for _ in range(steps):
        loss = ((torch.relu(torch.relu(x @ w1.T) @ w2.T) @ w3.T - y) ** 2).mean()
        (grad,) = torch.autograd.grad(loss, w2)
        with torch.no_grad():
            w2 -= 50.0 * grad
    return (w2.detach() - w2_0)


@pytest.mark.parametrize("seed", [0, 1])
def test_low_rank_updates_are_exact(seed):
    dw = _sgd_update(256, 16, 3, seed)
    # W(t) - W(0) in float32 carries rounding noise ~1e-7 relative: rank up to that tolerance.
    assert torch.linalg.matrix_rank(dw.double(), rtol=1e-4) <= 48
    first = spectral_norm(dw, generator=torch.Generator().manual_seed(seed))
    assert first.value == pytest.approx(exact(dw), rel=1e-3)
    # Warm start from the previous estimate: converges in a step or two, to the same value.
    again = spectral_norm(dw, start=first.right)
    assert again.iterations <= 3 and again.value == pytest.approx(exact(dw), rel=1e-3)


def test_sign_like_updates():
    """Adam's first step is ``sign(G)``: full rank, but with a dominant direction (Sec. 3.3)."""
    g = torch.Generator().manual_seed(3)
    grad = torch.randn(300, 8, generator=g) @ torch.randn(8, 500, generator=g)
    a = torch.sign(grad)
    assert spectral_norm(a, generator=g).value == pytest.approx(exact(a), rel=0.01)


def test_right_vector_is_the_top_singular_vector():
    a = gaussian(120, 90, 4)
    a[:, 0] *= 6  # a clear gap
    est = spectral_norm(a, tol=1e-8, start=torch.ones(90))
    vh = torch.linalg.svd(a.double())[2][0].float()
    assert abs(float(est.right @ vh)) == pytest.approx(1.0, abs=1e-4)
    assert float(est.right.norm()) == pytest.approx(1.0, abs=1e-5)


def test_small_matrices_are_done_exactly_through_their_gram_matrix():
    a = gaussian(GRAM_LIMIT, 3000, 5)
    est = spectral_norm(a)
    assert est.exact and est.value == pytest.approx(exact(a), rel=1e-6)
    assert float((a @ est.right).norm()) == pytest.approx(est.value, rel=1e-4)


def test_edge_cases():
    assert spectral_norm(torch.diag(torch.tensor([3.0, 2.0, 1.0]))).value == pytest.approx(3.0)
    assert spectral_norm(torch.zeros(80, 90)).value == 0.0
    assert spectral_norm(torch.zeros(80, 90), start=torch.ones(90)).value == 0.0
    nan = torch.full((100, 100), float("nan"))
    assert math.isnan(spectral_norm(nan, start=torch.ones(100)).value)
    # A start vector in the null space: Lanczos restarts at random rather than answering 0.
    a = torch.zeros(100, 100)
    a[0, 1] = 2.0
    e0 = torch.zeros(100)
    e0[0] = 1.0
    assert spectral_norm(a, start=e0).value == pytest.approx(2.0)
    with pytest.raises(ValueError, match="matrix"):
        spectral_norm(torch.ones(3))


def test_stable_rank():
    a = gaussian(50, 40, 6)
    fro, spec = float(a.norm()), exact(a)
    assert stable_rank(fro, spec) == pytest.approx(fro**2 / spec**2)
    assert 1 <= stable_rank(fro, spec) <= 40
    assert math.isnan(stable_rank(1.0, 0.0))


def test_a_convolution_is_measured_as_its_patch_matrix():
    """A conv kernel (out, in/groups, *kernel) is the (out, in/groups * prod(kernel)) matrix that maps
    a patch to an output pixel: its spectral norm, not the Frobenius norm of the flattened kernel."""
    from paramcalc.verify.observe import as_matrix

    w = torch.randn(6, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    m = as_matrix(w)
    assert m.shape == (6, 12)
    assert spectral_norm(m).value == pytest.approx(float(torch.linalg.matrix_norm(w.reshape(6, 12), 2)))
    assert spectral_norm(m).value < float(w.norm()) * 0.9
    assert as_matrix(torch.ones(5)).shape == (5, 1)
