"""What runs inside a Dask worker process: config from the worker's env (config.py, built from
`modelops.settings`), the plugin and preload that build the runtime, the runtime that hands tasks
to the executor (runtime.py, executor_factory.py), drain, logging, Prometheus metrics, and the
per-process HTTP ports of `--nworkers N` pods (process_ports.py, also the pods' exec probe)."""
