"""Training the proposer: examples from a dataset or the synthetic world, the SAM 3
set-prediction loss, the training loop, the starter model."""
