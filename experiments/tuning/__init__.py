"""Optuna studies over the training engine: the search space, storage, the study's life, its
workers and launcher, and its report. Only this package and tune.py import optuna."""

import warnings

import matplotlib

matplotlib.use("Agg")  # headless: study plots are files on the parent run

import optuna

# Heartbeats and fail_stale_trials are "experimental" in Optuna, and say so on every call.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.WARNING)
