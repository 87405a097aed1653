"""The results of runs: the names of run files and metrics, the run folder, summaries and reports."""
