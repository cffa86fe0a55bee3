"""Scheduler-side modelops: the release's worker groups and the pods each needs (loaded by the scheduler's
preload, `modelops.scheduler.preload`, which the image's entrypoint adds)."""
