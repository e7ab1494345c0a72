"""The Optuna backend: trials one after another in this process, each trained here by `train_trial`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from resnas._lifecycle import Faults, Outcome, Proposal, Pruned, SearchCore, resolve_device, train_trial
from resnas._study import Progress

if TYPE_CHECKING:
    import optuna

    from resnas._arch import Arch


class LocalBackend:
    """Asks the study for one architecture at a time; trains the ones that fit on this machine's device."""

    def run(self, core: SearchCore, faults: Faults) -> None:
        core.open(resolve_device(core.cfg.device), faults)
        while True:
            started = self._next(core)
            if started is None:
                break
            trial, proposal, trained = started
            outcome = self._train(core, trial, trained)
            core.settle(trial, outcome, proposal.screened.cost.flops)
            core.publish(trial.number, outcome.weights)

    @staticmethod
    def _next(core: SearchCore) -> tuple[optuna.Trial, Proposal, Arch] | None:
        """The next trial to train, started; None when the search wants no more.

        Several processes may share the study (Optuna's way to parallelise): they take turns from counting
        the trials to starting one, so none trains an architecture another one is training, nor one too many.
        """
        with core.claiming():
            while True:
                core.refresh()
                if not core.wants_more():
                    return None
                core.report.trial_start(core.trained + core.elsewhere + 1, core.cfg.trials)
                core.openings.queue_next(core.study)
                trial = core.study.optuna.ask()
                proposal = core.propose(trial)
                if proposal.trainable:
                    return trial, proposal, core.start(trial, proposal.screened)
                core.dismiss(trial, proposal)

    @staticmethod
    def _train(core: SearchCore, trial: optuna.Trial, trained: Arch) -> Outcome:
        """Train the trial here, pruned by the study's pruner; Ctrl-C settles it as interrupted."""

        def on_epoch(epoch: int, accuracy: float) -> None:
            core.epoch_done(trial, Progress(epoch, accuracy))
            if not core.cfg.multi_objective and trial.should_prune():
                raise Pruned

        try:
            return train_trial(core.job, trial.number, trained, core.data, on_epoch=on_epoch)
        except KeyboardInterrupt:
            core.interrupt(trial)
            raise
