"""The settings of a run: the options, the paper's defaults and their table, the run config and its loss."""
