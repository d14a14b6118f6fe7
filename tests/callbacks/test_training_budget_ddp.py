"""TrainingBudget under 2-process CPU DDP: both ranks plan the same steps, counts are summed over ranks."""

from __future__ import annotations

import pytest

from tests.helpers.ddp import load_ranks, run_ddp_script

pytestmark = [pytest.mark.ddp, pytest.mark.slow]


def test_budget_counts_per_rank_batches_and_sums_predictions(tmp_path) -> None:
    run_ddp_script(tmp_path, '''
        from lightkit.callbacks.budget import TrainingBudget
        from lightkit.data import DigitsDataModule
        from lightkit.models import ImageClassifier

        seed_everything(0)
        dm = DigitsDataModule(batch_size=8, image_size=16, samples_per_class=4)  # 40 images: 20 per rank
        model = ImageClassifier(encoder="test_resnet", num_classes=10, in_chans=1)
        budget = TrainingBudget(min_steps=9, warn_below=0, max_validations=100)
        trainer = ddp_trainer(max_epochs=1, max_steps=-1, limit_val_batches=2, num_sanity_val_steps=0,
                              enable_checkpointing=False, callbacks=[budget])
        trainer.fit(model, datamodule=dm)
        save_rank({"planned": budget.planned_steps, "step": trainer.global_step, "epochs": trainer.current_epoch,
                   "counts": budget.val_counts, "history": budget.history})
    ''')
    ranks = load_ranks(tmp_path)
    # 20 samples per rank at batch 8: 3 steps per epoch; min_steps 9 -> 3 epochs on both ranks
    assert [r["planned"] for r in ranks] == [9, 9]
    assert [r["step"] for r in ranks] == [9, 9] and [r["epochs"] for r in ranks] == [3, 3]
    # validation: 2 batches of 8 on each rank, summed over both ranks
    assert ranks[0]["counts"] == ranks[1]["counts"] and sum(ranks[0]["counts"]) == 32
    assert ranks[0]["history"] == ranks[1]["history"] and len(ranks[0]["history"]) == 3
