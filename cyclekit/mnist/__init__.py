"""The MNIST baselines (``cyclekit gan`` / ``cyclekit ae``).

Numbers the command line needs before torch is imported live here.
"""

FEATURES = 128  # size of the evaluation classifier's feature vector (the Fréchet space)
# A Fréchet distance fits a covariance to the features: with n <= FEATURES samples it is
# singular (rank n - 1), and with n = 1 it is undefined. 10,000 is the usual sample size.
MIN_EVAL_SAMPLES = FEATURES + 1
MIN_CLASSIFIER_ACCURACY = 0.95  # below this, the features cannot tell digits apart reliably
MAX_SAMPLES = 100_000  # per command: 100,000 x 784 floats is 300 MB
MAX_GRID_SAMPLES = 10_000  # one grid image; more samples go to a folder of PNGs
