"""A training run's budget (steps, minutes of the clock, or both) and the learning-rate schedule
that follows it, for both training stages (pretraining and QA fine-tuning).

The schedule is a linear warmup over ``warmup_fraction`` of the budget, then a linear decay to
zero at its end. With a time budget the clock stops the run and the schedule follows
whichever of the step count or the clock is further along, so a budgeted run still anneals to
the end of its minutes. The Trainer's ``lr_scheduler_type`` has no clock, hence this.

The clock is read once per step, at its end, by rank 0 alone under torchrun, and that reading
is sent to every process (:func:`scratchbert.distributed.broadcast_float`): every rank stops on
the same step and applies the same learning rate (DDP needs both; each process's own clock
starts and runs a little apart). Each checkpoint keeps the clock's reading (in its
``trainer_state.json``), so a run resumed from it goes on from those seconds: its schedule
continues and it trains only the minutes left, as a retried pipeline task must.

A run may keep the end of its minutes for what comes after it (``reserve_steps``: a pipeline's QA
fine-tuning, timed in this run's own steps): it then ends that many of its own mean steps before
the clock runs out, the mean read anew each step (so a machine that speeds up or slows down
moves the end with it), and its schedule anneals to that end, never turning back. The mean is
the clock over the steps done, kept in checkpoints with how far the schedule had gone, so a
resumed run reckons the same end and goes on from the same learning rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from scratchbert import distributed

# The step count given to the Trainer when only the clock ends the run.
OPEN_ENDED_STEPS = 10_000_000


def lr_lambda(progress: float, warmup_fraction: float) -> float:
    """Linear warmup to 1 over ``warmup_fraction`` of the run, then linear decay to 0."""
    if progress < warmup_fraction:
        return max(progress / warmup_fraction, 1e-3)
    return max(0.0, (1.0 - progress) / max(1e-9, 1.0 - warmup_fraction))


class Budget:
    """``max_steps`` (-1: none) and ``minutes`` (0: none) of one run, with its warmup fraction."""

    def __init__(self, max_steps: int, minutes: float, warmup_fraction: float, label: str = "train",
                 reserve_steps: float = 0.0, reserve_max_minutes: float = 0.0):
        self.max_steps = max_steps
        self.seconds = minutes * 60 if minutes else None
        self.warmup_fraction = warmup_fraction
        self.label = label
        self.reserve_steps = reserve_steps if self.seconds else 0.0
        # the most the reserve may take (half of the minutes unless given), so that the first
        # steps, slow while the process warms up, cannot end the run at its start
        self.reserve_max = min(reserve_max_minutes * 60 or (self.seconds or 0.0) / 2, self.seconds or 0.0)
        self.start: float | None = None
        self.clock = 0.0  # seconds of training at the end of the last step, as rank 0 read them
        self.steps = 0  # steps done at that reading
        self.progress = 0.0  # the furthest the schedule has gone: a later end never turns it back

    def end(self) -> float | None:
        """Seconds of the clock at which the run stops: its minutes, less ``reserve_steps`` of its
        mean step so far (at most ``reserve_max``, which it is before the first step); None without minutes."""
        if not self.seconds:
            return None
        if not self.reserve_steps:
            return self.seconds
        reserve = self.reserve_steps * self.clock / self.steps if self.steps else math.inf
        return self.seconds - min(reserve, self.reserve_max)

    @property
    def open_ended(self) -> bool:
        """Only the clock ends the run (no step count)."""
        return bool(self.seconds) and self.max_steps <= 0

    def trainer_max_steps(self) -> int:
        """``TrainingArguments.max_steps``: the step budget, or open-ended under a time budget alone."""
        return OPEN_ENDED_STEPS if self.open_ended else self.max_steps

    def elapsed(self) -> float:
        return 0.0 if self.start is None else time.monotonic() - self.start

    def multiplier(self, num_training_steps: int) -> Callable[[int], float]:
        """The learning-rate multiplier of step ``step`` (a ``LambdaLR`` function)."""
        total = self.max_steps if self.max_steps > 0 else (None if self.seconds else num_training_steps)

        def schedule(step: int) -> float:
            progress = step / total if total else 0.0
            if self.seconds:
                progress = max(progress, self.clock / max(self.end(), 1e-9))
                self.progress = progress = max(progress, self.progress)
            return lr_lambda(min(progress, 1.0), self.warmup_fraction)

        return schedule

    def scheduler(self, optimizer, num_training_steps: int):
        import torch

        return torch.optim.lr_scheduler.LambdaLR(optimizer, self.multiplier(num_training_steps))

    def trainer_class(self, base=None):
        """``base`` (default: the Hugging Face ``Trainer``) with its learning rate following this budget."""
        from transformers import Trainer

        budget = self

        class BudgetTrainer(base or Trainer):
            def create_scheduler(self, num_training_steps, optimizer=None):
                if self.lr_scheduler is None:
                    self.lr_scheduler = budget.scheduler(optimizer if optimizer is not None else self.optimizer,
                                                         num_training_steps)
                    self._created_lr_scheduler = True
                return self.lr_scheduler

        return BudgetTrainer

    def callbacks(self) -> list:
        """The clock (it starts with training and stops it when the minutes are spent: rank 0's
        reading, on every rank) and, when only the clock ends the run, a progress bar in seconds
        in place of the step bar."""
        from transformers import TrainerCallback
        from transformers.trainer_callback import ExportableState

        budget = self

        class _Clock(TrainerCallback, ExportableState):
            def state(self) -> dict:  # saved into each checkpoint's trainer_state.json
                return {"args": {}, "attributes": {"clock": budget.clock, "progress": budget.progress}}

            def on_train_begin(self, args, state, control, **kw):
                saved = (state.stateful_callbacks or {}).get(type(self).__name__) if state.global_step else None
                attributes = (saved or {}).get("attributes") or {}
                spent = float(attributes.get("clock") or 0.0)  # 0: a fresh run
                budget.start = time.monotonic() - spent
                budget.clock = spent
                budget.progress = float(attributes.get("progress") or 0.0)  # where the schedule had gone
                budget.steps = state.global_step

            def on_step_end(self, args, state, control, **kw):
                if not budget.seconds:
                    return
                budget.clock = distributed.broadcast_float(budget.elapsed())  # one message per step, no GPU sync
                budget.steps = state.global_step
                if budget.clock >= budget.end():
                    control.should_training_stop = True
                    control.should_save = False

        return [_Clock()] + ([_time_progress(budget)] if self.seconds else [])

    def install(self, trainer) -> None:
        """Add :meth:`callbacks` to ``trainer``. Under a time budget the bar in seconds replaces
        the step bar: open-ended, a 10-million-step bar would show a meaningless ETA, and with a
        step cap too, the clock may end the run with the step bar at half."""
        from transformers.trainer_callback import ProgressCallback

        if self.seconds and trainer.pop_callback(ProgressCallback) is not None:
            trainer.add_callback(_prediction_progress())  # scoring's bar stays
        for callback in self.callbacks():
            trainer.add_callback(callback)


def _prediction_progress():
    """The Trainer's progress callback without its training bar: evaluation and prediction bars only."""
    from transformers.trainer_callback import ProgressCallback

    class PredictionProgress(ProgressCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            pass

        def on_step_end(self, args, state, control, **kwargs):
            pass

        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

        def on_train_end(self, args, state, control, **kwargs):
            pass

    return PredictionProgress()


def _time_progress(budget: Budget):
    """A tqdm bar in seconds of the time budget, with the step (of the step cap, if any) and the latest loss."""
    from transformers import TrainerCallback

    from scratchbert import progress

    class TimeProgress(TrainerCallback):
        bar = None
        loss = "-"

        def on_train_begin(self, args, state, control, **kw):
            if not state.is_world_process_zero:  # one bar for a torchrun job, as the Trainer's own
                return
            # mininterval: one redraw a second, not one per step (pod logs keep every redraw)
            self.bar = progress.bar(total=int(budget.end()), unit="s", desc=f"{budget.label} (time budget)",
                                    mininterval=1.0)

        def on_step_end(self, args, state, control, **kw):
            if self.bar is not None and min(int(budget.clock), int(budget.end())) > self.bar.n:
                self._show(state)  # redraws at most once per mininterval

        def _show(self, state) -> None:
            step = f"{state.global_step}/{budget.max_steps}" if budget.max_steps > 0 else state.global_step
            self.bar.set_postfix(ordered_dict={"step": step, "loss": self.loss}, refresh=False)
            self.bar.total = max(int(budget.end()), self.bar.n)  # with a reserve, the end moves with the run's pace
            self.bar.update(min(int(budget.clock), self.bar.total) - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.loss = f"{logs['loss']:.3f}"

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self._show(state)  # the last step, whichever of the clock and the step cap ended the run
                self.bar.close()

    return TimeProgress()
