"""saeprobe: sparse-autoencoder feature probes for text classification and transfer.

The library behind the Snakemake workflow. Each module holds one stage's logic so it can be
imported, typed and unit-tested without Snakemake:

- :mod:`saeprobe.data`        normalise a labelled dataset, fix its splits once
- :mod:`saeprobe.models`      load a model/tokenizer from a folder, the hub or a package
- :mod:`saeprobe.tokenize`    tokenize a dataset for one model
- :mod:`saeprobe.activations` one forward pass, residual stream captured by hooks
- :mod:`saeprobe.store`       ragged token stores in Zarr (dense activations, sparse codes)
- :mod:`saeprobe.sae`         load, train and apply SAEs (SAELens)
- :mod:`saeprobe.pooling`     per-document pooling and binarization
- :mod:`saeprobe.probes`      logistic-regression probes and the TF-IDF baseline
- :mod:`saeprobe.tables`      aggregation of probe results
"""

__version__ = "0.1.0"
