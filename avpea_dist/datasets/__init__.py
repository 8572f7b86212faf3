"""Dataset plug-ins: each package here reads one release and defines ``SPEC = plugins.DatasetSpec(...)``."""
