"""What runs inside a Dask worker: config from the worker's env, the plugin, the preload."""
