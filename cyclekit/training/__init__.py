"""Training loops: CycleGAN and the MNIST baselines."""
