# Cross-lingual transfer matrices and probe training-set size sweeps.
