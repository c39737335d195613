"""acento: Spanish accent identification from Common Voice with recurrent networks."""

__version__ = "0.1.0"
