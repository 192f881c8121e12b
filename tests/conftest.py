import os

# Tests that need several devices get fake CPU devices; set before JAX initialises.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
