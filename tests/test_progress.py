"""Progress in a batch job's log: plain lines every N steps when the output is not a terminal."""

import io

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from torch.utils.data import DataLoader

from procedural_perception.training.progress import LineProgress, progress_bar


class Toy(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch, batch_idx):
        loss = (self.w - batch.mean()) ** 2
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD([self.w], lr=0.1)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_rich_bar_and_a_log_gets_lines():
    assert isinstance(progress_bar(stream=Terminal()), RichProgressBar)
    assert isinstance(progress_bar(stream=io.StringIO()), LineProgress)


def test_lines_every_n_steps_with_step_epoch_loss_speed_and_eta():
    log = io.StringIO()
    trainer = L.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_model_summary=False, callbacks=[LineProgress(every_n_steps=2, stream=log)])
    trainer.fit(Toy(), DataLoader(torch.rand(12, 3), batch_size=4))
    lines = log.getvalue().splitlines()
    assert lines[0] == "training from step 0 to 6"
    steps = [line for line in lines[1:] if line.startswith("step ")]
    assert [s.split(" | ")[0] for s in steps] == ["step 2/6 (33%)", "step 4/6 (67%)", "step 6/6 (100%)",
                                                 "step 6/6 (100%)"]
    first = steps[0].split(" | ")
    assert first[1] == "epoch 0" and first[2].startswith("loss ") and first[3].endswith(" img/s")
    assert first[4].startswith("ETA ") and steps[-1].endswith("| done")
