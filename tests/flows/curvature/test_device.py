"""Hot paths stay on θ's device: no tensor is copied to the host inside HVPs or the GF/IGR fields, and Lanczos
(also inside the PF field) sends only small tensors (the projected matrix's new column), never a D-vector."""
import pytest
import torch
from models import fc_tanh, teacher_student

from analysis import Sharpness
from flows import EigenTracker, Objective, gradient_descent, integrate, top_eigenpairs
from flows.dynamics.fields import get_field


@pytest.fixture
def host_copies(monkeypatch):
    """Records (call, numel) of Tensor.cpu / .numpy / .tolist / .to('cpu') calls."""
    calls = []
    for name in ("cpu", "numpy", "tolist"):
        original = getattr(torch.Tensor, name)

        def spy(self, *a, _name=name, _orig=original, **k):
            calls.append((_name, self.numel()))
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    original_to = torch.Tensor.to

    def to(self, *a, **k):
        target = k.get("device", a[0] if a else None)
        if (isinstance(target, str) and target.startswith("cpu")) or \
                (isinstance(target, torch.device) and target.type == "cpu" and self.device.type != "cpu"):
            calls.append(("to(cpu)", self.numel()))
        return original_to(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "to", to)
    return calls


def _objective(device="cpu"):
    x, y = teacher_student(n=64, d_in=6, d_out=2, width=8)
    model = fc_tanh((6, 64, 32, 2), dtype=torch.float64).to(device)  # D = 2594 > any projected matrix
    return Objective.from_module(model, torch.nn.functional.mse_loss, (x.to(device), y.to(device)), batch_size=32)


def test_no_host_copies_in_hvp_lanczos_and_pf_fields(host_copies):
    obj = _objective()
    theta = obj.theta0
    v = torch.randn(obj.dim, dtype=torch.float64)
    host_copies.clear()  # only the hot paths below count
    obj.hvp(theta, v)
    obj.grad_and_hessian_grad(theta)
    get_field("gf")(obj, theta, 0.1)
    get_field("igr")(obj, theta, 0.1)
    assert host_copies == []
    pairs = top_eigenpairs(obj, theta, k=3, method="lanczos", tol=1e-6)
    tracker = EigenTracker(k=3, method="lanczos")
    get_field("pf_topk")(obj, theta, 0.1, k=3, tracker=tracker)
    sizes = [n for _, n in host_copies]
    assert pairs.iterations > 5 and len(sizes) > 0
    assert max(sizes) <= 41 * 41 < obj.dim  # column of A (≤ basis + 2 entries) and m × m host matrices only


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_end_to_end():
    obj = _objective("cuda")
    theta = obj.theta0
    assert theta.device.type == "cuda"
    pairs = top_eigenpairs(obj, theta, k=3, method="lanczos", tol=1e-8)
    assert pairs.values.device.type == "cuda" and pairs.converged
    cpu = _objective("cpu")
    ref = top_eigenpairs(cpu, cpu.theta0, k=3, method="dense")
    torch.testing.assert_close(pairs.values.cpu(), ref.values, rtol=1e-6, atol=1e-8)
    traj = gradient_descent(obj, lr=0.1, steps=5, callbacks=[Sharpness(every=2)])
    flow = integrate(obj, flow="pf_topk", lr=0.1, steps=3, k=2)
    assert traj.status == "complete" and flow.status == "complete"
    assert traj.config["device"].startswith("cuda")
