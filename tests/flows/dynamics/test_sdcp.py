"""The central flow's SDCP solver against instances with known solutions, closed forms and bad input."""
import pytest
import torch

from flows.dynamics.sdcp import POLISH_OFTEN, kkt_residuals, project_psd, solve_sdcp


def _instance(k, rank, seed):
    """X* = Q₁D₁Q₁ᵀ (rank r) and S* = Q₂D₂Q₂ᵀ on the complement: X*S* = 0, both PSD. B = Σ c_a vec(C_a)vec(C_a)ᵀ
    over a random basis C_a of the symmetric matrices (positive definite there), A = S* − B[X*]: X* is the
    unique minimiser of the strictly convex QP, hence the SDCP's unique solution."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(k, k, generator=gen, dtype=torch.float64))[0]
    d1 = torch.rand(rank, generator=gen, dtype=torch.float64) + 0.5
    d2 = torch.rand(k - rank, generator=gen, dtype=torch.float64) + 0.5
    x_star = (q[:, :rank] * d1) @ q[:, :rank].T
    s_star = (q[:, rank:] * d2) @ q[:, rank:].T
    basis = []
    for _ in range(k * (k + 1) // 2):
        c = torch.randn(k, k, generator=gen, dtype=torch.float64)
        basis.append((c + c.T).reshape(-1))
    c_mat = torch.stack(basis, dim=1)
    weights = torch.rand(c_mat.shape[1], generator=gen, dtype=torch.float64) + 0.1
    b = (c_mat * weights) @ c_mat.T
    a = s_star - (b @ x_star.reshape(-1)).reshape(k, k)
    return a, b, x_star


@pytest.mark.parametrize("k, rank", [(2, 0), (2, 1), (2, 2), (3, 1), (4, 2), (5, 3), (6, 6)])
def test_recovers_constructed_solutions(k, rank):
    a, b, x_star = _instance(k, rank, seed=10 * k + rank)
    sol = solve_sdcp(a, b, tol=1e-12)
    assert sol.converged and sol.infeasibility <= 1e-12 and sol.complementarity <= 1e-12
    # the error in X is the residual times the conditioning of B on the face (up to ~10³ here)
    torch.testing.assert_close(sol.x, x_star, atol=1e-8, rtol=0)
    if rank == k:  # an interior solution: the face polish solves the reduced quadratic exactly
        assert sol.iterations <= 10
    assert float(torch.linalg.eigvalsh(sol.x)[0]) >= -1e-12  # X ⪰ 0 exactly, by projection


def test_scalar_closed_form():
    assert float(solve_sdcp(torch.tensor([[-2.0]]), torch.tensor([[4.0]])).x) == 0.5
    assert float(solve_sdcp(torch.tensor([[3.0]]), torch.tensor([[4.0]])).x) == 0.0
    assert float(solve_sdcp(torch.tensor([[3.0]]), torch.tensor([[0.0]])).x) == 0.0


def test_warm_start_takes_fewer_iterations():
    a, b, _ = _instance(5, 2, seed=3)
    cold = solve_sdcp(a, b, tol=1e-10)
    nudged = a + 1e-3 * torch.eye(5, dtype=torch.float64)
    warm = solve_sdcp(nudged, b, x0=cold.x, tol=1e-10)
    again = solve_sdcp(nudged, b, tol=1e-10)
    assert warm.converged and again.converged
    assert warm.iterations < again.iterations, (warm.iterations, again.iterations)
    torch.testing.assert_close(warm.x, again.x, atol=1e-7, rtol=0)


def test_projection_is_the_nearest_psd_matrix():
    x = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64)  # eigenvalues 3, −1
    torch.testing.assert_close(project_psd(x), torch.tensor([[1.5, 1.5], [1.5, 1.5]], dtype=torch.float64))


def test_bad_input_is_named():
    eye = torch.eye(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="A must be a square"):
        solve_sdcp(torch.ones(2, 3), torch.eye(4))
    with pytest.raises(ValueError, match="B must be a \\(4, 4\\)"):
        solve_sdcp(eye, torch.eye(3))
    with pytest.raises(ValueError, match="A must be symmetric"):
        solve_sdcp(torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.eye(4))
    with pytest.raises(ValueError, match="unbounded"):
        solve_sdcp(-eye, torch.zeros(4, 4))
    with pytest.raises(ValueError, match="unbounded"):
        solve_sdcp(torch.tensor([[-1.0]]), torch.tensor([[0.0]]))


def test_agrees_with_cvxpy_where_installed():
    cp = pytest.importorskip("cvxpy")
    a, b, _ = _instance(3, 1, seed=7)
    x = cp.Variable((3, 3), symmetric=True)
    vec = cp.reshape(x, (9,), order="C")
    problem = cp.Problem(cp.Minimize(0.5 * cp.quad_form(vec, cp.psd_wrap(b.numpy())) + cp.trace(a.numpy() @ x)),
                         [x >> 0])
    problem.solve()
    torch.testing.assert_close(solve_sdcp(a, b).x, torch.as_tensor(x.value), atol=1e-5, rtol=0)


def test_an_unconverged_solve_reports_its_true_residuals():
    """A 15 × 15 problem whose B is a Gram matrix with singular values spread over four decades stops at max_iter
    (past the point where faces are tried less often); the residuals it reports are those of its X, recomputed
    from scratch (the solve computes ‖B‖₂ once and reuses it)."""
    k = 15
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(k, k, generator=gen, dtype=torch.float64)
    a = 0.5 * (a + a.T) - 0.5 * k ** 0.5 * torch.eye(k, dtype=torch.float64)
    rows = torch.randn(50, k, k, generator=gen, dtype=torch.float64)
    rows = (0.5 * (rows + rows.transpose(1, 2))).reshape(50, -1) * torch.logspace(0, -4, 50,
                                                                                 dtype=torch.float64)[:, None]
    b = rows.T @ rows
    sol = solve_sdcp(a, b, tol=1e-12, max_iter=POLISH_OFTEN + 100)
    assert not sol.converged and sol.iterations == POLISH_OFTEN + 100
    s, infeasible, complementary = kkt_residuals(a, b, sol.x)
    torch.testing.assert_close(sol.s, s)
    assert sol.infeasibility == pytest.approx(infeasible, rel=1e-12)
    assert sol.complementarity == pytest.approx(complementary, rel=1e-12)
    assert max(infeasible, complementary) > 1e-12
