"""The data sets: their records (`records`), loaders, splits, feature cache, augmentation and mixing."""
