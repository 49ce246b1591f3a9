"""The data-wait monitor: the share of step time spent waiting for batches, logged and on the progress line."""

import io
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from procedural_perception.training.data_wait import DataWait
from procedural_perception.training.progress import LineProgress


class SlowData(Dataset):
    """Every item costs ``load_s`` seconds (in the main process: the loop waits for all of it)."""

    def __init__(self, n: int, load_s: float):
        self.n, self.load_s = n, load_s

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        time.sleep(self.load_s)
        return torch.ones(2)


class SlowStep(L.LightningModule):
    """A step that costs ``step_s`` seconds."""

    def __init__(self, step_s: float):
        super().__init__()
        self.step_s = step_s
        self.w = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch, batch_idx):
        time.sleep(self.step_s)
        return (self.w - batch.mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD([self.w], lr=0.1)


class SlowEpochEnd(L.Callback):
    """An evaluation at every epoch end that costs ``seconds``."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_epoch_end(self, trainer, pl_module):
        time.sleep(self.seconds)


def fit(load_s: float, step_s: float, steps: int = 8, log: io.StringIO | None = None,
        epoch_end_s: float = 0.0, items: int = 64) -> tuple[DataWait, L.Trainer]:
    wait = DataWait()
    callbacks = [wait] + ([LineProgress(every_n_steps=4, stream=log)] if log is not None else [])
    callbacks += [SlowEpochEnd(epoch_end_s)] if epoch_end_s else []
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=log is not None, log_every_n_steps=4,
                        callbacks=callbacks)
    trainer.fit(SlowStep(step_s), DataLoader(SlowData(items, load_s), batch_size=1))
    return wait, trainer


def test_the_wait_share_follows_the_loader_and_the_first_batch_is_kept_apart():
    slow, trainer = fit(load_s=0.06, step_s=0.02)
    fast, _ = fit(load_s=0.0, step_s=0.03)
    # 0.06 s of loading against 0.02 s of step: about 75 %; with instant data only the loop's bookkeeping.
    # Sleeps give lower bounds only (a loaded machine adds to both sides), so compare the two fits.
    assert slow.steps == 7 and slow.startup_s is not None and slow.startup_s >= 0.06
    assert slow.wait_s >= 7 * 0.06 and slow.busy_s >= 7 * 0.02
    assert slow.percent() > fast.percent() + 20, (slow.percent(), fast.percent())
    assert 0 <= float(trainer.callback_metrics["time/data_wait_pct"]) <= 100


def test_time_between_epochs_is_not_data_wait():
    """Epochs of 2 batches with a 0.3 s evaluation after each: the 3 evaluations inside the fit add nothing."""
    monitor, _ = fit(load_s=0.0, step_s=0.02, steps=8, epoch_end_s=0.3, items=2)
    assert monitor.busy_s >= 7 * 0.02
    assert monitor.wait_s < 0.3, monitor.wait_s


def test_the_progress_line_shows_the_wait():
    log = io.StringIO()
    fit(load_s=0.03, step_s=0.0, log=log)
    assert "data wait " in log.getvalue() and "%" in log.getvalue()


def test_training_without_configured_callbacks_still_gets_the_monitor():
    from procedural_perception.cli.train import build_callbacks
    from procedural_perception.core.config import compose

    assert any(isinstance(c, DataWait) for c in build_callbacks(compose(["callbacks=none"])))
    switched_off = build_callbacks(compose(["callbacks=basic", "callbacks.data_wait.enabled=false"]))
    assert not any(isinstance(c, DataWait) for c in switched_off)
