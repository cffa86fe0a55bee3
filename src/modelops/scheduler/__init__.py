"""Scheduler-side modelops: the release's worker groups and the pods each needs (loaded by the scheduler's
preload, `modelops.scheduler.preload`, which the image's entrypoint adds)."""

# The module `dask scheduler --preload` loads: named once here, for the image's entrypoint and the
# local clusters that start schedulers as a pod does.
PRELOAD = "modelops.scheduler.preload"
