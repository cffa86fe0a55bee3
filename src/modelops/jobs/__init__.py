"""Studies that live in the cluster: `mops jobs` submits a study as a Kubernetes Job of a release.

Which process does what:

    laptop: mops jobs submit        API server                   runner pod (the Job's)          workers
    ------------------------        ----------                   ----------------------          -------
    validate the study, pin its  -> Job (suspended) + study      mops run STUDY --store URL  ->  tasks, each in the
    bundle, check the release,      ConfigMap (owned by the Job)   --job NAME (a Dask client     executor of the
    RBAC and the store; unsuspend   -> pod                         like any other)               worker's own env
    mops jobs status / results  <-  results server (service proxy) <- the store <- results, batch by batch

The chart renders everything the runner pod needs (`<release>-jobs` ConfigMap, key runner.json: the
Job template with its ServiceAccount, security contexts and store credentials by reference); this
package only fills in the job's name, its study and the runner's arguments. The runner uses no
Kubernetes API. A runner pod killed or evicted is replaced by the Job (after it has fully stopped:
podReplacementPolicy Failed), and the new one resumes from the store: nothing with a stored result
runs again.
"""
