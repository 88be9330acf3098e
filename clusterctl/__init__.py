"""clusterctl: a YAML inventory of machines -> a running Dask cluster over SSH."""

__version__ = "0.1.0"
