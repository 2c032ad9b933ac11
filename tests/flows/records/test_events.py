"""One event type: every event GD, the integrator and the detectors write round-trips through from_dict."""
import json
import math

import pytest
import torch

import analysis
from flows import Controller, gradient_descent, integrate
from flows.objective import toys
from flows.records.events import Event, Segment, from_dict


def _round_trips(record: dict) -> None:
    saved = json.loads(json.dumps(record))  # as read back from a trajectory's JSON
    assert from_dict(saved).to_dict() == saved
    assert analysis.from_dict is from_dict  # analysis re-exports the one definition


def _nan_controller(ctx):
    return math.nan


def _interrupt_at_step_3(ctx, decision, rec):
    if ctx.step == 3:
        raise KeyboardInterrupt


def test_gd_events_round_trip_every_field():
    cubic = toys.get("cubic")
    diverged = gradient_descent(cubic, lr=50.0, steps=50)
    nan_rate = type("NanRate", (Controller,), {"decide": staticmethod(_nan_controller)})()
    refused = gradient_descent(cubic, lr=0.1, steps=5, controller=nan_rate)
    stopped = gradient_descent(cubic, lr=1e-6, steps=10 ** 6, time_budget=0.2, states="none")
    interrupted = gradient_descent(cubic, lr=0.1, steps=10, callbacks=[_interrupt_at_step_3])
    kinds = {}
    for traj in (diverged, refused, stopped, interrupted):
        for record in traj.events:
            _round_trips(record)
            kinds[record["kind"]] = record
    assert set(kinds) == {"divergence", "refused_step", "time_budget", "interrupted"}
    event = from_dict(kinds["divergence"])
    assert event.evidence["last_finite_step"] == event.step - 1 and "reason" in event.evidence
    assert "loss" in event.evidence  # dropped by the old analysis.from_dict


def test_flow_events_round_trip_every_field():
    toy = toys.get("sharp-valley")
    start = torch.tensor([0.3, 0.3], dtype=torch.float64)
    records = []
    records += integrate(toy, start, 5.0, flow="gf", steps=20, method="rk4", step_size=1.0).events  # divergence
    with pytest.warns(RuntimeWarning, match="max_num_steps"):
        records += integrate(toy, start, 0.1, flow="gf", steps=5, method="dopri5", max_num_steps=2).events  # failure
    with pytest.warns(RuntimeWarning):
        records += integrate(toys.get("cubic"), torch.tensor([0.6, 0.5], dtype=torch.float64), 0.5, flow="pf",
                             steps=20, method="rk4", step_size=0.025).events  # branch cut
    kinds = set()
    for record in records:
        _round_trips(record)
        kinds.add(record["kind"])
    assert {"divergence", "solver_failure", "pf_branch_cut"} <= kinds


def test_detector_events_are_flat_records_and_old_nested_ones_still_load():
    seg = Segment("hovering", 3, 9, 0.3, 0.9, {"fraction_in_band": 0.8, "mean_sharpness": float("nan")})
    record = seg.to_dict()
    assert record["fraction_in_band"] == 0.8 and record["mean_sharpness"] is None
    back = from_dict(record)
    assert back.start == 3 and back.end == 9 and back.evidence["fraction_in_band"] == 0.8
    legacy = {"kind": "eos_crossing", "step": 4, "time": 0.8, "evidence": {"sharpness": 10.2, "threshold": 10.0}}
    assert from_dict(legacy) == Event("eos_crossing", 4, 0.8, {"sharpness": 10.2, "threshold": 10.0})


def test_evidence_cannot_shadow_the_record_fields():
    with pytest.raises(ValueError, match="reserved"):
        Event("divergence", 3, 0.3, {"step": 4})
    with pytest.raises(ValueError, match="reserved"):
        Segment("corridor", 1, 2, 0.1, 0.2, {"kind": "x"})
