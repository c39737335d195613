"""The HDF5 feature cache: building it from a manifest (`build`) and reading a fold's splits of it (`cache`)."""
