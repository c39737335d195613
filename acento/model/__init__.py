"""The network (`network`: convolutional front end, LSTM or GRU, pooling, classifier), the model file and
the loaded model (`accent_model`: `AccentModel`, `load`, `Prediction`) and batched inference (`inference`)."""
