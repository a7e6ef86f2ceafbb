"""QoS models: ChainNet and its baselines."""
