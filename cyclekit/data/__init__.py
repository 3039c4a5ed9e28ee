"""Data: image listing and decoding, the unpaired dataset, augmentation, MNIST."""
