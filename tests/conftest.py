"""Shared test set-up."""

import os

import torch

# pytest-xdist runs one worker per core: a worker using every core's threads thrashes the others.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
