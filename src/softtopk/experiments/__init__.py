"""The paper's experiment protocols: data sets, models, training loop and the command line."""
