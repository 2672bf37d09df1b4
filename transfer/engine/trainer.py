"""The training loop: mixed precision, channels_last, torch.compile, gradient accumulation, DDP, checkpoints.

It knows nothing of any dataset: it takes datasets of (image tensor, label, index), an Objective and a recipe.
Reproducibility: before every optimizer step the RNG is seeded from (seed, step, rank), and the data order
and augmentation are pure functions of (seed, epoch, index) (data/loader.py); so a run resumed from any
checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data.loader import EpochBatchSampler, eval_loader, make_loader, sample_seed
from ..data.sources import DataError
from ..errors import ConfigError, TransferError
from ..eval.classify import autocast_for, evaluate
from ..models.weights import save_weights
from ..recipe import Recipe, save_recipe
from ..runs import RunDir
from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import Dist, all_reduce_sum, any_true
from .objective import Objective
from .observe import Observer
from .optim import Schedules, bn_momentum_for, make_optimizer

log = logging.getLogger("transfer")


def seed_step(seed: int, device: torch.device) -> None:
    """Seed the generators this step draws from (mixup on the CPU, DropBlock on the device)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


Validate = Callable[..., dict]


def classification_validation(model: nn.Module, loader, device: torch.device, recipe: Recipe, dist: Dist) -> dict:
    return evaluate(model, loader, device, precision=recipe.runtime.precision,
                    channels_last=recipe.runtime.channels_last, topk=recipe.eval.topk, dist=dist)


class NonFiniteLoss(TransferError):
    """The loss became NaN or infinite."""


@dataclass
class TrainState:
    epoch: int = 0
    micro_batch: int = 0  # micro-batches consumed in the current epoch
    step: int = 0  # optimizer steps taken
    best: float | None = None
    best_epoch: int | None = None


class Trainer:
    def __init__(self, model: nn.Module, objective: Objective, train_set, val_set, recipe: Recipe,
                 run: RunDir, dist: Dist, *, weights_metadata: dict | None = None,
                 lr_scale: dict[str, float] | None = None, bn_momentum: float | None = None,
                 validate: Validate | None = None, select: str = "top1"):
        self.model = model  # the plain module: its state is what gets saved
        self.objective = objective
        self.train_set, self.val_set = train_set, val_set
        self.recipe, self.run, self.dist = recipe, run, dist
        self.weights_metadata = weights_metadata or {}
        self.lr_scale = lr_scale
        self.bn_momentum = bn_momentum
        # validation: a function of (model, loader, device, recipe, dist) -> metrics; `select` names the
        # metric (higher is better) that picks the best weights
        self.validate = validate or classification_validation
        self.select = select
        self.state = TrainState()
        self._stop: str | None = None

    # ------------------------------------------------------------------------------------------ setup
    def _micro_batch(self) -> int:
        o = self.recipe.optim
        per = self.dist.world * o.accumulation
        if o.batch_size % per:
            raise ConfigError(f"optim.batch_size={o.batch_size} must be divisible by processes x accumulation "
                              f"= {self.dist.world} x {o.accumulation}; change --batch-size or optim.accumulation")
        return o.batch_size // per

    def _prepare_model(self) -> nn.Module:
        rt = self.recipe.runtime
        dev = self.dist.device
        self.model.to(dev)
        if rt.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.bn_momentum is not None:
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.momentum = self.bn_momentum
        net: nn.Module = self.model
        if self.dist.enabled:
            if rt.sync_bn:
                if dev.type != "cuda":
                    raise ConfigError("runtime.sync_bn needs CUDA devices (PyTorch's SyncBatchNorm); set it false")
                net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
            net = nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
        if rt.compile:
            net = torch.compile(net)
        return net

    def _install_signals(self):
        def handler(signum, frame):
            self._stop = signal.Signals(signum).name

        previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                previous[sig] = signal.signal(sig, handler)
        return previous

    # ------------------------------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, optimizer, scaler) -> None:
        if not self.dist.is_main:
            return
        save_checkpoint(self.run.checkpoint, {
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "train": dataclasses.asdict(self.state),
            "recipe_hash": self.recipe.hash(),
        })

    def _resume(self, optimizer, scaler) -> None:
        ckpt = load_checkpoint(self.run.checkpoint)
        if ckpt.get("recipe_hash") != self.recipe.hash():
            log.warning("resuming %s with a recipe that differs from the one it started with", self.run.path)
        self.model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState(**ckpt["train"])

    def _sync_buffers(self) -> None:
        """BN statistics differ per process without SyncBN: take rank 0's before evaluating or saving."""
        if self.dist.enabled:
            import torch.distributed as tdist

            for b in self.model.buffers():
                tdist.broadcast(b, 0)

    def _save_weights(self, which: str, metrics: dict) -> Path | None:
        if not self.dist.is_main:
            return None
        return save_weights(self.model, self.run.weights(which), recipe_hash=self.recipe.hash(),
                            stage=self.recipe.stage, epoch=self.state.epoch, step=self.state.step,
                            metrics={k: v for k, v in metrics.items() if isinstance(v, int | float)},
                            **self.weights_metadata)

    # ------------------------------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False) -> dict:
        r, d = self.recipe, self.dist
        micro = self._micro_batch()
        accum = r.optim.accumulation
        sampler = EpochBatchSampler(len(self.train_set), micro, seed=r.runtime.seed, rank=d.rank, world=d.world,
                                    accumulation=accum)
        steps_per_epoch = sampler.steps_per_epoch
        if steps_per_epoch == 0:
            raise DataError(f"the training split has {len(self.train_set)} images, fewer than one batch of "
                            f"{r.optim.batch_size}; lower optim.batch_size (--batch-size)")
        schedules = Schedules.from_recipe(r.optim, r.schedule, r.regularization, steps_per_epoch)
        if r.optim.bn_momentum_rule:
            self.bn_momentum = bn_momentum_for(steps_per_epoch)
        net = self._prepare_model()
        optimizer = make_optimizer(self.model, r.optim, self.lr_scale)
        dev = d.device
        scaler = torch.amp.GradScaler(dev.type, enabled=r.runtime.precision == "fp16")
        self.objective.to(dev)
        if resume:
            self._resume(optimizer, scaler)
        elif d.is_main:
            save_recipe(r, self.run.recipe)
            self.run.update_info(stage=r.stage, created=time.time(), recipe_hash=r.hash(), status="running",
                                 model=getattr(self.model, "arch", None))
        observer = None
        if d.is_main:
            observer = Observer(self.run.path, total_steps=schedules.total_steps, steps_per_epoch=steps_per_epoch,
                                epochs=r.schedule.epochs, log_every=r.output.log_every_steps,
                                tensorboard=r.output.tensorboard, start_step=self.state.step)
            if resume:
                observer.truncate_after(self.state.step)
                observer.message("resumed %s at epoch %d, step %d", self.run.path, self.state.epoch + 1,
                                 self.state.step)
            self.run.update_info(status="running")
        val = eval_loader(self.val_set, micro, r.runtime.workers, rank=d.rank, world=d.world, persistent=True) \
            if self.val_set is not None else None
        previous = self._install_signals()
        status = "finished"
        last_val: dict = {}
        try:
            status, last_val = self._loop(net, optimizer, scaler, sampler, schedules, observer, val, accum)
        except BaseException:
            if d.is_main:
                self.run.update_info(status="failed")
            if observer is not None:
                observer.close(plots=False)
            raise
        finally:
            for sig, h in previous.items():
                signal.signal(sig, h)
        summary = {"status": status, "epochs": self.state.epoch, "steps": self.state.step,
                   **{f"val_{k}": v for k, v in last_val.items() if isinstance(v, int | float)}}
        if self.state.best is not None:
            summary[f"best_{self.select}"] = self.state.best
            summary["best_epoch"] = self.state.best_epoch
        if d.is_main:
            summary["run"] = str(self.run.path)
            self.run.update_info(status=status, best=self.state.best, best_metric=self.select,
                                 best_epoch=self.state.best_epoch, steps=self.state.step, epochs_done=self.state.epoch)
            observer.close(summary, plots=r.output.plots)
        return summary

    def _loop(self, net, optimizer, scaler, sampler, schedules, observer, val, accum) -> tuple[str, dict]:
        r, d, st = self.recipe, self.dist, self.state
        dev = d.device
        epochs = r.schedule.epochs
        micro_per_epoch = sampler.steps_per_epoch * accum
        ckpt_every = r.output.checkpoint_every_steps
        last_val: dict = {}
        net.train()
        loader = make_loader(self.train_set, sampler, r.runtime.workers, pin_memory=dev.type == "cuda",
                             persistent=True)
        while st.epoch < epochs:
            sampler.set_epoch(st.epoch, st.micro_batch)
            bad_count, bad_first = 0, []
            loss_sum = torch.zeros((), device=dev)
            for batch in loader:
                a = st.micro_batch % accum
                if a == 0:
                    seed_step(sample_seed(r.runtime.seed, st.step, d.rank), dev)
                    values = schedules.apply(st.step, optimizer, self.model)
                    loss_sum.zero_()
                st.micro_batch += 1
                if batch.bad:
                    bad_count += len(batch.bad)
                    bad_first += [f"{b.ident} ({b.reason})" for b in batch.bad[:5 - len(bad_first)]]
                    if r.data.on_bad_image == "fail":
                        b = batch.bad[0]
                        raise DataError(f"unreadable image {b.ident}: {b.reason} (data.on_bad_image=fail; "
                                        f"set it to skip to leave such images out)")
                last = a == accum - 1
                if len(batch):
                    loss = self._forward_backward(net, batch, scaler, accum, last)
                    loss_sum += loss.detach() / accum
                if not last:
                    continue
                self._optimizer_step(net, optimizer, scaler)
                st.step += 1
                if st.micro_batch == micro_per_epoch:
                    st.epoch, st.micro_batch = st.epoch + 1, 0
                stop = any_true(self._stop is not None, d)
                if st.step % r.output.log_every_steps == 0 or st.step == schedules.total_steps:
                    # the logged loss is the mean over all processes (every process joins the reduction)
                    loss_mean = float(all_reduce_sum(loss_sum.clone(), d)) / d.world
                    if observer is not None:
                        observer.train_step(st.step, st.epoch if st.micro_batch else st.epoch - 1,
                                            r.optim.batch_size, {"loss": loss_mean, **values})
                if stop or (ckpt_every and st.step % ckpt_every == 0):
                    self._save_checkpoint(optimizer, scaler)
                if stop:
                    if observer is not None:
                        observer.message("stopped by %s at step %d: checkpoint written to %s; continue with "
                                         "--resume --out %s", self._stop or "another process", st.step,
                                         self.run.checkpoint, self.run.path, warning=True)
                    return "preempted", last_val
                if st.micro_batch == 0:
                    break  # epoch complete
            # ---- end of epoch
            counts = all_reduce_sum(torch.tensor([float(bad_count)], device=dev), d)
            if counts.item() and observer is not None:
                observer.message("epoch %d: skipped %d unreadable images (first: %s)", st.epoch, int(counts.item()),
                                 "; ".join(bad_first), warning=True)
            self._save_checkpoint(optimizer, scaler)
            if val is not None and (st.epoch % r.eval.every_epochs == 0 or st.epoch == epochs):
                self._sync_buffers()
                last_val = self.validate(self.model, val, dev, r, d)
                net.train()
                if observer is not None:
                    observer.evaluation(st.step, st.epoch - 1, last_val)
                score = last_val.get(self.select)
                if score is not None and (st.best is None or score > st.best):
                    st.best, st.best_epoch = score, st.epoch
                    self._save_weights("best", last_val)
                    self._save_checkpoint(optimizer, scaler)  # the best metric is part of the state
        self._sync_buffers()
        self._save_weights("final", last_val)
        return "finished", last_val

    def _forward_backward(self, net, batch, scaler, accum: int, last: bool) -> torch.Tensor:
        r, d = self.recipe, self.dist
        x = batch.images.to(d.device, non_blocking=True)
        if r.runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = batch.labels.to(d.device, non_blocking=True)
        x, targets = self.objective.prepare(x, y, batch.indices)
        # DDP: gradients are all-reduced only on the last micro-batch of an optimizer step.
        sync = last or not isinstance(net, nn.parallel.DistributedDataParallel)
        ctx = net.no_sync() if not sync else contextlib.nullcontext()
        with ctx:
            with autocast_for(d.device, r.runtime.precision):
                logits = net(x)
            loss, _ = self.objective.loss(logits, targets)
            bad = not bool(torch.isfinite(loss))
            if any_true(bad, d):
                last_good = (f"{self.run.checkpoint} (step {self._checkpoint_step()})"
                             if self.run.checkpoint.is_file() else "none yet")
                raise NonFiniteLoss(f"loss is not finite at step {self.state.step + 1} (epoch "
                                    f"{self.state.epoch + 1}); nothing was overwritten; last good checkpoint: "
                                    f"{last_good}; lower optim.lr or use runtime.precision fp32/bf16")
            scaler.scale(loss / accum).backward()
        return loss

    def _checkpoint_step(self) -> int | str:
        try:
            return load_checkpoint(self.run.checkpoint)["train"]["step"]
        except TransferError:
            return "unreadable"

    def _optimizer_step(self, net, optimizer, scaler) -> None:
        clip = self.recipe.optim.grad_clip
        if clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
