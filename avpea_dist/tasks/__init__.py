"""Task plug-ins: each package here defines ``SPEC = plugins.TaskSpec(...)`` (codec, head, loss, metrics, demo)."""
