"""Evaluation: metrics (`metrics`), statistics over speakers (`stats`: bootstrap intervals, McNemar, sign
test), prediction and metric files (`outputs`), speaker-grouped cross-validation in one process
(`crossval`) and the LSTM-vs-GRU comparison through DVC experiments (`compare`, `make compare`)."""
