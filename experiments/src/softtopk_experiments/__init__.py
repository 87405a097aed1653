"""The paper's experiments on softtopk: the `softtopk` command line, its data sets, training and reports.

Layers, each importing only those below it (see experiments/README.md): `files` (atomic file
writes); `data` (data-set records, loaders, splits, augmentation, mixing); `settings` (options, the
paper's defaults, the run config and its loss); `results` (run-folder files, summary, report);
`training` (models, the trainer, processes, progress); `sweep` and `cli` on top.
"""
