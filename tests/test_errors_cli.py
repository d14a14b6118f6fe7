"""The command line's edge: each bad input is one ``error:`` line on stderr naming the value, exit code 2.

The table runs in-process through ``main(..., edge=True)`` (the path ``python cli.py`` takes) so that
~40 cases cost seconds; two cases run as real subprocesses to check the whole stderr and the
``LIGHTKIT_DEBUG=1`` traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightkit.cli import main

REPO = Path(__file__).resolve().parents[1]
Q = str(REPO / "configs/quickstart.yaml")
TINY = ["--model.init_args.encoder=test_resnet", "--model.init_args.pretrained=false", "--trainer.accelerator=cpu",
        "--trainer.logger=false", "--trainer.max_steps=1", "--trainer.enable_progress_bar=false"]


def _files(root: Path) -> dict[str, str]:
    """Bad files of every kind, written into ``root``; returns name -> path."""
    (root / "empty.yaml").write_text("")
    (root / "comments.yaml").write_text("# nothing but a comment\n")
    (root / "broken.yaml").write_text("model: [unclosed\n")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "linked.yaml").write_text(yaml.safe_dump({"model": {"init_args": {"in_chans": 3}}}))
    (root / "random.safetensors").write_bytes(os.urandom(300))
    (root / "empty.pth").write_bytes(b"")
    (root / "random.pth").write_bytes(os.urandom(300))
    (root / "random.ckpt").write_bytes(b"\x00garbage" * 50)
    return {p.name: str(p) for p in root.iterdir()}


# (id, argv with {name} for the files above, exit code, regex that the one line must match)
CASES: list[tuple[str, list[str], int, str]] = [
    ("no-command", [], 2, r"no command given; run one of: fit, validate, test, predict, .*lr_find"),
    ("unknown-command", ["fitt", "--config", Q], 2, r"unknown command 'fitt'; did you mean 'fit'"),
    ("unknown-lightkit-command", ["lr_fnd", "--config", Q], 2, r"unknown command 'lr_fnd'; did you mean 'lr_find'"),
    ("unknown-command-lists-all", ["train", "--config", Q], 2, r"the commands are: .*sanity, export"),
    ("option-before-command", ["--config", Q, "fit"], 2, r"'--config' comes before the command"),
    ("missing-config", ["fit", "--config", "nothere.yaml"], 2, r"--config nothere\.yaml: no such file"),
    ("empty-config", ["fit", "--config", "{empty.yaml}"], 2, r"empty\.yaml is empty; a config needs at least"),
    ("comment-only-config", ["fit", "--config", "{comments.yaml}"], 2, r"comments\.yaml is empty"),
    ("broken-yaml", ["fit", "--config", "{broken.yaml}"], 2, r"broken\.yaml is not valid YAML at line 2"),
    ("list-config", ["fit", "--config", "{list.yaml}"], 2, r"list\.yaml holds a list, not a mapping"),
    ("linked-num-classes", ["fit", "--config", Q, "--model.init_args.num_classes", "5"], 2,
     r"model\.init_args\.num_classes=5 on the command line: the data module sets num_classes"),
    ("linked-in-chans-in-yaml", ["fit", "--config", Q, "--config", "{linked.yaml}"], 2,
     r"model\.init_args\.in_chans=3 in .*linked\.yaml: the data module sets in_chans"),
    ("encoder-typo",
     ["fit", "--config", Q, "--model.init_args.encoder", "resnet1O", "--model.init_args.pretrained=false"],
     2, r"encoder='resnet1O' is not a timm model name\. Close matches: .*'resnet10t'"),
    ("unknown-model-key", ["fit", "--config", Q, "--model.init_args.encodr", "x"], 2,
     r"model\.init_args\.encodr: ImageClassifier has no argument 'encodr'; did you mean encoder\?"),
    ("unknown-data-key", ["fit", "--config", Q, "--data.init_args.batch_sise", "3"], 2,
     r"data\.init_args\.batch_sise: DigitsDataModule has no argument 'batch_sise'; did you mean batch_size\?"),
    ("unknown-trainer-key", ["fit", "--config", Q, "--trainer.max_epocs", "3"], 2,
     r"unknown option --trainer\.max_epocs; did you mean --trainer\.max_epochs"),
    ("label-smoothing", ["fit", "--config", Q, "--model.init_args.label_smoothing=2.0"], 2,
     r"ImageClassifier: label_smoothing=2\.0 must be in \[0, 1\)"),
    ("dropout", ["fit", "--config", Q, "--model.init_args.dropout", "1.5"], 2, r"dropout=1\.5 must be in \[0, 1\)"),
    ("negative-lr", ["fit", "--config", Q, "--model.init_args.optimizer.init_args.lr", "-0.1"], 2,
     r"optimizer\.init_args\.lr=-0\.1: a learning rate must be finite and >= 0"),
    ("nan-lr", ["fit", "--config", Q, "--model.init_args.optimizer.init_args.lr", ".nan"], 2,
     r"optimizer\.init_args\.lr=nan: a learning rate must be finite"),
    ("negative-max-lr", ["fit", "--config", Q, "--model.init_args.lr_scheduler.init_args.max_lr", "-0.001"], 2,
     r"lr_scheduler\.init_args\.max_lr=-0\.001: a learning rate must be finite and >= 0"),
    ("inf-max-lr", ["fit", "--config", Q, "--model.init_args.lr_scheduler.init_args.max_lr", ".inf"], 2,
     r"max_lr=inf: a learning rate must be finite"),
    ("lr-not-a-number", ["fit", "--config", Q, "--model.init_args.optimizer.init_args.lr", "abc"], 2,
     r"Got value: abc"),
    ("endless-one-cycle", ["fit", "--config", Q, "--trainer.max_epochs=-1", "--trainer.max_steps=-1"], 2,
     r"trainer\.max_epochs=-1 \(no end\) with OneCycleLR"),
    ("one-cycle-of-one-step", ["fit", "--config", Q, "--trainer.max_steps=-1", "--trainer.max_epochs=1",
                               "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=1"], 2,
     r"OneCycleLR: pct_start x total_steps is exactly 1 optimizer step"),
    ("batch-size-zero", ["fit", "--config", Q, "--data.init_args.batch_size", "0"], 2,
     r"DigitsDataModule: batch_size=0 must be >= 1"),
    ("val-fraction", ["fit", "--config", Q, "--data.init_args.val_fraction", "1.5"], 2,
     r"val_fraction=1\.5 must be in"),
    ("accelerator", ["fit", "--config", Q, "--trainer.accelerator", "foo"], 2, r"accelerator='foo'"),
    ("random-safetensors-weights", ["fit", "--config", Q, "--model.init_args.encoder=resnet10t",
                                    "--model.init_args.pretrained", "{random.safetensors}"], 2,
     r"pretrained='.*random\.safetensors': cannot read it as safetensors"),
    ("empty-weights", ["fit", "--config", Q, "--model.init_args.encoder=resnet10t", "--model.init_args.pretrained",
                       "{empty.pth}"], 2, r"pretrained='.*empty\.pth': the file is empty \(0 bytes\)"),
    ("random-pth-weights", ["fit", "--config", Q, "--model.init_args.encoder=resnet10t", "--model.init_args.pretrained",
                            "{random.pth}"], 2, r"pretrained='.*random\.pth'"),
    ("missing-weights", ["fit", "--config", Q, "--model.init_args.encoder=resnet10t", "--model.init_args.pretrained",
                         "nothere.safetensors"], 2,
     r"pretrained='nothere\.safetensors': no such file next to the config"),
    ("weights-by-channels-missing", ["fit", "--config", Q, "--model.init_args.encoder=resnet10t",
                                     "--model.init_args.pretrained={3: lightkit:mnist5k_resnet10t}"], 2,
     r"pretrained=\{3: 'lightkit:mnist5k_resnet10t'\} names no weights for in_chans=1; add an entry 1: <weights>"),
    ("weights-by-channels-bad-key", ["fit", "--config", Q, "--model.init_args.encoder=resnet10t",
                                     "--model.init_args.pretrained={gray: lightkit:mnist5k_resnet10t}"], 2,
     r"pretrained=.*gray.*: a mapping of weights by input channels needs keys 1-4"),
    ("safetensors-as-ckpt", ["test", "--config", Q, "--ckpt_path", "{random.safetensors}"], 2,
     r"ckpt_path=.*random\.safetensors is not a Lightning checkpoint .*model\.init_args\.pretrained"),
    ("random-ckpt", ["test", "--config", Q, "--ckpt_path", "{random.ckpt}"], 2,
     r"ckpt_path=.*random\.ckpt is not a Lightning checkpoint"),
    ("missing-ckpt", ["test", "--config", Q, "--ckpt_path", "nothere.ckpt"], 2,
     r"ckpt_path=nothere\.ckpt: no such file"),
    ("no-last-ckpt", ["test", "--config", Q, "--ckpt_path", "last"], 2,
     r"ckpt_path='last': no run under .* has checkpoints/last\.ckpt"),
    ("no-best-ckpt", ["predict", "--config", Q, "--ckpt_path", "best"], 2,
     r"ckpt_path='best': no run under .* has checkpoints/best\.ckpt"),
    ("sanity-option", ["sanity", "--config", Q, "--sanity.overfit_batches", "0"], 2,
     r"sanity: overfit_batches=0 must be >= 1"),
    ("diagnose-option", ["fit", "--config", Q, "--trainer.callbacks+=lightkit.callbacks.diagnose.Diagnose",
                         "--trainer.callbacks.every_n_steps=0"], 2, r"Diagnose: every_n_steps=0 must be >= 1"),
]


@pytest.mark.parametrize(("argv", "code", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_with_exit_2(argv: list[str], code: int, pattern: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    files = _files(tmp_path)
    argv = [files[a[1:-1]] if a.startswith("{") else a for a in argv]
    extra = [*TINY, f"--trainer.default_root_dir={tmp_path / 'runs'}"] if argv and argv[0] in (
        "fit", "test", "predict", "sanity") else []
    if any(a.startswith("--model.init_args.encoder") for a in argv):
        extra = [a for a in extra if not a.startswith("--model.init_args.encoder")]
    if any(a.startswith("--model.init_args.pretrained") for a in argv):
        extra = [a for a in extra if not a.startswith("--model.init_args.pretrained")]
    head = 3 if argv[1:2] == ["--config"] else 1  # the case's own options come after TINY and win
    with pytest.raises(SystemExit) as exit_info:
        main([*argv[:head], *extra, *argv[head:]], edge=True)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert exit_info.value.code == code, err
    assert len(errors) == 1 and "Traceback" not in err and "usage:" not in err, err
    assert __import__("re").search(pattern, errors[0]), errors[0]


def test_at_least_30_cases_cover_the_issue() -> None:
    assert len(CASES) >= 30


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=full_env)


def test_subprocess_stderr_is_exactly_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    args = ["fit", "--config", Q, *[a for a in TINY if "logger" not in a], "--data.init_args.batch_size", "0"]
    proc = _cli(args, tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["error: DigitsDataModule: batch_size=0 must be >= 1."], proc.stderr
    debug = _cli(args, tmp_path, LIGHTKIT_DEBUG="1")
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "batch_size=0 must be >= 1" in debug.stderr


def test_model_option_that_the_checkpoint_replaces_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    base = ["--config", Q, *TINY, f"--trainer.default_root_dir={tmp_path / 'runs'}"]
    main(["fit", *base, "--test_after_fit=false", "--trainer.max_steps=-1", "--trainer.max_epochs=1",
          "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"], edge=True)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["test", *base, "--ckpt_path", "best", "--model.init_args.encoder", "resnet18"], edge=True)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert exit_info.value.code == 2 and len(errors) == 1
    assert "model.init_args.encoder='resnet18' on the command line, but" in errors[0]
    assert "was trained with encoder='test_resnet'" in errors[0] and "best.ckpt" in errors[0]


def test_resume_with_a_longer_budget_is_refused_with_the_way_to_train_longer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """OneCycleLR cannot run past the length it was built for: resuming a finished 1-epoch run with
    max_epochs 2 is one line naming the checkpoint, both lengths and the two ways on, exit 2."""
    monkeypatch.chdir(tmp_path)
    base = ["--config", Q, *TINY, "--trainer.max_steps=-1", "--trainer.limit_train_batches=6",
            "--trainer.limit_val_batches=1", "--test_after_fit=false", f"--trainer.default_root_dir={tmp_path / 'r'}"]
    main(["fit", *base, "--trainer.max_epochs=1"], edge=True)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *base, "--trainer.max_epochs=2", "--ckpt_path=last"], edge=True)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert exit_info.value.code == 2 and len(errors) == 1, errors
    assert "last.ckpt: its LR schedule was built for 6 optimizer steps and this fit asks for step 7" in errors[0]
    assert "--model.init_args.pretrained " in errors[0] and "max_epochs / max_steps" in errors[0]
