"""The training loop: mixed precision, channels_last, torch.compile, gradient accumulation, DDP, checkpoints.

It knows nothing of any dataset or task: it takes datasets of (image tensor, label, index), an Objective, a
validation function with the metric that picks the best weights, and the settings it needs (TrainerSettings,
the recipe's optimisation, schedule, regularisation, runtime and output sections).
Reproducibility: before every optimizer step the RNG is seeded from (seed, "step", step, rank), and the data
order and augmentation are pure functions of (seed, epoch, index) (data/loader.py, runtime.derive_seed); so a
run resumed from any checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data.loader import EpochBatchSampler, eval_loader, make_loader
from ..data.mixing import BatchLayout, reads_per_sample
from ..data.sources import DataError
from ..errors import ConfigError, TransferError
from ..files import fault_point
from ..models.layers import commit_statistics, defer_statistics, set_group_size
from ..models.weights import save_weights
from ..recipe import OptimSection, OutputSection, RegularizationSection, RuntimeSection, ScheduleSection
from ..runs import RunDir
from ..runtime import Dist, all_reduce_sum, any_true, autocast_for, derive_seed
from .checkpoint import load_checkpoint, save_checkpoint
from .ema import WeightEma
from .objective import Objective
from .observe import Observer, read_metrics
from .optim import Schedules, bn_momentum_for, make_optimizer
from .signals import StopSignals

log = logging.getLogger("transfer")


def seed_step(seed: int, device: torch.device) -> None:
    """Seed the generators this step draws from (mixup on the CPU, DropBlock on the device)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


def validation_epochs(epochs: int, every: int, fine_from: float = 1.0) -> list[int]:
    """The epochs after which a run validates, as the official loop schedules its evaluations: every `every`
    epochs and after the last; and after every epoch of each `every`-epoch block that ends after
    int(epochs * fine_from), its ratio_fine_eval (nets/run_loop_classification.py:461-465,
    utils/config_utils.py:81-95): 100 epochs, every 10, fine_from 0.9 validate after 10, 20, ..., 90, 91, ..., 100.
    """
    start = int(epochs * fine_from)
    ends = (min(-(-e // every) * every, epochs) for e in range(1, epochs + 1))
    return [e for e, end in enumerate(ends, 1) if e == end or end > start]


# validation: (model, loader, device, dist) -> metrics, each process evaluating its shard of the loader
Validate = Callable[[nn.Module, object, torch.device, Dist], dict]


@dataclass(frozen=True)
class TrainerSettings:
    """What the trainer reads of a recipe: nothing of its data, model, augmentation or task."""

    optim: OptimSection
    schedule: ScheduleSection
    regularization: RegularizationSection
    runtime: RuntimeSection
    output: OutputSection
    eval_every_epochs: int = 1
    on_bad_image: str = "skip"  # the loader's policy (data.on_bad_image): skip and count, or fail
    recipe_hash: str = ""  # kept in checkpoints and weights sidecars
    stage: str = "pretrain"
    eval_fine_from: float = 1.0  # validate every epoch of the blocks that end after this fraction of the epochs
    drop_last: bool = True  # the loader's policy (data.drop_last): drop each epoch's incomplete last step


class NonFiniteLoss(TransferError):
    """The loss became NaN or infinite."""


@dataclass
class TrainState:
    """Everything a resume needs beyond the weights and the optimizer: a checkpoint stores it whole."""
    epoch: int = 0  # epochs trained
    micro_batch: int = 0  # micro-batches consumed in the current epoch
    step: int = 0  # optimizer steps taken
    best: float | None = None
    best_epoch: int | None = None
    closed: int = 0  # epochs whose end (validation, best weights) is done: a resume closes the others first
    last_val: dict = dataclasses.field(default_factory=dict)  # the latest validation, for the final sidecar
    records: int | None = None  # rows of metrics.jsonl written (None: a checkpoint from before this field)
    bad: int = 0  # unreadable images skipped in the current epoch (this process), and the first few
    bad_first: list = dataclasses.field(default_factory=list)
    ema_best: float | None = None  # the weight EMA's best validation (regularization.ema), and its epoch
    ema_best_epoch: int | None = None


class Trainer:
    def __init__(self, model: nn.Module, objective: Objective, train_set, val_set, settings: TrainerSettings,
                 run: RunDir, dist: Dist, *, validate: Validate, select: str, weights_metadata: dict | None = None,
                 lr_scale: dict[str, float] | None = None, bn_momentum: float | None = None,
                 signals: StopSignals | None = None):
        self.model = model  # the plain module: its state is what gets saved
        self.objective = objective
        self.train_set, self.val_set = train_set, val_set
        self.settings, self.run, self.dist = settings, run, dist
        self.weights_metadata = weights_metadata or {}
        self.lr_scale = lr_scale
        self.bn_momentum = bn_momentum
        self.validate = validate
        self.select = select  # the metric of `validate` (higher is better) that picks the best weights
        self.state = TrainState()
        self.signals = signals or StopSignals()
        self.ema: WeightEma | None = None
        self.layout = BatchLayout()

    # ------------------------------------------------------------------------------------------ setup
    def _micro_batch(self) -> int:
        o = self.settings.optim
        per = self.dist.world * o.accumulation
        if o.batch_size % per:
            raise ConfigError(f"optim.batch_size={o.batch_size} must be divisible by processes x accumulation "
                              f"= {self.dist.world} x {o.accumulation}; change --batch-size or optim.accumulation")
        return o.batch_size // per

    def _layout(self, micro: int) -> BatchLayout:
        """Images read per sample (mixup's pairing) and the groups of samples (runtime.group_size) of a micro-batch."""
        r = self.settings
        group = r.runtime.group_size
        if group and micro % group:
            raise ConfigError(f"runtime.group_size={group} must divide each process's micro-batch of {micro} samples "
                              f"(optim.batch_size / (processes x accumulation)); choose a divisor of {micro} or null")
        if group and r.runtime.sync_bn:
            raise ConfigError("runtime.group_size keeps BatchNorm statistics within each group, runtime.sync_bn "
                              "spans every process: set one of them")
        reads = reads_per_sample(r.regularization.mixup.pairing) if self.objective.mixup_alpha > 0 else 1
        if reads > 1 and self.dist.is_main:
            log.info("mixup pairing two_batches: each step of %d samples reads %d images, so an epoch reads the "
                     "training images %d times", r.optim.batch_size, reads * r.optim.batch_size,
                     reads * r.schedule.epoch_repeats)
        return BatchLayout(reads, group)

    def _prepare_model(self) -> nn.Module:
        rt = self.settings.runtime
        dev = self.dist.device
        self.model.to(dev)
        if rt.group_size:
            set_group_size(self.model, rt.group_size)
        if self.settings.optim.accumulation > 1:
            defer_statistics(self.model)  # BN statistics move once per optimizer step, as over that many GPUs
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
            # broadcast_buffers off: each process keeps its own BN moving averages, as each official GPU does,
            # and _sync_buffers takes their mean (DDP's default would overwrite them with rank 0's every step)
            net = nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None,
                                                      broadcast_buffers=False)
        if rt.compile:
            net = torch.compile(net)
        return net

    # ------------------------------------------------------------------------------------------ checkpoints
    def _modules_with_state(self) -> tuple[nn.Module, ...]:
        """The model and, when kept, its weight EMA: what holds BatchNorm statistics."""
        return (self.model, *([self.ema.module] if self.ema is not None else []))

    def _running_stats(self) -> list[torch.Tensor]:
        """This process's BatchNorm moving averages (the model's, then the EMA's), in a fixed order."""
        return [t for module in self._modules_with_state()
                for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                for t in (m.running_mean, m.running_var) if t is not None]

    def _save_checkpoint(self, optimizer, scaler, observer) -> None:
        per_process = None
        if self.dist.enabled:  # every process joins: each one's own BN moving averages go into the checkpoint
            import torch.distributed as tdist

            own = torch.cat([t.flatten() for t in self._running_stats()])
            per_process = [torch.empty_like(own) for _ in range(self.dist.world)]
            tdist.all_gather(per_process, own)
        if not self.dist.is_main:
            return
        self.state.records = observer.rows
        save_checkpoint(self.run.checkpoint, {
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "train": dataclasses.asdict(self.state),
            "recipe_hash": self.settings.recipe_hash,
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            # averaged only to validate and save: a resumed process continues from its own, not from the mean
            # (which would repeat an uninterrupted run only up to rounding)
            **({"bn_per_process": [t.cpu() for t in per_process]} if per_process is not None else {}),
        })

    def _restore_running_stats(self, per_process: list[torch.Tensor] | None) -> None:
        """Each process's own BN moving averages from the checkpoint; resumed with another process count, their
        mean (what the run would have saved)."""
        if per_process is None:
            return  # a one-process run's checkpoint: the model's state is its own
        flat = (per_process[self.dist.rank] if len(per_process) == self.dist.world
                else torch.stack(per_process).mean(0))
        offset = 0
        for t in self._running_stats():
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()

    def _resume(self, optimizer, scaler) -> None:
        ckpt = load_checkpoint(self.run.checkpoint)
        if ckpt.get("recipe_hash") != self.settings.recipe_hash:
            log.warning("resuming %s with a recipe that differs from the one it started with", self.run.path)
        self.model.load_state_dict(ckpt["model"])
        if self.ema is not None:
            if "ema" in ckpt:
                self.ema.load_state_dict(ckpt["ema"])
            else:  # a checkpoint from before the EMA was switched on
                log.warning("%s holds no weight EMA: it starts from the resumed weights", self.run.checkpoint)
                self.ema.load_state_dict(ckpt["model"])
        self._restore_running_stats(ckpt.get("bn_per_process"))
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState(**ckpt["train"])

    def _sync_buffers(self) -> None:
        """BN running statistics differ per process without SyncBN: each takes their mean over the processes, as
        the official multi-GPU runs read theirs (per-GPU moving averages, aggregated MEAN on read; GhostBatchNorm
        explains why the mean is exact whenever it is taken). Every other buffer is rank 0's. Called by every
        process before validating or saving weights; checkpoints keep each process's own instead."""
        if self.dist.enabled:
            import torch.distributed as tdist

            running = {id(t) for t in self._running_stats()}
            for module in self._modules_with_state():
                for b in module.buffers():
                    if id(b) in running:
                        tdist.all_reduce(b, op=tdist.ReduceOp.SUM)
                        b.div_(self.dist.world)
                    else:
                        tdist.broadcast(b, 0)

    def _save_weights(self, which: str, metrics: dict, model: nn.Module | None = None) -> Path | None:
        if not self.dist.is_main:
            return None
        return save_weights(model or self.model, self.run.weights(which), recipe_hash=self.settings.recipe_hash,
                            stage=self.settings.stage, epoch=self.state.epoch, step=self.state.step,
                            metrics={k: v for k, v in metrics.items() if isinstance(v, int | float)},
                            **self.weights_metadata)

    # ------------------------------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False) -> dict:
        """Train to the end of the schedule (or to a stop signal); resume=True continues from the checkpoint.

        Returns the summary; its status is "finished" (final weights written; run.json says "reporting": the
        stage writes plots and report next) or "preempted" (a checkpoint to resume from is written).
        """
        r, d = self.settings, self.dist
        micro = self._micro_batch()
        self.layout = self._layout(micro)
        sampler = EpochBatchSampler(len(self.train_set), micro, seed=r.runtime.seed, rank=d.rank, world=d.world,
                                    accumulation=r.optim.accumulation, repeats=r.schedule.epoch_repeats,
                                    reads=self.layout.reads, drop_last=r.drop_last)
        schedules = self._schedules(sampler.steps_per_epoch, resume)
        net, optimizer, scaler = self._build(sampler.steps_per_epoch)
        if resume:
            self._resume(optimizer, scaler)
        observer = self._observer(schedules, sampler.steps_per_epoch, resume) if d.is_main else None
        val = eval_loader(self.val_set, micro, r.runtime.workers, rank=d.rank, world=d.world, persistent=True) \
            if self.val_set is not None else None
        try:
            status = self._loop(net, optimizer, scaler, sampler, schedules, observer, val)
        except BaseException:
            if d.is_main:
                self.run.update_info(status="failed")
            if observer is not None:
                observer.close()
            raise
        if d.is_main:
            self.run.update_info(status="reporting" if status == "finished" else status, best=self.state.best,
                                 best_metric=self.select, best_epoch=self.state.best_epoch, steps=self.state.step,
                                 epochs_done=self.state.epoch)
            observer.close()
        return self.summary(status)

    def _schedules(self, steps_per_epoch: int, resume: bool) -> Schedules:
        """Learning rate and DropBlock keep-prob per step, for an epoch of `steps_per_epoch` optimizer steps."""
        r = self.settings
        if steps_per_epoch == 0:
            passes = f" ({r.schedule.epoch_repeats} passes an epoch)" if r.schedule.epoch_repeats > 1 else ""
            raise DataError(f"the training split has {len(self.train_set)} images{passes}, fewer than one batch of "
                            f"{r.optim.batch_size}; lower optim.batch_size (--batch-size) or raise "
                            f"schedule.epoch_repeats")
        if r.schedule.warmup_epochs > r.schedule.epochs and self.dist.is_main and not resume:
            log.warning("schedule.warmup_epochs=%g is longer than the run (%d epochs): the learning rate never "
                        "reaches optim.lr (it peaks at %.3g of it); shorten the warm-up", r.schedule.warmup_epochs,
                        r.schedule.epochs, r.schedule.epochs / r.schedule.warmup_epochs)
        return Schedules.from_recipe(r.optim, r.schedule, r.regularization, steps_per_epoch)

    def _build(self, steps_per_epoch: int):
        """(the network that trains: DDP- or compile-wrapped, the optimizer, the loss scaler), on the device."""
        r = self.settings
        if r.optim.bn_momentum_rule:
            self.bn_momentum = bn_momentum_for(steps_per_epoch)
        net = self._prepare_model()
        if r.regularization.ema.decay:
            self.ema = WeightEma(self.model, r.regularization.ema.decay)
        optimizer = make_optimizer(self.model, r.optim, self.lr_scale)
        scaler = torch.amp.GradScaler(self.dist.device.type, enabled=r.runtime.precision == "fp16")
        self.objective.to(self.dist.device)
        return net, optimizer, scaler

    def _observer(self, schedules: Schedules, steps_per_epoch: int, resume: bool) -> Observer:
        """Rank 0's progress, metrics.jsonl and TensorBoard; on resume the records after the checkpoint are
        dropped (they are redone), by count, or by step for a checkpoint from before the count was kept."""
        r, st = self.settings, self.state
        keep = None
        if resume:
            old = read_metrics(self.run.metrics) if self.run.metrics.is_file() else []
            keep = st.records if st.records is not None else sum(1 for row in old if row.get("step", 0) <= st.step)
        observer = Observer(self.run.path, total_steps=schedules.total_steps, steps_per_epoch=steps_per_epoch,
                            epochs=r.schedule.epochs, log_every=r.output.log_every_steps,
                            tensorboard=r.output.tensorboard, start_step=st.step, keep_rows=keep)
        if resume:
            observer.message("resumed %s at epoch %d, step %d", self.run.path, min(st.epoch + 1, r.schedule.epochs),
                             st.step)
        self.run.update_info(status="running", model=getattr(self.model, "arch", None))  # a ResNet's zoo name
        return observer

    def summary(self, status: str) -> dict:
        st = self.state
        summary = {"status": status, "epochs": st.epoch, "steps": st.step,
                   **{f"val_{k}": v for k, v in st.last_val.items() if isinstance(v, int | float)}}
        if st.best is not None:
            summary[f"best_{self.select}"] = st.best
            summary["best_epoch"] = st.best_epoch
        if st.ema_best is not None:
            summary[f"ema_best_{self.select}"] = st.ema_best
        summary["run"] = str(self.run.path)
        return summary

    def _stop_requested(self) -> bool:
        return any_true(self.signals.received is not None, self.dist)

    def _preempted(self, observer) -> str:
        if observer is not None:
            observer.message("stopped by %s at step %d: checkpoint written to %s; continue with --resume --out %s",
                             self.signals.received or "another process", self.state.step, self.run.checkpoint,
                             self.run.path, warning=True)
        return "preempted"

    def _loop(self, net, optimizer, scaler, sampler, schedules, observer, val) -> str:
        r, d, st = self.settings, self.dist, self.state
        accum = r.optim.accumulation
        epochs = r.schedule.epochs
        micro_per_epoch = sampler.steps_per_epoch * accum
        ckpt_every = r.output.checkpoint_every_steps
        net.train()
        loader = make_loader(self.train_set, sampler, r.runtime.workers, pin_memory=d.device.type == "cuda",
                             persistent=True, on_bad_image=r.on_bad_image)
        while True:
            if st.micro_batch == 0 and st.closed < st.epoch:
                self._close_epoch(net, optimizer, scaler, observer, val)
                if self._stop_requested():
                    return self._preempted(observer)
            if st.epoch >= epochs:
                break
            sampler.set_epoch(st.epoch, st.micro_batch)
            if self._train_epoch(net, optimizer, scaler, loader, schedules, observer, accum, micro_per_epoch,
                                 ckpt_every):
                return self._preempted(observer)
        self._sync_buffers()
        self._save_weights("final", st.last_val)
        if self.ema is not None:
            self._save_weights("ema_final", {}, self.ema.module)
        return "finished"

    def _train_epoch(self, net, optimizer, scaler, loader, schedules, observer, accum, micro_per_epoch,
                     ckpt_every) -> bool:
        """Train until the epoch ends (False) or a stop signal (True: a checkpoint is written)."""
        r, d, st = self.settings, self.dist, self.state
        loss_sum = torch.zeros((), device=d.device)
        for batch in loader:
            a = st.micro_batch % accum
            if a == 0:
                seed_step(derive_seed(r.runtime.seed, "step", st.step, d.rank), d.device)
                values = schedules.apply(st.step, optimizer, self.model)
                loss_sum.zero_()
            st.micro_batch += 1
            if batch.bad:  # skipped by the loader (with on_bad_image "fail" it raises instead): counted here
                st.bad += len(batch.bad)
                st.bad_first += [f"{b.ident} ({b.reason})" for b in batch.bad[:max(5 - len(st.bad_first), 0)]]
            last = a == accum - 1
            if len(batch):
                loss = self._forward_backward(net, batch, scaler, accum, last)
                loss_sum += loss.detach() / accum
            if not last:
                continue
            self._optimizer_step(net, optimizer, scaler)
            if accum > 1:
                commit_statistics(self.model)
            if self.ema is not None:
                self.ema.update(self.model)
            st.step += 1
            if st.micro_batch == micro_per_epoch:
                st.epoch, st.micro_batch = st.epoch + 1, 0
            stop = self._stop_requested()
            if st.step % r.output.log_every_steps == 0 or st.step == schedules.total_steps:
                # the logged loss is the mean over all processes (every process joins the reduction)
                loss_mean = float(all_reduce_sum(loss_sum.clone(), d)) / d.world
                if observer is not None:
                    observer.train_step(st.step, st.epoch if st.micro_batch else st.epoch - 1,
                                        r.optim.batch_size, {"loss": loss_mean, **values})
            # the epoch's end writes its own checkpoint, after validation
            if stop or (ckpt_every and st.step % ckpt_every == 0 and st.micro_batch):
                self._save_checkpoint(optimizer, scaler, observer)
            if stop:
                return True
            if st.micro_batch == 0:
                return False
        return False

    def _close_epoch(self, net, optimizer, scaler, observer, val) -> None:
        """The end of an epoch: report skipped images, validate, keep the best weights; then the checkpoint,
        so that a kill anywhere before it redoes all of this on resume."""
        r, d, st = self.settings, self.dist, self.state
        counts = all_reduce_sum(torch.tensor([float(st.bad)], device=d.device), d)
        if counts.item() and observer is not None:
            observer.message("epoch %d: skipped %d unreadable images (first: %s)", st.epoch, int(counts.item()),
                             "; ".join(st.bad_first), warning=True)
        if val is not None and st.epoch in validation_epochs(r.schedule.epochs, r.eval_every_epochs,
                                                             r.eval_fine_from):
            fault_point("validation")
            self._sync_buffers()
            st.last_val = self.validate(self.model, val, d.device, d)
            ema_val = self.validate(self.ema.module, val, d.device, d) if self.ema is not None else {}
            net.train()
            if observer is not None:
                observer.evaluation(st.step, st.epoch - 1, {**st.last_val, **{f"ema_{k}": v for k, v in
                                                                               ema_val.items()}})
            score = st.last_val.get(self.select)
            if score is not None and (st.best is None or score > st.best):
                st.best, st.best_epoch = score, st.epoch
                self._save_weights("best", st.last_val)
            score = ema_val.get(self.select)
            if score is not None and (st.ema_best is None or score > st.ema_best):
                st.ema_best, st.ema_best_epoch = score, st.epoch
                self._save_weights("ema_best", ema_val, self.ema.module)
        st.closed, st.bad, st.bad_first = st.epoch, 0, []
        self._save_checkpoint(optimizer, scaler, observer)

    def _forward_backward(self, net, batch, scaler, accum: int, last: bool) -> torch.Tensor:
        r, d = self.settings, self.dist
        x = batch.images.to(d.device, non_blocking=True)
        if r.runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = batch.labels.to(d.device, non_blocking=True)
        x, targets = self.objective.prepare(x, y, batch.indices, self.layout)
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
        clip = self.settings.optim.grad_clip
        if clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
