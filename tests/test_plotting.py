"""plot_schedule / trace_schedule: PNG written, LR per group and momentum traced, no side effects."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch

from lightkit import lr_schedulers as L
from lightkit.functional import schedules as S
from lightkit.plotting import plot_schedule, trace_schedule

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _optimizer() -> torch.optim.Optimizer:
    groups = [
        {"params": [torch.nn.Parameter(torch.ones(2))], "lr": 0.1, "name": "head"},
        {"params": [torch.nn.Parameter(torch.ones(2))], "lr": 0.02, "name": "encoder.stem"},
    ]
    return torch.optim.SGD(groups, momentum=0.9)


def test_factory_png_and_trace(tmp_path: Path) -> None:
    out = plot_schedule(partial(L.OneCycle, warmup=5), 50, tmp_path / "sub" / "one_cycle.png")
    assert out == tmp_path / "sub" / "one_cycle.png" and out.read_bytes().startswith(PNG_MAGIC)
    lrs, momenta, names = trace_schedule(partial(L.OneCycle, warmup=5), 50)
    inner = S.with_warmup(partial(S.one_cycle, total_steps=45), 5)
    assert [r[0] for r in lrs] == pytest.approx([inner(t) for t in range(50)])  # default optimizer: lr=1
    assert momenta[0] == [0.95] and min(m[0] for m in momenta) == pytest.approx(0.85, abs=1e-3)
    assert names == ["group 0"]


def test_instance_is_restored_after_tracing(tmp_path: Path) -> None:
    opt = _optimizer()
    sched = L.Cyclic(opt, step_size=5, mode="triangular2")
    opt.step()
    sched.step()
    before_state, before_groups = sched.state_dict(), [dict(g) for g in opt.param_groups]
    lrs, _, names = trace_schedule(sched, 30)
    assert names == ["head", "encoder.stem"]
    assert all(r[0] == pytest.approx(5 * r[1]) for r in lrs)  # per-group ratio
    assert sched.state_dict() == before_state and [dict(g) for g in opt.param_groups] == before_groups
    assert plot_schedule(sched, 30, tmp_path / "clr.png", log_lr=True).read_bytes().startswith(PNG_MAGIC)


def test_torch_scheduler_per_epoch_and_no_momentum(tmp_path: Path) -> None:
    opt = torch.optim.Adagrad([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    with pytest.raises(ValueError, match=r"StepLR steps once per epoch; pass steps_per_epoch"):
        trace_schedule(partial(torch.optim.lr_scheduler.StepLR, step_size=2), 20, optimizer=opt)
    lrs, momenta, _ = trace_schedule(
        partial(torch.optim.lr_scheduler.StepLR, step_size=2), 20, steps_per_epoch=5, optimizer=opt
    )
    assert [r[0] for r in lrs] == pytest.approx([0.1] * 10 + [0.01] * 10)
    assert (
        momenta[0] == [None] and opt.param_groups[0]["lr"] == 0.1 and "initial_lr" not in opt.param_groups[0]
    )
    path = plot_schedule(
        partial(torch.optim.lr_scheduler.StepLR, step_size=2), 20, tmp_path / "s.png", 5, opt
    )
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_errors() -> None:
    with pytest.raises(TypeError, match=r"ReduceOnPlateau reacts to validation metrics"):
        trace_schedule(L.ReduceOnPlateau, 10)
    with pytest.raises(ValueError, match=r"total_steps=0 must be a positive int"):
        trace_schedule(L.Cosine, 0)


def test_cli_factory_gets_total_steps_unless_set() -> None:
    from jsonargparse import ArgumentParser
    from lightning.pytorch.cli import LRSchedulerCallable

    parser = ArgumentParser()
    parser.add_argument("--s", type=LRSchedulerCallable)
    for init, total in (('{"warmup": 0.1}', 40), ('{"warmup": 0.1, "total_steps": 20}', 20)):
        cfg = parser.parse_args(
            ["--s", '{"class_path": "lightkit.lr_schedulers.Cosine", "init_args": ' + init + "}"]
        )
        lrs, _, _ = trace_schedule(parser.instantiate(cfg).s, 40)
        cosine = S.with_warmup(partial(S.cosine, total_steps=total - 0.1 * total), 0.1 * total)
        assert [r[0] for r in lrs] == pytest.approx([cosine(t) for t in range(40)])


def test_one_figure_style_for_every_png() -> None:
    """Every PNG is drawn on lightkit.plotting's Agg figures: no module touches pyplot's global state."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for path in [*root.joinpath("lightkit").rglob("*.py"), *root.joinpath("examples").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            module = node.module if isinstance(node, ast.ImportFrom) else ""
            pyplot = module == "matplotlib.pyplot" or (module == "matplotlib" and "pyplot" in names)
            if pyplot or "matplotlib.pyplot" in names:
                offenders.append(f"{path.relative_to(root)}: imports pyplot")
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "matplotlib.use":
                offenders.append(f"{path.relative_to(root)}: calls matplotlib.use")
    assert not offenders, offenders
