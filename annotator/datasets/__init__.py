"""Generated datasets (the synthetic world the starter proposer learns from)."""
