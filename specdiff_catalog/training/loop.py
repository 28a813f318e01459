"""The training loop shared by every model: it knows models, batches and losses, not spectra.

``fit(model, task, config, workdir)`` runs AdamW with a one-cycle learning-rate
schedule, validates every epoch, keeps the best weights, writes a JSON-lines log and
a checkpoint after every epoch, and resumes from that checkpoint. A ``TrainingTask``
supplies the data and the loss; the loop supplies everything else.

Checkpoint layout in ``workdir`` (no pickle anywhere)::

    last.safetensors   model.*, optimizer.* and rng.* tensors after the last finished epoch
    last.json          epoch, optimizer param groups, scheduler and grad-scaler state,
                       best metric and epoch, the configs, the history of epoch records
    best.safetensors   model.* tensors of the epoch with the best validation metric
    log.jsonl          one JSON record per epoch (and a start/resume/end record)

Mixed precision (autocast + GradScaler) is used on CUDA only; CPU runs in float32.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from specdiff_catalog.config import from_dict
from specdiff_catalog.io.paths import write_atomic

Metrics = dict[str, tuple[torch.Tensor | float, torch.Tensor | float]]


@dataclass
class TrainConfig:
    """Optimiser, schedule and run settings of one training job.

    lr: peak learning rate of the one-cycle schedule (Smith & Topin 2019), reached after
    pct_start of the steps, starting at lr / div_factor and ending at
    lr / (div_factor * final_div_factor). grad_clip: max gradient norm (0 = off).
    amp: 'bf16' | 'fp16' | 'off', used on CUDA only. threads: torch CPU threads
    (0 = the CPUs this process may use, or OMP_NUM_THREADS when set).
    """

    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    grad_clip: float = 1.0
    amp: str = "bf16"
    seed: int = 0
    device: str = "auto"
    threads: int = 0

    def overridden(
        self,
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        device: str | None = None,
        seed: int | None = None,
    ) -> TrainConfig:
        """This config with the options a user gave on the command line (None: keep)."""
        return dataclasses.replace(
            self,
            epochs=self.epochs if epochs is None else epochs,
            batch_size=self.batch_size if batch_size is None else batch_size,
            device=self.device if device is None else device,
            seed=self.seed if seed is None else seed,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "training config") -> TrainConfig:
        config = from_dict(cls, data, source=source)
        if config.amp not in ("bf16", "fp16", "off"):
            raise ValueError(f"{source}: amp must be 'bf16', 'fp16' or 'off', got {config.amp!r}")
        return config


@dataclass
class StepResult:
    """What a task's loss returns for one batch.

    loss: scalar tensor to minimise. metrics: name -> (sum, weight); the loop reports
    sum(sums) / sum(weights) over an epoch (e.g. 'chi2_per_pixel': (chi2 sum, pixel count)).
    """

    loss: torch.Tensor
    metrics: Metrics = field(default_factory=dict)


ModelT = TypeVar("ModelT", bound=nn.Module, contravariant=True)


class TrainingTask(Protocol[ModelT]):
    """The data and loss of one model (of type ModelT); everything the loop needs to know about it."""

    val_metric: str  # the validation metric (lower is better) that picks the best epoch

    def steps_per_epoch(self, batch_size: int) -> int:
        """Exact number of training batches one epoch yields."""

    def train_batches(self, batch_size: int, epoch: int, seed: int) -> Iterable[Any]:
        """The epoch's shuffled training batches (deterministic in epoch and seed)."""

    def val_batches(self, batch_size: int) -> Iterable[Any]:
        """The validation batches, in a fixed order."""

    def loss(self, model: ModelT, batch: Any, device: torch.device, train: bool) -> StepResult:
        """Move the batch to ``device``, run the model, return the loss and metric sums."""

    # Optional: ``after_step(model)``, called after every optimiser step (e.g. to update
    # an exponential moving average of the weights kept inside the model, so that it is
    # checkpointed and resumed with it).


TrainedT = TypeVar("TrainedT", bound=nn.Module)


@dataclass
class FitResult:
    """best_metric: the best validation value of task.val_metric, at best_epoch (0-based);
    history: one record per epoch; finished: all epochs ran (False after stop_after);
    workdir: where the checkpoints and log are."""

    best_metric: float
    best_epoch: int
    history: list[dict[str, Any]]
    finished: bool
    workdir: Path


class CheckpointError(ValueError):
    """A checkpoint that is missing, or belongs to a different configuration."""


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available, else cpu; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but torch sees no CUDA device")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def set_threads(threads: int = 0) -> int:
    """Set torch's CPU threads: ``threads``, else OMP_NUM_THREADS, else the CPUs we may use."""
    if threads <= 0:
        threads = int(os.environ.get("OMP_NUM_THREADS", 0)) or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return threads


def prefetch(iterable: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Iterate in a background thread, ``depth`` items ahead (reading overlaps compute)."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(done)
        except BaseException as err:  # re-raised in the consumer
            items.put(err)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


class _Precision:
    """autocast + GradScaler on CUDA; a no-op on CPU."""

    def __init__(self, device: torch.device, amp: str):
        self.device_type = device.type
        self.enabled = device.type == "cuda" and amp != "off"
        if self.enabled and amp == "bf16" and not torch.cuda.is_bf16_supported():
            amp = "fp16"
        self.dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)


def _accumulate(totals: dict[str, list[torch.Tensor]], metrics: Metrics, device: torch.device) -> None:
    """Add a batch's (sum, weight) pairs on ``device``: no host sync per step."""
    for name, (num, den) in metrics.items():
        num = torch.as_tensor(num).detach().to(device, torch.float64)
        den = torch.as_tensor(den).detach().to(device, torch.float64)
        if name in totals:
            totals[name][0] += num
            totals[name][1] += den
        else:
            totals[name] = [num.clone(), den.clone()]


def _averages(totals: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    return {name: float(num / den) if float(den) > 0 else math.nan for name, (num, den) in totals.items()}


# --- checkpoints: safetensors for tensors, JSON for the rest ------------------------------
def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    state = optimizer.state_dict()
    tensors = {
        f"optimizer.{index}.{name}": torch.as_tensor(value)
        for index, entries in state["state"].items()
        for name, value in entries.items()
    }
    return tensors, state["param_groups"]


def _load_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]
) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors |= {f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    return tensors


def _restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def model_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The model's state dict from a checkpoint safetensors file (best or last)."""
    return {k[len("model.") :]: v for k, v in load_file(str(path)).items() if k.startswith("model.")}


class Run:
    """One training run's mutable state: model, optimiser, schedule, precision, bookkeeping."""

    def __init__(
        self, model: nn.Module, task: TrainingTask, config: TrainConfig, workdir: Path, extra: dict[str, Any]
    ):
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.task = task
        self.config = config
        self.workdir = workdir
        self.extra = extra  # job configuration recorded in the checkpoint (must match on resume)
        self.steps = task.steps_per_epoch(config.batch_size)
        self._after_step = getattr(task, "after_step", None)
        if self.steps < 1:
            raise ValueError("the training split is empty: nothing to train on")
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            max_lr=config.lr,
            total_steps=config.epochs * self.steps,
            pct_start=config.pct_start,
            div_factor=config.div_factor,
            final_div_factor=config.final_div_factor,
        )
        self.precision = _Precision(self.device, config.amp)
        self.last_lr = config.lr / config.div_factor
        self.epoch = 0  # the next epoch to run
        self.best_metric = math.inf
        self.best_epoch = -1
        self.history: list[dict[str, Any]] = []

    # checkpoint -------------------------------------------------------------------------
    def save(self) -> None:
        opt_tensors, groups = _optimizer_tensors(self.optimizer)
        tensors = _model_tensors(self.model) | opt_tensors | _rng_tensors()
        write_atomic(self.workdir / "last.safetensors", lambda p: save_file(tensors, str(p)))
        meta = {
            "epoch": self.epoch,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "optimizer_param_groups": groups,
            "scheduler": self.scheduler.state_dict(),
            "grad_scaler": self.precision.scaler.state_dict(),
            "train_config": dataclasses.asdict(self.config),
            "job": self.extra,
            "history": self.history,
        }
        write_atomic(
            self.workdir / "last.json", lambda p: p.write_text(json.dumps(meta, indent=1, default=float))
        )

    def save_best(self) -> None:
        tensors = _model_tensors(self.model)
        write_atomic(self.workdir / "best.safetensors", lambda p: save_file(tensors, str(p)))

    def restore(self) -> None:
        meta_path = self.workdir / "last.json"
        if not meta_path.exists():
            raise CheckpointError(f"{self.workdir}: no checkpoint to resume from (last.json missing)")
        meta = json.loads(meta_path.read_text())
        mine = {"train_config": dataclasses.asdict(self.config), "job": self.extra}
        theirs = {"train_config": meta["train_config"], "job": meta["job"]}
        if json.loads(json.dumps(mine, default=float)) != theirs:
            raise CheckpointError(
                f"{self.workdir}: the checkpoint was made with a different configuration; "
                f"resume with the same preset and options, or start over in a new directory "
                f"(checkpoint: {theirs}; now: {mine})"
            )
        tensors = load_file(str(self.workdir / "last.safetensors"))
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        _load_optimizer(
            self.optimizer, {k: v.to(self.device) for k, v in tensors.items()}, meta["optimizer_param_groups"]
        )
        self.scheduler.load_state_dict(meta["scheduler"])
        if meta["grad_scaler"]:
            self.precision.scaler.load_state_dict(meta["grad_scaler"])
        _restore_rng(tensors)
        self.epoch, self.best_metric, self.best_epoch = meta["epoch"], meta["best_metric"], meta["best_epoch"]
        self.history = meta["history"]

    def log(self, record: dict[str, Any]) -> None:
        with open(self.workdir / "log.jsonl", "a") as fh:
            fh.write(json.dumps(record, default=float) + "\n")

    # epochs -------------------------------------------------------------------------------
    def train_epoch(self, progress: bool) -> dict[str, float]:
        from tqdm.auto import tqdm

        self.model.train()
        totals: dict[str, list[torch.Tensor]] = {}
        batches = prefetch(self.task.train_batches(self.config.batch_size, self.epoch, self.config.seed))
        bar = tqdm(
            batches,
            total=self.steps,
            desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
            disable=not progress,
            leave=False,
            dynamic_ncols=True,
            position=1,
        )
        for step, batch in enumerate(bar):
            if step >= self.steps:
                raise RuntimeError(f"the task yielded more than its {self.steps} steps per epoch")
            with self.precision.autocast():
                result = self.task.loss(self.model, batch, self.device, True)
            self.optimizer.zero_grad(set_to_none=True)
            self.precision.scaler.scale(result.loss).backward()
            if self.config.grad_clip > 0:
                self.precision.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.precision.scaler.step(self.optimizer)
            self.precision.scaler.update()
            self.last_lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
            self.scheduler.step()
            if self._after_step is not None:
                self._after_step(self.model)
            _accumulate(totals, {"loss": (result.loss.detach(), 1.0)} | result.metrics, self.device)
            if step % 10 == 0 or step == self.steps - 1:
                bar.set_postfix(loss=f"{_averages(totals)['loss']:.4g}", lr=f"{self.last_lr:.2e}")
        return _averages(totals)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.model.eval()
        totals: dict[str, list[torch.Tensor]] = {}
        for batch in prefetch(self.task.val_batches(self.config.batch_size)):
            with self.precision.autocast():
                result = self.task.loss(self.model, batch, self.device, False)
            _accumulate(totals, {"loss": (result.loss.detach(), 1.0)} | result.metrics, self.device)
        return _averages(totals)


def fit(
    model: TrainedT,
    task: TrainingTask[TrainedT],
    config: TrainConfig,
    workdir: str | Path,
    *,
    resume: bool = False,
    extra: dict[str, Any] | None = None,
    progress: bool = True,
    verbose: bool = True,
    stop_after: Callable[[dict[str, Any]], bool] | None = None,
) -> FitResult:
    """Train ``model`` on ``task`` for config.epochs epochs, checkpointing into ``workdir``.

    resume: continue from workdir/last.* (model, optimiser, schedule, RNG, epoch, best
    metric); the run's configs (``config`` and ``extra``) must equal the checkpoint's.
    Without resume an existing checkpoint is an error (never silently overwritten).
    extra: JSON-able job configuration stored with the checkpoint (e.g. the model preset).
    progress: tqdm bars over epochs (train/val/best loss) and over each epoch's batches
    (running loss, lr); verbose: one summary line per epoch on stdout.
    stop_after: called with each epoch's record; returning True ends training there,
    as an interruption would (the checkpoint is written first).
    After the last epoch the model holds the *best* epoch's weights.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    run = Run(model, task, config, workdir, extra or {})
    if run.device.type == "cpu":
        set_threads(config.threads)
    if resume:
        run.restore()
    elif (workdir / "last.json").exists():
        raise CheckpointError(
            f"{workdir} holds a checkpoint of an earlier run; resume it (--resume) or remove that directory"
        )
    run.log(
        {
            "event": "resume" if resume else "start",
            "epoch": run.epoch,
            "device": str(run.device),
            "threads": torch.get_num_threads(),
            "steps_per_epoch": run.steps,
            "time": time.time(),
        }
    )
    from tqdm.auto import tqdm

    epochs_bar = tqdm(
        total=config.epochs,
        initial=run.epoch,
        desc="epochs",
        unit="epoch",
        disable=not progress,
        dynamic_ncols=True,
        position=0,
    )
    while run.epoch < config.epochs:
        start = time.perf_counter()
        train_metrics = run.train_epoch(progress)
        val_metrics = run.validate()
        metric = val_metrics.get(task.val_metric, math.nan)
        improved = metric < run.best_metric
        if improved:
            run.best_metric, run.best_epoch = metric, run.epoch
            run.save_best()
        record: dict[str, Any] = {
            "epoch": run.epoch,
            "train": train_metrics,
            "val": val_metrics,
            "lr": run.last_lr,
            "seconds": time.perf_counter() - start,
            "best": improved,
        }
        run.history.append(record)
        run.epoch += 1
        run.save()
        run.log(record)
        epochs_bar.update(1)
        epochs_bar.set_postfix(
            train=f"{train_metrics['loss']:.4g}",
            val=f"{val_metrics['loss']:.4g}",
            best=f"{run.best_metric:.4g}",
        )
        if verbose:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in val_metrics.items())
            tqdm.write(
                f"epoch {record['epoch'] + 1}/{config.epochs}: train loss {train_metrics['loss']:.4g}; "
                f"val {shown}{' (best)' if improved else ''} [{record['seconds']:.0f} s]"
            )
        if stop_after is not None and stop_after(record):
            break
    epochs_bar.close()
    if run.best_epoch >= 0:
        run.model.load_state_dict(model_state(workdir / "best.safetensors"))
    run.log(
        {"event": "end", "epoch": run.epoch, "best_epoch": run.best_epoch, "best_metric": run.best_metric}
    )
    return FitResult(
        best_metric=run.best_metric,
        best_epoch=run.best_epoch,
        history=run.history,
        finished=run.epoch >= config.epochs,
        workdir=workdir,
    )
