"""annotator: a human-in-the-loop data engine for open-vocabulary instance segmentation."""
