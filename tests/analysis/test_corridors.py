"""Corridor detector on the toys where the answer is known in closed form."""
import numpy as np
import torch

from analysis import CorridorDetector, corridor_score, pf_stability
from flows import compare, gradient_descent
from flows.objective import toys


def test_scores_on_known_corridors():
    lin = toys.get("linear")
    assert corridor_score(lin, torch.tensor([3.0, -2.0], dtype=torch.float64)) == 0.0
    xy2 = toys.get("corridor-xy2")
    assert corridor_score(xy2, torch.tensor([0.5, 0.0], dtype=torch.float64)) == 0.0
    y = 0.1
    expected = 4 * y / (2 * np.sqrt(1 + 4 * y ** 2))
    assert abs(corridor_score(xy2, torch.tensor([0.5, y], dtype=torch.float64)) - expected) < 1e-12
    bowl = toys.get("pf-quadratic")
    assert corridor_score(bowl, bowl.theta0) > 0.5


def test_online_detection_and_gd_equals_gf_inside():
    obj = toys.get("corridor-xy2")
    det = CorridorDetector()
    traj = gradient_descent(obj, lr=0.3, steps=10, callbacks=[det])
    segs = det.detect(traj)
    assert len(segs) == 1 and segs[0].start == 0 and segs[0].end == 10
    assert abs(segs[0].evidence["loss_slope"] - segs[0].evidence["expected_slope"]) < 1e-10
    cmp = compare(obj, lr=0.3, steps=10, flows=("gf",), rtol=1e-12, atol=1e-14)
    assert cmp.drift["gf"].max() < 1e-10
    off = gradient_descent(obj, torch.tensor([1.0, 0.5], dtype=torch.float64), lr=0.1, steps=10,
                           callbacks=[CorridorDetector()])
    assert CorridorDetector().detect(off) == []
    bowl = gradient_descent(toys.get("pf-quadratic"), lr=0.1, steps=10)
    assert CorridorDetector().detect(bowl, objective=toys.get("pf-quadratic")) == []


def test_pf_stability_matches_closed_form():
    lam = np.array([-1.0, 0.5, 1.5, 3.0])
    view = pf_stability(lam, 1.0)
    expected = np.log(np.abs(1 - lam)) / lam
    np.testing.assert_allclose(view.re_c, expected, rtol=1e-12)
    assert view.oscillatory.tolist() == [False, False, True, True]
    assert view.divergent.tolist() == [False, False, False, True]
