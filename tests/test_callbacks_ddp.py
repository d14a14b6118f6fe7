"""The callbacks without a DDP test elsewhere, in ONE 2-process CPU DDP run (each run costs ~30-60 s).

Covered elsewhere: FineTune (callbacks/test_finetune_ddp.py), EMA / SWA / SnapshotEnsemble and the
``RawSafeWeightAveraging`` base (test_ensembles_ddp.py), LRRangeTest (callbacks/test_lr_range_test.py),
Diagnose + ActivationMonitor + GradientMonitor + LossCurves (callbacks/test_diagnose.py). Here:
MixUpCutMix, FilterMonitor, SaveEncoder, RegularizationSummary and SpeedUp (channels-last) during
``fit``, TTA during ``test``, PredictionWriter (with TTA) during ``predict``, all on one trainer, with a
CSV logger and a ModelCheckpoint.
"""

from __future__ import annotations

import csv

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.ddp import load_ranks, run_ddp_script

pytestmark = [pytest.mark.ddp, pytest.mark.slow]


def test_ddp_mixing_filters_save_encoder_tta_prediction_writer(tmp_path) -> None:
    run_ddp_script(tmp_path, '''
        from lightning.pytorch.callbacks import ModelCheckpoint
        from lightning.pytorch.loggers import CSVLogger
        from lightkit.callbacks.filters import FilterMonitor
        from lightkit.callbacks.mixing import MixUpCutMix
        from lightkit.callbacks.prediction_writer import PredictionWriter
        from lightkit.callbacks.regularization import RegularizationSummary
        from lightkit.callbacks.save_encoder import SaveEncoder
        from lightkit.callbacks.speed import SpeedUp
        from lightkit.callbacks.tta import TTA
        from lightkit.data import DigitsDataModule
        from lightkit.models import ImageClassifier

        seed_everything(0)
        dm = DigitsDataModule(batch_size=32, image_size=32)
        model = ImageClassifier(encoder="test_resnet", num_classes=10, in_chans=1)
        mix = MixUpCutMix(mixup_alpha=0.4, cutmix_alpha=1.0, switch_prob=0.5)
        filters = FilterMonitor()
        save = SaveEncoder(os.path.join(OUT, "encoder.safetensors"), use_best=False)
        tta = TTA(shifts=1)
        writer = PredictionWriter(output=os.path.join(OUT, "predictions.csv"), top_k=2)
        summary = RegularizationSummary()
        trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, limit_train_batches=3,
                          limit_val_batches=2, limit_test_batches=3, logger=CSVLogger(OUT, name="csv"),
                          callbacks=[mix, filters, save, ModelCheckpoint(monitor="val/acc", mode="max"), tta, writer,
                                     summary, SpeedUp(channels_last=True)],
                          enable_progress_bar=False, enable_model_summary=False, default_root_dir=OUT)
        trainer.fit(model, datamodule=dm)
        fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        test = trainer.test(model, datamodule=dm, verbose=False)[0]
        trainer.predict(model, datamodule=dm, return_predictions=False)
        save_rank({"weights": weights, "fit": fit_metrics, "test": test, "batches_seen": mix.batches_seen,
                   "generator": mix._generator.get_state(), "filters": list(filters.files), "sha256": save.sha256,
                   "log_dir": trainer.log_dir, "writer": str(writer.path), "items": list(dm.predict_items),
                   "zero": trainer.is_global_zero, "summary": summary.summary,
                   "channels_last": all(m.weight.is_contiguous(memory_format=torch.channels_last)
                                         for m in model.modules() if isinstance(m, torch.nn.Conv2d))})
    ''')
    r0, r1 = load_ranks(tmp_path)
    assert r0["zero"] and not r1["zero"]
    # fit: the same weights on both ranks (BN running statistics are per rank under plain DDP)
    for key, value in r0["weights"].items():
        if value.is_floating_point() and "running" not in key:
            assert torch.equal(value, r1["weights"][key]), key
    # MixUpCutMix: every training batch mixed on both ranks, from streams seeded by the rank (different)
    assert r0["batches_seen"] == r1["batches_seen"] == 6
    # SpeedUp converted the module before DDP wrapped it; RegularizationSummary saw the same fit on both ranks
    assert r0["channels_last"] and r1["channels_last"]
    assert r0["summary"] == r1["summary"] and "weight decay" in r0["summary"]["weight_decay"]
    assert not torch.equal(r0["generator"], r1["generator"])
    # validation metrics are reduced over the ranks: both see the same figures
    for key in ("val/acc", "val/loss", "val/f1"):
        assert r0["fit"][key] == r1["fit"][key], key
    # TTA: its sums are reduced over the ranks, the plain test metrics are synced
    assert r0["test"] == r1["test"] and 0.0 <= r0["test"]["tta/test_acc"] <= 1.0
    assert r0["test"]["tta/views"] == 5.0  # identity + 4 one-pixel shifts (digits: no flips)
    # files: rank zero only, one logger version, the log dir agreed on by both ranks
    assert r0["log_dir"] == r1["log_dir"]
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == ["version_0"]
    assert [p.split("/")[-1] for p in r0["filters"]] == ["init.png", "epoch=000.png", "epoch=001.png"]
    assert r1["filters"] == []
    pngs = sorted(p.name for p in (tmp_path / "csv" / "version_0" / "monitor" / "filters").iterdir())
    assert pngs == ["epoch=000.png", "epoch=001.png", "init.png"]
    assert r0["sha256"] is not None and r1["sha256"] is None
    saved = load_file(tmp_path / "encoder.safetensors")
    for key, value in saved.items():
        assert torch.equal(value, r0["weights"][f"encoder.{key}"]), key
    # PredictionWriter: one CSV per rank, together covering every test image (the sampler pads to even)
    assert r0["writer"].endswith("predictions.rank0.csv") and r1["writer"].endswith("predictions.rank1.csv")
    rows = [row for r in (r0, r1) for row in csv.DictReader(open(r["writer"]))]
    assert set(rows[0]) == {"input", "label", "probability", "top2_label", "top2_probability"}
    assert {row["input"] for row in rows} == set(r0["items"]) and len(rows) - len(r0["items"]) in (0, 1)
