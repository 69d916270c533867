"""snapdeploy's processes, each started as ``python -m services.<name>``."""
