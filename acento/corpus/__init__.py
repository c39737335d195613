"""Common Voice releases: TSV records and accents (`records`), finding, downloading and safely unpacking a
release (`release`, `fetch`), the clip manifest (`manifest`, `prepare`) and speaker-disjoint folds (`splits`)."""
