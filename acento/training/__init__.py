"""Training: batches, normalisation and augmentation (`batches`), the training loop (`trainer`), and the
deployable model, one network per fold as one ensemble (`final`, `make final-model`)."""
