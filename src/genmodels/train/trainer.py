"""One training loop for any model with ``loss(batch) -> scalar``: Adam(W), per-epoch learning-rate decay,
gradient clipping (at a fixed norm and at a multiple of the running mean), optional skipping of gradient
spikes, an EMA of the weights, and a state that resumes exactly.
Under torchrun every process takes its shard of every batch and DDP averages the gradients."""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from genmodels.config import TrainingConfig, check_config_type
from genmodels.errors import TrainingError
from genmodels.train import acceleration, distributed
from genmodels.train.acceleration import compile_function, worth_compiling_training

__all__ = ["Trainer"]

log = logging.getLogger(__name__)

Evaluate = Callable[[nn.Module], dict[str, float]]
Checkpoint = Callable[["Trainer"], None]
Loss = Callable[[torch.Tensor], torch.Tensor]


class _DeferredInterrupt:
    """In the main thread where SIGINT is not ignored, the first Ctrl-C only sets ``requested``."""

    def __init__(self, steps_per_epoch: int) -> None:
        # ``agreed``: whether every process stops after this epoch, set once per epoch from all the
        # processes' ``requested``; kept apart so that a Ctrl-C landing during that exchange is not lost
        self.requested, self.agreed, self.steps_per_epoch, self.steps_done = False, False, steps_per_epoch, 0
        self.epoch_start, self._previous = time.perf_counter(), None
        main_thread = threading.current_thread() is threading.main_thread()
        if main_thread and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:  # noqa: ANN001
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: finishing this epoch%s, then saving a resumable checkpoint (Ctrl-C again to stop "
                    "now)", self._time_left())  # fmt: skip

    def _time_left(self) -> str:
        """`` (step 12 of 1800, about 9 min left)`` when the rest of the epoch takes over 10 s, else ''."""
        done, total = self.steps_done, self.steps_per_epoch
        seconds = (time.perf_counter() - self.epoch_start) / done * (total - done) if done else 0
        if seconds < 10:
            return ""
        left = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
        return f" (step {done + 1} of {total}, about {left} left)"

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _warn_unstandardised(model: nn.Module, data: torch.Tensor) -> None:
    """Warn when ``data (N, D)``, standardised by the model, are far from mean 0 and std 1."""
    standardize = getattr(model, "standardize", None)
    if standardize is None or data.shape[0] < 2:
        return
    with torch.no_grad():
        z = (data.to(standardize.mean.dtype) - standardize.mean) / standardize.std
        mean, std = z.mean(0), z.std(0)
    if bool((mean.abs() <= 5).all() and (std <= 10).all() and (std >= 0.1).all()):
        return
    shown = [", ".join(f"{float(v):.3g}" for v in t[:4]) + ", ..." * (len(t) > 4) for t in (mean, std)]
    log.warning("the training data, in the model's standardised units, have means %s and standard deviations "
                "%s; the networks train best near 0 and 1: call model.set_standardization(data.mean(0), "
                "data.std(0)) before training", *shown)  # fmt: skip


def _show_epoch(bar: Any, record: dict[str, float], steps_per_epoch: int) -> None:
    """Advance the progress bar by an epoch, with its loss, learning rate, steps per second and any
    skipped steps (an epoch's loss counts its skipped steps' losses too: the bar says how many)."""
    skipped = {"skipped": int(record["skipped_steps"])} if record["skipped_steps"] else {}
    steps_s = f"{steps_per_epoch / record['seconds']:.0f}"
    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", steps_s=steps_s, **skipped)
    bar.update(1)


def format_duration(seconds: float) -> str:
    """``seconds`` as ``"0.42 s"``, ``"3 min 05 s"`` or ``"1 h 02 min"``."""
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class Trainer:
    """Optimises ``model`` (with ``loss(batch (B, D)) -> scalar``); ``ema`` is the averaged copy used for
    evaluation and sampling (``model`` when ``ema_decay`` is 0)."""

    def __init__(self, model: nn.Module, config: TrainingConfig, *, progress: bool = True) -> None:
        check_config_type(config, TrainingConfig)  # whose values were checked when it was built
        if not isinstance(model, nn.Module) or not callable(getattr(model, "loss", None)):
            raise TypeError(f"model must be an nn.Module with a loss method, got {type(model).__name__}")
        self.model, self.config, self.progress = model, config, progress
        self.precision = config.precision  # resolved on the data's device when training starts
        params = [p for p in model.parameters() if p.requires_grad]
        adam = torch.optim.AdamW if config.weight_decay > 0 else torch.optim.Adam
        self.optimizer = adam(params, lr=config.learning_rate, weight_decay=config.weight_decay, fused=True)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=config.lr_decay)
        self.ema: nn.Module = copy.deepcopy(model).requires_grad_(False) if config.ema_decay > 0 else model
        self.epoch, self.step, self.train_seconds, self.skipped_steps = 0, 0, 0.0, 0
        self.grad_norm_mean: torch.Tensor | float = 0.0  # running mean of accepted steps' norms (0: none yet)
        self.history: dict[str, list[float]] = {}
        # the evaluated EMA weights with the lowest validation loss so far: epoch, loss, state_dict
        self.best: dict[str, Any] | None = None
        self._validation: tuple[torch.Tensor, ...] = ()
        self._loss_takes_rows = "rows" in inspect.signature(model.loss).parameters

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs besides the model's weights (the EMA weights included)."""
        rng: dict[str, Any] = {"cpu": torch.get_rng_state()}  # and, where present, CUDA's
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not self.model else None, "epoch": self.epoch,
                "step": self.step, "train_seconds": self.train_seconds, "skipped_steps": self.skipped_steps,
                "grad_norm_mean": float(self.grad_norm_mean), "history": self.history, "rng": rng,
                "best": self.best}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state written by :meth:`state_dict` (the model's weights are loaded separately)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("ema") is not None and self.ema is not self.model:
            self.ema.load_state_dict(state["ema"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.grad_norm_mean = float(state.get("grad_norm_mean", 0.0))
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.best = state.get("best")
        torch.set_rng_state(state["rng"]["cpu"].cpu())
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])

    def adopt_optimizer_settings(self, previous: TrainingConfig) -> list[str]:
        """Adopt this config's optimizer settings where they differ from ``previous``; the changes."""
        cfg, groups = self.config, self.optimizer.param_groups
        changed = [f"{k} {getattr(previous, k)} -> {getattr(cfg, k)}" for k in ("learning_rate", "lr_decay", "weight_decay")
                   if getattr(previous, k) != getattr(cfg, k)]  # fmt: skip
        if not changed:
            return []
        lr = cfg.learning_rate * cfg.lr_decay**self.epoch
        for group in groups:
            group.update(initial_lr=cfg.learning_rate, lr=lr, weight_decay=cfg.weight_decay)
            if "decoupled_weight_decay" in group:  # Adam's state loaded into AdamW, or back
                group["decoupled_weight_decay"] = cfg.weight_decay > 0
        self.scheduler.base_lrs = [cfg.learning_rate] * len(groups)
        self.scheduler._last_lr = [lr] * len(groups)
        self.scheduler.gamma = cfg.lr_decay
        return changed

    def fit(
        self,
        data: torch.Tensor,
        *,
        labels: torch.Tensor | None = None,
        evaluate: Evaluate | None = None,
        on_checkpoint: Checkpoint | None = None,
        then_seconds: float = 0.0,
    ) -> None:
        """Train from ``self.epoch`` up to ``config.epochs`` on ``data (N, D)`` (and ``labels (N,)``); after a
        Ctrl-C, checkpoint at the end of the epoch and raise KeyboardInterrupt; a non-finite loss is a
        TrainingError. The time left, logged after one epoch, adds ``then_seconds`` (e.g. of sampling)."""
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._check_data(data)
        if self.epoch == 0:
            _warn_unstandardised(self.model, data)
        cfg, name = self.config, type(self.model).__name__
        if self.epoch >= cfg.epochs:
            log.warning("nothing to train: the model has already been trained for %d epochs and training.epochs "
                        "(--epochs) is %d; raise it to train longer", self.epoch, cfg.epochs)  # fmt: skip
            self.model.eval(), self.ema.eval()
            return
        data, labels = self._hold_out_validation(data, labels)
        self.precision = self._resolve_precision(data.device)
        loss = self._loss_function(data)
        loss_fn = distributed.data_parallel(self.model, loss)
        bar = tqdm(total=cfg.epochs, initial=self.epoch, desc=f"train {name}", unit="epoch",
                   disable=not self.progress, dynamic_ncols=True)  # fmt: skip
        interrupt = _DeferredInterrupt(math.ceil(len(data) / min(cfg.batch_size, len(data))))
        self.model.train()
        # The time left is estimated after the first epoch, or the second where the first compiled the loss.
        estimate_at = self.epoch + (1 if loss == self.model.loss else 2)
        opening: list[float] = []  # this call's first epochs' seconds, which include any compilation
        try:
            # log lines go through the bar's writer: each on its own line, in a terminal or a log file
            with logging_redirect_tqdm() if self.progress else contextlib.nullcontext(), \
                    acceleration.deferring_threads(loss != self.model.loss):  # fmt: skip
                while self.epoch < cfg.epochs:
                    record = self._train_epoch(data, loss_fn, interrupt, labels)
                    self._end_epoch(record, evaluate, data.device)
                    opening += [record["seconds"]] if self.epoch <= estimate_at else []
                    if self.epoch == estimate_at and self.epoch < cfg.epochs:
                        self._log_time_left(record["seconds"], then_seconds)
                    if acceleration.threads_offered() and self.epoch > estimate_at:
                        self._take_threads_if_worth_it(
                            record["seconds"], sum(opening) - len(opening) * record["seconds"]
                        )
                    _show_epoch(bar, record, interrupt.steps_per_epoch)
                    self._checkpoint(on_checkpoint, interrupt.agreed)
            self._log_skipped_steps()
        finally:
            self.optimizer.__dict__.pop("found_inf", None)
            interrupt.restore()
            bar.close()
            self.model.eval(), self.ema.eval()

    def _hold_out_validation(
        self, data: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The rows to train on; ``validation_fraction`` of ``data`` (a draw fixed by the training seed, the
        same in every process and on resuming) is set aside in ``self._validation`` to choose the kept
        weights."""
        n = round(self.config.validation_fraction * len(data))
        self._validation = ()
        if n == 0 or n >= len(data):
            return data, labels
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(self.config.seed))
        held, kept = order[:n].to(data.device), order[n:].to(data.device)
        self._validation = (data[held],) if labels is None else (data[held], labels[held])
        if self.epoch == 0:
            log.info("training on %d rows; %d (training.validation_fraction %g) choose the epoch whose EMA "
                     "weights are kept", len(kept), n, self.config.validation_fraction)  # fmt: skip
        return data[kept], None if labels is None else labels[kept]

    @torch.no_grad()
    def _validation_loss(self) -> float:
        """The EMA model's mean loss over the validation rows, in chunks (its training loss's units)."""
        chunks = zip(*(t.split(65536) for t in self._validation), strict=True)
        total = sum(float(self.ema.loss(*chunk)) * len(chunk[0]) for chunk in chunks)
        return total / len(self._validation[0])

    def _keep_best(self, record: dict[str, float]) -> None:
        """Score the EMA weights on the validation rows, remember the best, and after the last epoch put
        the best back into ``self.ema`` (a late divergence then costs nothing; docs/speed.md)."""
        record["validation_loss"] = loss = self._validation_loss()
        if math.isfinite(loss) and (self.best is None or loss < self.best["loss"]):
            state = {k: v.detach().clone() for k, v in self.ema.state_dict().items()}
            self.best = {"epoch": self.epoch, "loss": loss, "ema": state}
        if self.epoch == self.config.epochs and self.best is not None and self.best["epoch"] != self.epoch:
            self.ema.load_state_dict(self.best["ema"])
            log.info("kept the EMA weights of epoch %d, whose validation loss %.4f is the lowest (epoch %d: "
                     "%.4f; training.validation_fraction)", self.best["epoch"], self.best["loss"], self.epoch,
                     loss)  # fmt: skip

    def _take_threads_if_worth_it(self, epoch_seconds: float, compile_seconds: float) -> None:
        """Take the threads offered while a compiled loss trains where the epochs left save more than
        compiling it again costs: more threads make an epoch about a quarter shorter on a CPU (2 threads
        for 1; docs/speed.md), and a new thread count compiles its graphs again."""
        left_seconds = (self.config.epochs - self.epoch) * epoch_seconds
        if 0.25 * left_seconds > compile_seconds:
            threads = acceleration.take_offered_threads()
            log.info("training on %d more thread(s) from epoch %d: compiling the loss for them takes about %s",
                     threads, self.epoch + 1, format_duration(compile_seconds))  # fmt: skip

    def _resolve_precision(self, device: torch.device) -> str:
        """``training.precision`` resolved for ``device``; ``auto`` says in the log what it chose."""
        cfg, precision = self.config, acceleration.resolve_precision(self.config.precision, device)
        if cfg.precision == "auto" and precision == "bfloat16":
            log.info("training in bfloat16, which this %s computes natively (training.precision: auto; "
                     "--precision float32 to train in float32)", device.type.upper())  # fmt: skip
        elif cfg.precision == "auto":
            log.info("training in float32: this %s does not compute bfloat16 natively (training.precision: "
                     "auto)", device.type.upper())  # fmt: skip
        return precision

    def _log_time_left(self, epoch_seconds: float, then_seconds: float) -> None:
        left = self.config.epochs - self.epoch
        training, then = left * epoch_seconds, ""
        if then_seconds:
            both = format_duration(training + then_seconds)
            then = f", then about {format_duration(then_seconds)} of sampling ({both} for both)"
        log.info("training: %d epochs left, about %s at %s per epoch%s", left,
                 format_duration(training), format_duration(epoch_seconds), then)  # fmt: skip

    def _log_skipped_steps(self) -> None:
        """Say how many steps were skipped as spikes; over 1% is more than rare spikes: a warning."""
        if self.skipped_steps:
            say = log.warning if self.skipped_steps > 0.01 * self.step else log.info
            say("skipped %d of %d steps, each with a gradient norm over %g times the running mean "
                "(training.skip_spikes; 0 turns it off; per epoch: the history's skipped_steps)",
                self.skipped_steps, self.step, self.config.skip_spikes)  # fmt: skip

    def _check_data(self, data: torch.Tensor) -> None:
        """``data`` must be a non-empty, finite ``(N, D)`` tensor the model takes."""
        if not isinstance(data, torch.Tensor) or data.dim() != 2:
            shape = tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
            raise ValueError(f"the training data must be a tensor of shape (N, D), got {shape}")
        dim, standardize = getattr(self.model, "dim", None), getattr(self.model, "standardize", None)
        if dim is not None and data.shape[1] != dim:
            raise ValueError(f"the training data have {data.shape[1]} columns but the model takes {dim}")
        if standardize is not None and data.dtype != standardize.mean.dtype:
            dtype = standardize.mean.dtype
            raise ValueError(f"the training data are {data.dtype} but the model computes in {dtype}; convert "
                             f"them with .to({dtype})")  # fmt: skip
        if data.shape[0] == 0:
            raise TrainingError("no training data: the training split is empty")
        finite = torch.isfinite(data).all(dim=1)
        if not bool(finite.all()):
            rows = (~finite).nonzero().flatten()
            raise TrainingError(f"the training data hold non-finite values (nan or inf) in {len(rows)} of "
                                f"{data.shape[0]} rows, the first at row {int(rows[0])}")  # fmt: skip

    def _loss_function(self, data: torch.Tensor) -> Loss:
        """The model's loss, compiled where ``training.compile`` says so (judged on the whole run)."""
        cfg, eager, points = self.config, self.model.loss, self.config.epochs * len(data)
        if not worth_compiling_training(cfg.compile, self.model, data.device, points, self.precision):
            enough = acceleration.TRAINING_COMPILE_WORTHWHILE_POINTS  # would a long run compile?
            if cfg.compile == "auto" and worth_compiling_training("auto", self.model, data.device, enough,
                                                                  self.precision):  # fmt: skip
                log.info("training eagerly: compiling (training.compile: auto) pays from %.2g training points in "
                         "the whole run, and this run passes %.2g (epochs x training points); --compile forces it",
                         enough, points)  # fmt: skip
            return eager
        compiled = compile_function(eager, data.device)
        if compiled is eager:
            return eager
        log.info("training with a compiled loss (training.compile: %s); the first epoch compiles it, which "
                 "takes up to a minute", cfg.compile)  # fmt: skip
        shapes: list[int] = []

        def loss_fn(batch: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            # one graph, for the first batch's size: an epoch's last, smaller batch runs eagerly rather
            # than compile a second graph (about 20 s on a 2-core CPU) for one step in 30
            shapes[:] = shapes or [len(batch)]
            return (compiled if len(batch) == shapes[0] else eager)(batch, *args, **kwargs)

        return loss_fn

    def _train_epoch(
        self, data: torch.Tensor, loss_fn: Loss, interrupt: _DeferredInterrupt, labels: torch.Tensor | None
    ) -> dict[str, float]:
        """One pass over ``data`` in a random order; returns the epoch's history record."""
        n, steps = data.shape[0], interrupt.steps_per_epoch
        batch_size = min(self.config.batch_size, n)
        start = interrupt.epoch_start = time.perf_counter()
        self._nonfinite = torch.zeros((), device=data.device)  # see _step
        self.grad_norm_mean = torch.as_tensor(self.grad_norm_mean, dtype=torch.float32, device=data.device)
        order = torch.randperm(n, device=data.device)
        stats = []
        for i, rows in enumerate(order.split(batch_size)):
            interrupt.steps_done = i
            stats.append(self._step(data[rows], loss_fn, None if labels is None else labels[rows]))
        stacked = torch.stack(stats)
        losses, interrupt.agreed = distributed.agree(stacked[:, 0], interrupt.requested)
        losses, grad_norms, skipped = torch.stack([losses, stacked[:, 1], stacked[:, 2]]).tolist()  # one wait
        self._check_finite(losses, grad_norms)
        self.skipped_steps += int(sum(skipped))
        self.scheduler.step()
        self.epoch += 1
        seconds = time.perf_counter() - start
        self.train_seconds += seconds
        mean_loss = sum(loss * min(batch_size, n - i * batch_size) for i, loss in enumerate(losses)) / n
        return {"epoch": self.epoch, "loss": mean_loss, "lr": self.optimizer.param_groups[0]["lr"],
                "grad_norm": sum(grad_norms) / steps, "skipped_steps": sum(skipped), "seconds": seconds}  # fmt: skip

    def _step(self, batch: torch.Tensor, loss_fn: Loss, labels: torch.Tensor | None) -> torch.Tensor:
        """One optimisation step on ``batch``; returns ``[loss, gradient norm, skipped]``, left on the device."""
        with acceleration.autocast(batch.device, self.precision):
            loss = self._batch_loss(batch, loss_fn, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(grads)
        torch._foreach_mul_(
            grads, torch.clamp(self._gradient_limit() / (grad_norm + 1e-6), max=1.0)
        )  # clipped
        share = loss.detach().float() / distributed.world_size()  # summed over processes: the batch's
        stats = torch.stack([share, grad_norm.detach().float()])
        # 1 from the epoch's first non-finite step on, or for a spike: the fused Adam step then updates nothing
        self._nonfinite = torch.maximum(self._nonfinite, (~torch.isfinite(stats).all()).float())
        spike = self._gradient_spike(stats[1])
        self.optimizer.found_inf = torch.maximum(self._nonfinite, spike)
        self.optimizer.step()
        self.step += 1
        self._update_ema()
        return torch.cat([stats, spike[None]])

    def _gradient_limit(self) -> float | torch.Tensor:
        """The norm a step's gradient is scaled down to: ``grad_clip``, and from step 100 on at most
        ``adaptive_clip`` times the running mean of the norms, so a rare point the flow throws far out
        still corrects the model, at the size of an ordinary step, where one full-size step could undo
        many (docs/speed.md)."""
        limit, factor, mean = (
            self.config.grad_clip or math.inf,
            self.config.adaptive_clip,
            self.grad_norm_mean,
        )
        if factor and self.step >= 100:
            return torch.where(mean > 0, torch.clamp(factor * mean, max=limit), limit)
        return limit

    def _gradient_spike(self, grad_norm: torch.Tensor) -> torch.Tensor:
        """1 where ``grad_norm`` is a spike to skip (``skip_spikes``), else 0; updates the running mean. It
        averages the first 100 steps' norms, never clipped or skipped (a new model's norms grow tenfold as
        it starts to learn), then follows about the last 100; it takes every finite norm capped at the
        lower of the two thresholds, so a lasting rise of the norms lifts it (by up to 9% a step with the
        factor 10, 2% with 3) until the steps are whole again."""
        mean, factor = self.grad_norm_mean, self.config.skip_spikes
        spike = (grad_norm > factor * mean) & (mean > 0) & (factor > 0) & (self.step >= 100)
        cap = min(f for f in (factor, self.config.adaptive_clip, math.inf) if f > 0) * mean
        capped = torch.where((grad_norm > cap) & (mean > 0) & (self.step >= 100), cap, grad_norm)
        updated = mean + max(0.01, 1 / (self.step + 1)) * (capped - mean)
        self.grad_norm_mean = torch.where(torch.isfinite(grad_norm), updated, mean)
        return spike.float()

    def _batch_loss(self, batch: torch.Tensor, loss_fn: Loss, labels: torch.Tensor | None) -> torch.Tensor:
        """The loss of this process's shard of ``batch``, weighted so that DDP's mean is the batch's."""
        given, world = () if labels is None else (labels,), distributed.world_size()
        if world == 1:
            return loss_fn(batch, *given)
        rows = distributed.shard(len(batch))
        weight = (rows.stop - rows.start) * world / len(batch)
        if weight == 0:  # fewer rows than processes: this one joins the gradient average with weight 0
            rows = slice(0, 1)
        if self._loss_takes_rows:
            return loss_fn(batch, *given, rows=rows) * weight
        return loss_fn(batch[rows], *(y[rows] for y in given)) * weight

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is self.model:
            return
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        params = [p.detach() for p in self.model.parameters()]
        torch._foreach_lerp_(list(self.ema.parameters()), params, 1.0 - decay)
        for ema_buffer, buffer in zip(self.ema.buffers(), self.model.buffers(), strict=True):
            ema_buffer.copy_(buffer)

    def _check_finite(self, losses: list[float], grad_norms: list[float]) -> None:
        """A TrainingError naming the epoch's first step with a non-finite loss or gradient norm."""
        for i, (loss, grad_norm) in enumerate(zip(losses, grad_norms, strict=True)):
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                what = "loss" if not math.isfinite(loss) else "gradient norm"
                raise TrainingError(f"non-finite {what} at epoch {self.epoch + 1}, step {i + 1} of {len(losses)} "
                                    f"(learning rate {self.optimizer.param_groups[0]['lr']:.3g}); try a lower --lr, a "
                                    "smaller training.grad_clip, or check the data's scale for outliers")  # fmt: skip

    def _end_epoch(self, record: dict[str, float], evaluate: Evaluate | None, device: torch.device) -> None:
        """Evaluate the EMA model where due, and append ``record`` to the history."""
        due = self.epoch % self.config.eval_every == 0 or self.epoch == self.config.epochs
        if due and (evaluate is not None or self._validation):
            self.ema.eval()
            # a copy of the RNG state: the training stream is the same for any eval_every
            with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
                if evaluate is not None:
                    record.update(evaluate(self.ema))
                if self._validation:
                    torch.manual_seed(self.config.seed)  # a stochastic loss (DDPM): the same noise each time
                    self._keep_best(record)
        self.model.train()  # the EMA model is the model itself where ema_decay is 0
        n = len(self.history.get("epoch", []))
        for key in set(self.history) | set(record):
            self.history.setdefault(key, [math.nan] * n).append(float(record.get(key, math.nan)))

    def _checkpoint(self, on_checkpoint: Checkpoint | None, interrupted: bool) -> None:
        """Call ``on_checkpoint`` where due; after a Ctrl-C, then stop with KeyboardInterrupt."""
        every, last = self.config.checkpoint_every, self.epoch == self.config.epochs
        if on_checkpoint is not None and (last or interrupted or (every and self.epoch % every == 0)):
            on_checkpoint(self)
        if interrupted and not last:
            distributed.barrier()  # the other processes wait for rank 0's checkpoint
            log.warning("interrupted after epoch %d; a resumable checkpoint was saved", self.epoch)
            raise KeyboardInterrupt
