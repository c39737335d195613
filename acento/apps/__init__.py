"""The commands a user runs on a trained model: `acento-predict` (`predict`), `acento-serve` and its page
(`serve`), `acento-score` (`score`)."""
