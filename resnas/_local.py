"""The Optuna backend: trials one after another in this process, each trained here by `train_trial`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from resnas._lifecycle import Faults, Outcome, Pruned, SearchCore, resolve_device, train_trial
from resnas._study import Progress, Screened

if TYPE_CHECKING:
    import optuna


class LocalBackend:
    """Asks the study for one architecture at a time; trains the ones that fit on this machine's device."""

    def run(self, core: SearchCore, faults: Faults) -> None:
        core.open(resolve_device(core.cfg.device), faults)
        # Several processes may share the study (Optuna's way to parallelise): each recounts before a trial.
        while True:
            core.refresh()
            if not core.wants_more():
                break
            core.report.trial_start(core.trained + 1, core.cfg.trials)
            core.openings.queue_next(core.study)
            trial = core.study.optuna.ask()
            proposal = core.propose(trial)
            if not proposal.trainable:
                core.dismiss(trial, proposal)
                continue
            outcome = self._train(core, trial, proposal.screened)
            core.settle(trial, outcome, proposal.screened.cost.flops)
            core.publish(trial.number, outcome.weights)

    @staticmethod
    def _train(core: SearchCore, trial: optuna.Trial, screened: Screened) -> Outcome:
        """Train the trial here, pruned by the study's pruner; Ctrl-C settles it as interrupted."""
        trained = core.start(trial, screened)

        def on_epoch(epoch: int, accuracy: float) -> None:
            core.epoch_done(trial, Progress(epoch, accuracy))
            if not core.cfg.multi_objective and trial.should_prune():
                raise Pruned

        try:
            return train_trial(core.job, trial.number, trained, core.data, on_epoch=on_epoch)
        except KeyboardInterrupt:
            core.interrupt(trial)
            raise
