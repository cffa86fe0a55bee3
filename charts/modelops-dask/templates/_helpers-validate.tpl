{{/*
Template-level validation, gathered here: every misconfiguration the schema cannot express fails
the render with a message naming the value, what it is and what is allowed. Called once, from
worker-deployment.yaml (always rendered). Args: dict "root" $ "reserved" (variables the chart sets).
modelops-dask.bytes, which parses a memory quantity, also fails on one it cannot parse, naming it.
*/}}
{{- define "modelops-dask.validate" -}}
{{- $root := .root -}}
{{- if hasKey (default dict $root.Values.worker.groups) "default" -}}
{{- fail "worker.groups: the name \"default\" is reserved for the main workers (worker.*)" -}}
{{- end -}}
{{- range $g := (include "modelops-dask.workerGroups" $root | fromJson).groups -}}
{{- include "modelops-dask.validateGroup" (dict "root" $root "g" $g "reserved" $.reserved) -}}
{{- end -}}
{{- include "modelops-dask.validateDashboardRoutes" $root -}}
{{- include "modelops-dask.validateSettingNames" (dict "root" $root "path" "scheduler.env" "names" (include "modelops-dask.envNames" $root.Values.scheduler.env | fromJsonArray)) -}}
{{- if has "MODELOPS_WORKER_GROUPS" (include "modelops-dask.envNames" $root.Values.scheduler.env | fromJsonArray) -}}
{{- fail "scheduler.env: MODELOPS_WORKER_GROUPS is set by the chart from worker.* and worker.groups (the release's worker groups); drop it" -}}
{{- end -}}
{{- if has "MODELOPS_POD_DELETION_COST_SELECTOR" (include "modelops-dask.envNames" $root.Values.scheduler.env | fromJsonArray) -}}
{{- fail "scheduler.env: MODELOPS_POD_DELETION_COST_SELECTOR is set by the chart from scheduler.podDeletionCost (with the RBAC it needs); drop it and set scheduler.podDeletionCost" -}}
{{- end -}}
{{- if not (has (toString $root.Values.scheduler.podDeletionCost) (list "auto" "enabled" "disabled")) -}}
{{- fail (printf "scheduler.podDeletionCost: %q is not one of auto (when a worker group autoscales), enabled, disabled" (toString $root.Values.scheduler.podDeletionCost)) -}}
{{- end -}}
{{- include "modelops-dask.validateAppLabel" (dict "labels" $root.Values.scheduler.podLabels "path" "scheduler.podLabels" "component" "scheduler") -}}
{{- include "modelops-dask.validateJobs" $root -}}
{{- include "modelops-dask.validateNetworkPolicy" $root -}}
{{- include "modelops-dask.validateTls" $root -}}
{{- end -}}

{{/*
TLS (tls.*): one source of certificates. Checked only with tls.enabled (with it off, tls.* renders nothing).
*/}}
{{- define "modelops-dask.validateTls" -}}
{{- $t := .Values.tls -}}
{{- if $t.enabled -}}
{{- if and $t.existingSecret $t.certManager.enabled -}}
{{- fail (printf "tls.existingSecret: %q and tls.certManager.enabled: true: give one source of certificates (an existing Secret with ca.crt, tls.crt, tls.key, or cert-manager, or neither for a chart-generated CA)" $t.existingSecret) -}}
{{- end -}}
{{- $envs := list (dict "path" "scheduler.env" "env" $.Values.scheduler.env) -}}
{{- range $g := (include "modelops-dask.workerGroups" $ | fromJson).groups -}}
{{- $envs = append $envs (dict "path" (printf "%s.env" (include "modelops-dask.groupPath" $g)) "env" $g.cfg.env) -}}
{{- end -}}
{{- range $e := $envs -}}
{{- $names := list -}}
{{- if kindIs "map" $e.env -}}{{- $names = keys $e.env -}}{{- else if kindIs "slice" $e.env -}}{{- range $e.env -}}{{- $names = append $names (toString .name) -}}{{- end -}}{{- end -}}
{{- range $n := $names | sortAlpha -}}
{{- if hasPrefix "DASK_DISTRIBUTED__COMM__" (upper $n) -}}
{{- fail (printf "%s: %s is set; with tls.enabled the chart sets Dask's TLS settings (DASK_DISTRIBUTED__COMM__*) itself: drop it" $e.path $n) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $i, $arg := $.Values.scheduler.extraArgs -}}
{{- if hasPrefix "--protocol" (toString $arg) -}}
{{- fail (printf "scheduler.extraArgs[%d]: %q; with tls.enabled the chart sets the scheduler's --protocol tls itself: drop it" $i (toString $arg)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The chart sets the plain `app` label of the scheduler, worker and runner pods (operators select them
with `kubectl -l app=dask-worker`); a podLabels entry for it would be a second `app` key.
Args: dict "labels" "path" "component".
*/}}
{{- define "modelops-dask.validateAppLabel" -}}
{{- if hasKey (default dict .labels) "app" -}}
{{- fail (printf "%s.app: %q; the chart sets app=%s on these pods (operators select them with kubectl -l app=%s): drop it, or use another label key" .path (toString (get .labels "app")) (include "modelops-dask.appLabel" .component) (include "modelops-dask.appLabel" .component)) -}}
{{- end -}}
{{- end -}}

{{/*
The results store (checked only with jobs.enabled: with it off, results.* renders nothing). The URL
is checked here rather than by a schema pattern so that a URL holding credentials is refused without
being repeated in the message (a schema error prints the value).
*/}}
{{- define "modelops-dask.validateJobs" -}}
{{- if .Values.jobs.enabled -}}
{{- include "modelops-dask.validateAppLabel" (dict "labels" .Values.jobs.runner.podLabels "path" "jobs.runner.podLabels" "component" "runner") -}}
{{- $r := .Values.results -}}
{{- $url := toString $r.url -}}
{{- $allowed := "\"\" (the release's PersistentVolumeClaim, results.persistence) or s3://BUCKET[/PREFIX] (an S3-compatible store, results.s3)" -}}
{{- if $url -}}
{{- if not (hasPrefix "s3://" $url) -}}
{{- fail (printf "results.url: %q is not a results store this chart serves; allowed: %s" $url $allowed) -}}
{{- end -}}
{{- $bucket := regexFind "^[^/]*" (trimPrefix "s3://" $url) -}}
{{- if or (contains "@" $bucket) (contains ":" $bucket) -}}
{{- fail "results.url: refused, and not repeated here: the part before the bucket name holds '@' or ':' (user:secret@ credentials, or a host:port). Credentials in the URL would be written in clear to the jobs ConfigMap, every runner Job and the results Deployment: put them in a Secret named by results.s3.existingSecret; an endpoint goes in results.s3.endpoint; the URL is s3://BUCKET[/PREFIX]" -}}
{{- end -}}
{{- if not (regexMatch "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$" $bucket) -}}
{{- fail (printf "results.url: %q: %q is not an S3 bucket name (3-63 characters: lowercase letters, digits, dots and hyphens, beginning and ending with a letter or digit); allowed: %s" $url $bucket $allowed) -}}
{{- end -}}
{{- if not (regexMatch "^s3://[^/]+(/[^\\s?#]*)?$" $url) -}}
{{- fail (printf "results.url: %q: the prefix after the bucket may not hold spaces, '?' or '#'; allowed: %s" $url $allowed) -}}
{{- end -}}
{{- if not $r.s3.existingSecret -}}
{{- fail (printf "results.s3.existingSecret: empty, but results.url is %q: an s3:// store needs the name of a Secret holding its credentials under the keys results.s3.accessKeyIdKey (%s) and results.s3.secretAccessKeyKey (%s), e.g. kubectl create secret generic results-s3 --from-literal=%s=... --from-literal=%s=..." $url $r.s3.accessKeyIdKey $r.s3.secretAccessKeyKey $r.s3.accessKeyIdKey $r.s3.secretAccessKeyKey) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The checks of one worker group. Args: dict "root" "g" (a workerGroups entry) "reserved".
*/}}
{{- define "modelops-dask.validateGroup" -}}
{{- $c := .g.cfg -}}
{{- $path := include "modelops-dask.groupPath" .g -}}
{{- $x := $c.executor -}}
{{- $executors := include "modelops-dask.settings.executorTypes" .root | fromJsonArray -}}
{{- if not (has $x.type $executors) -}}
{{- fail (printf "%s.executor.type: %q is not one of %s" $path (toString $x.type) (join ", " $executors)) -}}
{{- end -}}
{{- if not (has (toString $c.replicasOwner) (list "values" "cluster")) -}}
{{- fail (printf "%s.replicasOwner: %q is not one of values (the chart sets replicas at every upgrade), cluster (replicas at install, then kubectl scale or your autoscaler)" $path (toString $c.replicasOwner)) -}}
{{- end -}}
{{- range $k := keys (default dict $c.secretEnv) -}}
{{- if has $k $.reserved -}}
{{- fail (printf "%s.secretEnv: %s is set by the chart from its own value; set that value instead of the variable" $path $k) -}}
{{- end -}}
{{- end -}}
{{- range $name := include "modelops-dask.envNames" $c.env | fromJsonArray -}}
{{- if has $name $.reserved -}}
{{- fail (printf "%s.env: %s is set by the chart from its own value; set that value instead of the variable" $path $name) -}}
{{- end -}}
{{- end -}}
{{- include "modelops-dask.validateSettingNames" (dict "root" .root "path" (printf "%s.env" $path) "names" (include "modelops-dask.envNames" $c.env | fromJsonArray)) -}}
{{- include "modelops-dask.validateSettingNames" (dict "root" .root "path" (printf "%s.secretEnv" $path) "names" (keys (default dict $c.secretEnv))) -}}
{{- include "modelops-dask.validateMemory" (dict "c" $c "path" $path) -}}
{{- include "modelops-dask.validateAutoscaling" (dict "root" .root "c" $c "path" $path) -}}
{{- if $c.drain.enabled -}}
{{- $grace := int64 $c.terminationGracePeriodSeconds -}}
{{- $margin := int64 $c.drain.marginSeconds -}}
{{- if le $grace $margin -}}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must be greater than %s.drain.marginSeconds (%d): the drain gets the difference to let running tasks finish (or set %s.drain.enabled=false)" $path $grace $path $margin $path) -}}
{{- end -}}
{{- if and $c.lifecycle (hasKey $c.lifecycle "preStop") -}}
{{- fail (printf "%s.lifecycle.preStop: the chart's drain (%s.drain.enabled) runs `mops drain` as preStop and a container has one preStop hook; set %s.drain.enabled=false to run your own hook instead, or drop lifecycle.preStop" $path $path $path) -}}
{{- end -}}
{{- end -}}
{{- $own := default dict $c.image -}}
{{- if and (or $own.repository $own.tag) (not (hasKey $own "digest")) .root.Values.image.digest -}}
{{- fail (printf "%s.image: sets %s but the digest of image.digest (%s) is inherited and would win; set %s.image.digest too (\"\" to use the tag)" $path (ternary "repository" "tag" (not (empty $own.repository))) .root.Values.image.digest $path) -}}
{{- end -}}
{{- if and (eq $c.bundles.source "oci") $c.bundles.oci.pullSecret (has "DOCKER_CONFIG" (include "modelops-dask.envNames" $c.env | fromJsonArray)) -}}
{{- fail (printf "%s.env: DOCKER_CONFIG is set by the chart from %s.bundles.oci.pullSecret (%s); drop one of them" $path $path $c.bundles.oci.pullSecret) -}}
{{- end -}}
{{- $envs := $c.bundles.environments -}}
{{- if and $envs.packageIndexUrl $envs.packageIndexUrlSecret.name -}}
{{- fail (printf "%s.bundles.environments: packageIndexUrl and packageIndexUrlSecret.name (%s) are both set; set one: the URL, or the Secret that holds it" $path $envs.packageIndexUrlSecret.name) -}}
{{- end -}}
{{- if regexMatch "^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@" (toString $envs.packageIndexUrl) -}}
{{- $masked := regexReplaceAll "^([A-Za-z][A-Za-z0-9+.-]*://)[^:/?#]*@" (toString $envs.packageIndexUrl) "${1}***@" -}}
{{- $masked = regexReplaceAll "^([A-Za-z][A-Za-z0-9+.-]*://)([^:/?#@]*):[^/?#]*@" $masked "${1}${2}:***@" -}}
{{- fail (printf "%s.bundles.environments.packageIndexUrl: %s holds credentials, which would be in the Deployment in clear text; put the URL in a Secret and set packageIndexUrlSecret: {name: <secret>, key: <key>}" $path $masked) -}}
{{- end -}}
{{- $chartVolumes := list "tmp" "dask-config" "dask-tls" "bundles" "bundle-cache" "docker-config" -}}
{{- range $i, $v := default list $c.extraVolumes -}}
{{- if has $v.name $chartVolumes -}}
{{- fail (printf "%s.extraVolumes[%d].name: %q is a volume of the chart (%s); choose another name" $path $i $v.name (join ", " $chartVolumes)) -}}
{{- end -}}
{{- end -}}
{{- range $i, $m := default list $c.extraVolumeMounts -}}
{{- if has $m.name $chartVolumes -}}
{{- fail (printf "%s.extraVolumeMounts[%d].name: %q is a volume of the chart (%s); mount a volume of extraVolumes" $path $i $m.name (join ", " $chartVolumes)) -}}
{{- end -}}
{{- end -}}
{{- include "modelops-dask.validateAppLabel" (dict "labels" $c.podLabels "path" (printf "%s.podLabels" $path) "component" "worker") -}}
{{- range $i, $s := default list $c.extraContainers -}}
{{- if eq $s.name "worker" -}}
{{- fail (printf "%s.extraContainers[%d].name: \"worker\" is the chart's Dask worker container; name the sidecar otherwise" $path $i) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Ingress and HTTPRoute of the scheduler's dashboard.
*/}}
{{- define "modelops-dask.validateDashboardRoutes" -}}
{{- $r := .Values.scheduler.httpRoute -}}
{{- if $r.enabled -}}
{{- if not $r.parentRefs -}}
{{- fail "scheduler.httpRoute.parentRefs: empty; an HTTPRoute needs at least one Gateway, e.g. [{name: my-gateway, namespace: infra}]" -}}
{{- end -}}
{{- if not (.Capabilities.APIVersions.Has "gateway.networking.k8s.io/v1/HTTPRoute") -}}
{{- fail "scheduler.httpRoute.enabled: this cluster has no gateway.networking.k8s.io/v1 HTTPRoute (install the Gateway API CRDs, or pass --api-versions gateway.networking.k8s.io/v1/HTTPRoute to helm template)" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
executor.taskMemoryLimitMb x the pod's concurrent tasks (nworkers x nthreads) must fit in the
container's memory limit. Args: dict "c" (group config) "path".
*/}}
{{- define "modelops-dask.validateMemory" -}}
{{- $c := .c -}}
{{- $limit := dig "limits" "memory" "" (default dict $c.resources) -}}
{{- $tm := int64 $c.executor.taskMemoryLimitMb -}}
{{- if and $limit (gt $tm 0) (ne $c.executor.type "direct") -}}
{{- $limitPath := printf "%s.resources.limits.memory" .path -}}
{{- $bytes := include "modelops-dask.bytes" (dict "value" $limit "path" $limitPath) | float64 -}}
{{- $concurrent := mul (int64 $c.nworkers) (int64 $c.nthreads) -}}
{{- $limitMi := divf $bytes 1048576.0 -}}
{{- if gt (float64 (mul $tm $concurrent)) $limitMi -}}
{{- fail (printf "%s.executor.taskMemoryLimitMb (%d MiB) x %d concurrent tasks (nworkers %d x nthreads %d) = %d MiB exceeds %s (%s = %.0f MiB): lower the per-task limit or the concurrency, or raise the pod's limit" .path $tm $concurrent (int64 $c.nworkers) (int64 $c.nthreads) (mul $tm $concurrent) $limitPath (include "modelops-dask.num" $limit) $limitMi) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
A group's autoscaling: bounds the schema cannot relate (minReplicas <= maxReplicas), and KEDA's
ScaledObject API in the cluster. Args: dict "root" "c" (group config) "path".
*/}}
{{- define "modelops-dask.validateAutoscaling" -}}
{{- $a := .c.autoscaling -}}
{{- if $a.enabled -}}
{{- if gt (int64 $a.minReplicas) (int64 $a.maxReplicas) -}}
{{- fail (printf "%s.autoscaling: minReplicas (%d) is greater than maxReplicas (%d); allowed: 0 <= minReplicas <= maxReplicas, maxReplicas >= 1" .path (int64 $a.minReplicas) (int64 $a.maxReplicas)) -}}
{{- end -}}
{{- if not (.root.Capabilities.APIVersions.Has "keda.sh/v1alpha1/ScaledObject") -}}
{{- fail (printf "%s.autoscaling.enabled: this cluster has no keda.sh/v1alpha1 ScaledObject: install KEDA (its CRDs and operator), or pass --api-versions keda.sh/v1alpha1/ScaledObject to helm template, or set %s.autoscaling.enabled=false and %s.replicas" .path .path .path) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
A MODELOPS_* name that no modelops process reads (a misspelt setting would otherwise roll the pods and
only warn in the worker's log) fails the render, naming the closest known one: the known name sharing
the longest start and end with it. Args: dict "root" "path" "names".
*/}}
{{- define "modelops-dask.validateSettingNames" -}}
{{- $known := include "modelops-dask.settings.variables" .root | fromJsonArray -}}
{{- range $name := .names -}}
{{- if and (hasPrefix "MODELOPS_" (toString $name)) (not (has $name $known)) -}}
{{- $best := "" -}}
{{- $bestScore := -1 -}}
{{- range $k := $known -}}
{{- $score := 0 -}}
{{- $n := min (len $k) (len $name) -}}
{{- $prefixDone := false -}}
{{- range $i := until (int $n) -}}
{{- if and (not $prefixDone) (eq (substr 0 (int (add1 $i)) $k) (substr 0 (int (add1 $i)) $name)) -}}
{{- $score = add1 $i -}}
{{- else -}}
{{- $prefixDone = true -}}
{{- end -}}
{{- end -}}
{{- $suffixDone := false -}}
{{- range $i := until (int (sub $n $score)) -}}
{{- if and (not $suffixDone) (eq (substr (int (sub (len $k) (add1 $i))) (len $k) $k) (substr (int (sub (len $name) (add1 $i))) (len $name) $name)) -}}
{{- $score = add $score 1 -}}
{{- else -}}
{{- $suffixDone = true -}}
{{- end -}}
{{- end -}}
{{- if gt $score $bestScore -}}
{{- $best = $k -}}
{{- $bestScore = $score -}}
{{- end -}}
{{- end -}}
{{- fail (printf "%s: %s is not a modelops setting (did you mean %s?); the settings are: %s" $.path $name $best (join ", " $known)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Restricted worker egress (networkPolicy.restrictWorkerEgress) needs a way to the cluster's DNS and, for
each group that pulls OCI bundles, to its registry: an empty list would block them, or open too much.
*/}}
{{- define "modelops-dask.validateNetworkPolicy" -}}
{{- $np := .Values.networkPolicy -}}
{{- if and $np.enabled $np.restrictWorkerEgress -}}
{{- if not $np.dnsTo -}}
{{- fail "networkPolicy.dnsTo: empty, but networkPolicy.restrictWorkerEgress is true: name the cluster's DNS (default: the k8s-app=kube-dns pods in kube-system); port 53 to any address would let workers reach anything on that port" -}}
{{- end -}}
{{- range $g := (include "modelops-dask.workerGroups" . | fromJson).groups -}}
{{- if and (eq $g.cfg.bundles.source "oci") (not $g.cfg.bundles.oci.registryEgress) -}}
{{- fail (printf "%s.bundles.oci.registryEgress: empty, but the group pulls OCI bundles and networkPolicy.restrictWorkerEgress is true: give the egress rules that reach the registry, e.g. [{to: [{ipBlock: {cidr: 10.0.0.5/32}}], ports: [{port: 443, protocol: TCP}]}]" (include "modelops-dask.groupPath" $g)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
