"""Slot VAE with an interaction-regularised slot decoder (arXiv 2512.08854, section 3).

The encoder gives each of ``K`` slots a Gaussian posterior (mean, log-variance); the decoder renders
sampled slots; the loss, in per-pixel-mean units, is

    recon + beta * KL + alpha(t) * interaction  [+ replay_weight * replay, after replay_start]

where ``recon`` is the per-pixel mean squared error (over a random subset of ``train_pixels``
pixels per batch when set: the decoders render pixels independently, so this is unbiased), ``KL``
the KL divergence to N(0, I) summed over slots and dimensions (mean over the batch),
``interaction`` the regulariser of ``interaction.py`` and ``alpha(t)`` its schedule
(``regulariser_schedule.py``: off for the first ``alpha_start`` of training, or until the
reconstruction plateaus, then a linear ramp over ``alpha_warmup`` of training). ``alpha = 0`` is
the unregularised VAE.

Decoders (``decoder``): "attention" (``slot_decoder.py``: pixels cross-attend to all slots, Brady et
al.), "alpha" (``alpha_decoder.py``: each slot decoded alone by a per-pixel MLP, alpha masks normalised
over slots, Wiedemer et al.) or "conv_alpha" (``conv_alpha_decoder.py``: the same composition, each slot
decoded to a whole image by an MLP and transposed convolutions; the one that fits its training scenes,
see ``decoder_trial.py``). ``n_slots`` may exceed ``n_objects`` (a background slot: ``n_objects + 1``).

Collapse monitor: the min slot share of each batch (``slot_share.py``) is logged; once
``collapse_check_start`` of training has passed and the decoder draws the objects (running
reconstruction ratio below ``DRAWS_OBJECTS_RATIO``), a running mean below ``min_slot_share`` stops
the run with a message saying why and what to change (``collapsed_at_step`` records the step).

Two ways to invert the decoder on out-of-distribution images:

* generative replay (``replay_weight > 0``, from ``replay_start`` of training on): ``replay.py``;
* gradient-based search (``infer(images, search=True)``): MAP inference of ``latent_search.py`` with
  the training objective's reconstruction term and a Gaussian prior weighted by ``beta``
  (``search_prior``: "standard" = N(0, I), "encoder" = the encoder's posterior).
"""

from __future__ import annotations

import lightning
import torch
from lightning.pytorch.utilities import rank_zero_warn

from procedural_perception.compositional.alpha_decoder import AlphaMaskDecoder
from procedural_perception.compositional.conv_alpha_decoder import ConvAlphaDecoder
from procedural_perception.compositional.interaction import interaction_penalty
from procedural_perception.compositional.latent_search import gaussian_prior, latent_search
from procedural_perception.compositional.regulariser_schedule import PlateauDetector, ramp_weight
from procedural_perception.compositional.replay import object_slots, replay_loss
from procedural_perception.compositional.slot_decoder import SlotDecoder
from procedural_perception.compositional.slot_encoder import build_slot_encoder
from procedural_perception.compositional.slot_share import min_slot_share, object_pixels

# Smoothing of the per-batch min slot share (and reconstruction ratio) before they are compared with thresholds.
SHARE_DECAY = 0.9
# The share says nothing before the decoder draws objects: it is only checked once the running reconstruction
# ratio (recon / all-black error of the batch) is below this (a decoder that draws the objects at all).
DRAWS_OBJECTS_RATIO = 0.5


class SlotVAE(lightning.LightningModule):
    """Batches are ``(images [B, 3, S, S], latents)``; the ground-truth latents are never used in training.

    Encoder: ``encoder`` ("mlp", "mlp_s4" or "slot_attention"), ``channels``, ``hidden``. Decoder: ``decoder``,
    ``d_model`` (width), ``heads`` and ``layers`` (attention blocks; for "alpha", hidden layers of the
    per-pixel MLP; for "conv_alpha", ``d_model`` is the slot MLP's width and ``channels`` its convolutions'
    width), ``frequencies`` (Fourier octaves), ``out_hidden`` (MLP output head width of the attention
    decoder, 0: linear). ``lr_warmup``: steps of linear learning-rate warm-up (0: none). Loss: ``beta``, ``alpha`` (about 1e-4 in these per-pixel-mean units
    is Brady et al.'s relative weight), ``alpha_start``, ``alpha_warmup`` (fractions of training),
    ``alpha_on_plateau``, ``replay_weight``, ``replay_start``. Search: ``search_steps``, ``search_lr``
    (in units of the ID spread of each latent), ``search_prior``. Monitor: ``min_slot_share``
    (0 switches the stop off), ``collapse_check_start``.
    """

    def __init__(
        self,
        n_slots: int = 2,
        n_objects: int | None = None,
        slot_dim: int = 8,
        image_size: int = 32,
        channels: int = 32,
        hidden: int = 256,
        decoder: str = "attention",
        d_model: int = 128,
        heads: int = 8,
        layers: int = 2,
        frequencies: int = 6,
        out_hidden: int = 128,
        lr: float = 1e-3,
        beta: float = 1e-5,
        alpha: float = 1e-4,
        alpha_start: float = 0.3,
        alpha_warmup: float = 0.25,
        alpha_on_plateau: bool = False,
        replay_weight: float = 0.0,
        replay_start: float = 0.5,
        search_steps: int = 100,
        search_lr: float = 0.1,
        search_prior: str = "encoder",
        train_pixels: int | None = None,
        encoder: str = "mlp",
        min_slot_share: float = 0.05,
        collapse_check_start: float = 0.5,
        lr_warmup: int = 0,
    ) -> None:
        super().__init__()
        n_objects = n_slots if n_objects is None else n_objects
        if not 1 <= n_objects <= n_slots:
            raise ValueError(f"n_objects must be in [1, n_slots={n_slots}], got {n_objects}; "
                             "use n_slots = objects + 1 for a background slot.")
        fractions = {"alpha_start": alpha_start, "alpha_warmup": alpha_warmup, "replay_start": replay_start,
                     "collapse_check_start": collapse_check_start}
        outside = {k: v for k, v in fractions.items() if not 0 <= v <= 1}
        if outside:
            raise ValueError(f"{outside} must be fractions of training in [0, 1].")
        if search_prior not in ("standard", "encoder"):
            raise ValueError(f"search_prior must be 'standard' or 'encoder', got {search_prior!r}.")
        self.save_hyperparameters()
        self.hparams.n_objects = n_objects
        self.encoder = build_slot_encoder(encoder, n_slots, 2 * slot_dim, image_size, channels, hidden)
        if decoder == "attention":
            self.decoder = SlotDecoder(slot_dim, image_size, d_model, heads, layers, frequencies, out_hidden=out_hidden)
        elif decoder == "alpha":
            self.decoder = AlphaMaskDecoder(slot_dim, image_size, d_model, layers, frequencies)
        elif decoder == "conv_alpha":
            self.decoder = ConvAlphaDecoder(slot_dim, image_size, hidden=d_model, channels=channels)
        else:
            raise ValueError(f"decoder must be 'attention', 'alpha' or 'conv_alpha', got {decoder!r}.")
        self.plateau = PlateauDetector()
        self.share_average: float | None = None
        self.ratio_average: float | None = None
        self.collapsed_at_step: int | None = None

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 3, S, S]`` -> posterior (mean, logvar), each ``[B, K, slot_dim]``."""
        mean, logvar = self.encoder(images).chunk(2, dim=-1)
        # Bounded log-variance keeps exp() finite early in training.
        return mean, logvar.clamp(-10, 5)

    def decode(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, K, slot_dim]`` -> (images ``[B, 3, S, S]``, slot weights ``[layers, B, heads, S*S, K]``)."""
        return self.decoder(slots)

    def render(self, slots: torch.Tensor) -> torch.Tensor:
        return self.decoder(slots)[0]

    @torch.no_grad()
    def infer(self, images: torch.Tensor, search: bool = False, steps: int | None = None, lr: float | None = None,
              bounds: tuple[torch.Tensor, torch.Tensor] | None = None, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Slot latents ``[B, K, slot_dim]``: posterior means, refined by MAP search when ``search``
        (``steps``, ``lr`` default to the hyper-parameters; ``bounds`` ``([K, D], [K, D])`` and ``scale``
        ``[K, D]``: the ID range and spread of each slot's latents, see ``latent_search``)."""
        mean, logvar = self.encode(images)
        if not search:
            return mean
        steps = self.hparams.search_steps if steps is None else steps
        lr = self.hparams.search_lr if lr is None else lr
        if self.hparams.search_prior == "encoder":
            prior = gaussian_prior(self.hparams.beta, mean, logvar)
        else:
            prior = gaussian_prior(self.hparams.beta)
        if bounds is not None:
            bounds = (bounds[0].to(images.device), bounds[1].to(images.device))
        return latent_search(self.render, images, mean, steps, lr, bounds, scale, prior).slots

    def progress(self) -> tuple[int, int]:
        """(step, total steps of this fit); total 1 without a trainer."""
        trainer = self._trainer
        total = getattr(trainer, "estimated_stepping_batches", 1) if trainer is not None else 1
        total = int(total) if total not in (None, float("inf")) else 1
        return self.global_step, max(total, 1)

    def alpha_now(self) -> float:
        step, total = self.progress()
        return ramp_weight(self.hparams.alpha, step, total, self.hparams.alpha_start, self.hparams.alpha_warmup,
                           self.plateau.reached_at if self.hparams.alpha_on_plateau else None)

    def replay_on(self) -> bool:
        step, total = self.progress()
        return self.hparams.replay_weight > 0 and step >= self.hparams.replay_start * total

    def losses(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        mean, logvar = self.encode(images)
        slots = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        n_pixels = images.shape[-1] * images.shape[-2]
        pixels = None
        if self.hparams.train_pixels and self.hparams.train_pixels < n_pixels:
            pixels = torch.randperm(n_pixels, device=images.device)[: self.hparams.train_pixels]
        colours, attention = self.decoder.render_pixels(slots, pixels)  # [B, P', 3]
        target = images.flatten(2).transpose(1, 2)  # [B, S*S, 3]
        target = target if pixels is None else target[:, pixels]
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2)).mean()
        out = {"recon": ((colours - target) ** 2).mean(), "kl": kl, "interaction": interaction_penalty(attention)}
        out["loss"] = out["recon"] + self.hparams.beta * kl + self.alpha_now() * out["interaction"]
        with torch.no_grad():
            out["recon_ratio"] = out["recon"].detach() / (target**2).mean().clamp_min(1e-8)
            objects = target.sum(-1) > 0.3  # object pixels of the black-background scenes (slot_share.py)
            out["min_slot_share"] = min_slot_share(attention.sum(2).mean(0), objects, self.hparams.n_objects).mean()
        if self.replay_on():
            movable = None
            if self.hparams.n_slots > self.hparams.n_objects:  # keep each scene's background slot
                movable = object_slots(attention.detach().sum(2).mean(0), objects, self.hparams.n_objects)
            out["replay"] = replay_loss(lambda x: self.encode(x)[0], self.render, mean, movable=movable)
            out["loss"] = out["loss"] + self.hparams.replay_weight * out["replay"]
        return out

    @torch.no_grad()
    def movable_slots(self, images: torch.Tensor, slots: torch.Tensor) -> torch.Tensor | None:
        """``[B, K]`` bool: the slots replay redraws for these scenes (their object slots; None: all slots)."""
        if self.hparams.n_slots == self.hparams.n_objects:
            return None
        weights = self.decoder(slots)[1].sum(2).mean(0)  # [B, P, K]
        return object_slots(weights, object_pixels(images), self.hparams.n_objects)

    def monitor_collapse(self, share: float, recon_ratio: float) -> None:
        """Update the running min slot share and reconstruction ratio; stop the fit with a clear message when
        the share is below threshold while the decoder draws the objects."""
        avg, ratio = self.share_average, self.ratio_average
        self.share_average = share if avg is None else SHARE_DECAY * avg + (1 - SHARE_DECAY) * share
        self.ratio_average = recon_ratio if ratio is None else SHARE_DECAY * ratio + (1 - SHARE_DECAY) * recon_ratio
        step, total = self.progress()
        threshold = self.hparams.min_slot_share
        if (threshold <= 0 or step < self.hparams.collapse_check_start * total
                or self.ratio_average >= DRAWS_OBJECTS_RATIO or self.share_average >= threshold):
            return
        self.collapsed_at_step = step
        rank_zero_warn(
            f"Slot collapse at step {step}: the min slot share is {self.share_average:.3f} < min_slot_share="
            f"{threshold}, so fewer than {self.hparams.n_objects} slots draw the objects. Stopping. Lower alpha or "
            "start it later (alpha_start), use decoder=alpha or a background slot (n_slots = objects + 1); "
            "min_slot_share=0 trains on regardless.")
        if self._trainer is not None:
            self.trainer.should_stop = True

    def training_step(self, batch, batch_idx):
        out = self.losses(batch[0])
        if self.hparams.alpha_on_plateau:
            self.plateau.update(self.global_step, float(out["recon"]))
        self.monitor_collapse(float(out["min_slot_share"]), float(out["recon_ratio"]))
        self.log_dict({f"train/{k}": v for k, v in out.items()}, prog_bar=False)
        self.log("train/alpha", self.alpha_now())
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        recon = self.render(self.infer(batch[0]))
        self.log("val/recon", ((recon - batch[0]) ** 2).mean(), prog_bar=True)

    def test_step(self, batch, batch_idx):
        recon = self.render(self.infer(batch[0]))
        self.log("test/recon", ((recon - batch[0]) ** 2).mean())

    def configure_optimizers(self):
        optimiser = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        if not self.hparams.lr_warmup:
            return optimiser
        warmup = self.hparams.lr_warmup
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
