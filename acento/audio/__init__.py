"""Audio: decoding any file, bounded (`decode`), MPEG framing of damaged streams (`mpeg`), log-mel
spectrograms (`logmel`) and many clips at once in worker processes (`extract`)."""
