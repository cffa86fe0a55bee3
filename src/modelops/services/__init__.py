"""Client-side services that submit simulation tasks to a Dask cluster."""
