"""The results store: every task result durable as soon as its batch arrives, addressed by task id.

Which process does what (one store, three kinds of user):

    mops run / runner pod (a Dask client)   results server pod              laptop
    -------------------------------------   ---------------------------     ------------------------------
    JobWriter --put batch--> [store: file:// volume or s3://] <--list/get-- `mops results serve`
    StorePlan <--task_id, status---'  (read back on a restart)                 ^ HTTP, through the API server
                                                                          `mops results`, `mops jobs status`
                                                                          (or s3:// read directly)

Layout under the store's root (one URL: file:///path or s3://bucket/prefix):

    v1/jobs/<job>/job.json                        the job: its pinned study, bundle digest, entrypoint, tasks
    v1/jobs/<job>/results/<writer>-<seq>.parquet  one batch of results (a row each), written whole, never changed

A task's id hashes its inputs (bundle digest, entrypoint, params, seed), so a result found under any job
is a result of the same computation: a job reuses it (copied into its own batches, `reused_from`
naming the job that computed it) instead of running the task again, unless asked to recompute.
"""
