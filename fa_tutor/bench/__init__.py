"""Benchmarks: named experiments, a resumable runner, results with provenance in results/*.jsonl."""
from .registry import EXPERIMENTS, Cell, Experiment, experiment, get_experiment, list_experiments
from .runner import read_results, results_path, run_experiment

__all__ = ["EXPERIMENTS", "Cell", "Experiment", "experiment", "get_experiment", "list_experiments",
           "read_results", "results_path", "run_experiment"]
