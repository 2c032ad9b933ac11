"""Controllers are dataclasses whose fields are their settings; each torch.optim form takes exactly those settings."""
import dataclasses
import inspect

import pytest

from analysis import controllers as c

PAIRS = [(c.Constant, c.ConstantOptimizer), (c.CorridorLR, c.CorridorLROptimizer),
         (c.DriftAdjustedLR, c.DriftAdjustedLROptimizer), (c.WNGrad, c.WNGradOptimizer), (c.PAL, c.PALOptimizer),
         (c.Alice, c.AliceOptimizer), (c.SPSMax, c.SPSMaxOptimizer), (c.ALIG, c.ALIGOptimizer)]


@pytest.mark.parametrize("controller,optimizer", PAIRS, ids=[p[0].__name__ for p in PAIRS])
def test_the_optimizer_takes_the_controllers_settings_with_the_same_defaults(controller, optimizer):
    want = [(p.name, p.kind, p.default) for p in inspect.signature(controller).parameters.values()]
    got = [(p.name, p.kind, p.default) for p in list(inspect.signature(optimizer).parameters.values())[1:]]
    assert got == want
    assert "**" not in str(inspect.signature(optimizer))


@pytest.mark.parametrize("controller", [p[0] for p in PAIRS], ids=[p[0].__name__ for p in PAIRS])
def test_hyperparameters_are_the_setting_fields_and_rebuild_the_controller(controller):
    made = controller()
    settings = made.hyperparameters()
    init_fields = {f.name for f in dataclasses.fields(made) if f.init}
    assert set(settings) <= init_fields and "state" not in settings and "evaluations" not in settings
    assert "detector" not in settings and "shapes" not in settings  # companions, not settings
    again = controller(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})
    assert again.hyperparameters() == settings
    assert repr(made).startswith(f"{controller.__name__}(")


def test_settings_are_checked_when_built_and_resolved_defaults_are_recorded():
    with pytest.raises(ValueError, match="lr"):
        c.Constant(lr=-1.0)
    with pytest.raises(ValueError, match="outside must be one of"):
        c.CorridorLR(outside="elsewhere")
    with pytest.raises(ValueError, match="hess_comp must be one of"):
        c.Alice(hess_comp="none")
    alice = c.Alice(lr=0.01)
    assert alice.hyperparameters()["lr_max"] == 0.02 and alice.hyperparameters()["phi"] == pytest.approx(0.1)
    assert c.SPSMax(c=0.25).hyperparameters() == {"c": 0.25, "max_lr": 1.0, "e_star": 0.0}


def test_a_controller_of_ones_own_gets_a_torch_optim_form():
    import torch

    @dataclasses.dataclass(eq=False, repr=False)
    class Half(c.StepController):
        rate: float = 0.5

        def decide(self, ctx):
            return self.rate

    form = c.optimizer_class(Half)
    assert form.__name__ == "HalfOptimizer"
    w = torch.nn.Parameter(torch.tensor([2.0]))
    opt = form([w], rate=0.25)

    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert float(w) == pytest.approx(2.0 - 0.25 * 4.0)
