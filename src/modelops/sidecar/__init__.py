"""What runs in the scheduler pod's sidecar container, apart from Dask: the only modelops process that
holds a Kubernetes credential (the scheduler's ServiceAccount token, mounted in this container alone).

Clients may run any code on the scheduler (`Client.run_on_scheduler`), so the scheduler's container holds
no token; the sidecar runs no Dask code, imports no `distributed`, listens on no port, and only reads the
scheduler's loopback HTTP page and calls the few API operations its Role allows (deletion_cost.py).
"""
