"""`analyze`: what the trained trials of one or more runs (or sweeps) say about each dimension of their space.

    models       the complete trials trained at the run's full epochs that a sampler chose (trials.csv rows);
                 pruned (fewer epochs), queued classics, duplicates, over-budget and failed trials are counted
                 and left out of every statistic. Runs at one budget are pooled; budgets are analysed apart.
    dimensions   per dimension that varied: each value's error EDF (pycls: the fraction of models with error
                 <= e), mean accuracy and its effect against the dimension's reference value (difference of
                 means in points, 95% percentile bootstrap CI, each group resampled on its own)
    importance   PED-ANOVA (Optuna) over the dimensions' values, else the between-value variance share
    verdicts     one sentence per value of each extension dimension, and the budget table (rows: extensions,
                 columns: budgets)
    refine       the space YAML narrowed on that evidence (`refine`)

Reference values: the value that means "without the extension" where there is one (`_REFERENCE`: identity
shortcut, post-activation, no stochastic depth, no dropout, cardinality 1, width multiplier 1), else (or where
that value was not sampled) the most common value, ties to the smallest.

By job: `runs` reads run folders into samples, `stats` computes, `verdicts` words it (and `analyze` runs it
all), `report` writes the files, `refine` the refined space.
"""

from resnas._analyze.refine import refine
from resnas._analyze.report import write
from resnas._analyze.runs import Exclusion, Run, check_comparable
from resnas._analyze.stats import bootstrap_difference, edf, quartile_bins
from resnas._analyze.verdicts import Analysis, analyze

__all__ = ["Analysis", "Exclusion", "Run", "analyze", "bootstrap_difference", "check_comparable", "edf",
           "quartile_bins", "refine", "write"]
