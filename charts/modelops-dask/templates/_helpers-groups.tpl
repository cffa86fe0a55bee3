{{/*
Worker groups: the merged configuration of each group and what is derived from it per group
(image, --memory-limit, per-process HTTP ports).
(Helpers are split by concern: _helpers-*.tpl; checks that fail a render are in _helpers-validate.tpl.)
*/}}

{{/*
The worker groups, as JSON {"groups": [{"name", "suffix", "cfg"}, ...]}: the main group "default"
(from worker.*), then each worker.groups entry in name order, merged over worker.*.
*/}}
{{- define "modelops-dask.workerGroups" -}}
{{- $base := omit .Values.worker "groups" -}}
{{- $list := list (dict "name" "default" "suffix" "worker" "cfg" $base) -}}
{{- range $name := keys .Values.worker.groups | sortAlpha -}}
{{- $over := get $.Values.worker.groups $name | default dict -}}
{{- $cfg := include "modelops-dask.deepMerge" (dict "base" $base "over" $over) | fromJson -}}
{{- $list = append $list (dict "name" $name "suffix" (printf "worker-%s" $name) "cfg" $cfg) -}}
{{- end -}}
{{- toJson (dict "groups" $list) -}}
{{- end -}}

{{/*
A group's values path in messages: "worker" for the main group, "worker.groups.NAME" otherwise.
*/}}
{{- define "modelops-dask.groupPath" -}}
{{- ternary "worker" (printf "worker.groups.%s" .name) (eq .name "default") -}}
{{- end -}}

{{/*
A worker group's image as JSON {"ref", "pullPolicy"}: the group's `image` laid over the top-level
one; digest wins over tag, tag defaults to appVersion. Args: dict "root" "c".
*/}}
{{- define "modelops-dask.groupImage" -}}
{{- $img := include "modelops-dask.deepMerge" (dict "base" .root.Values.image "over" (default dict .c.image)) | fromJson -}}
{{- $ref := include "modelops-dask.imageRef" (dict "image" $img "root" .root) -}}
{{- toJson (dict "ref" $ref "pullPolicy" $img.pullPolicy) -}}
{{- end -}}

{{/*
`--memory-limit` of each worker process. "auto" with a container memory limit is that limit split
between the pod's `nworkers` processes (distributed's own "auto" would take the host's memory and
cores, not the container's); without a container limit, Dask's "auto" (the host's memory) is the
real limit and is passed as is (modelops-dask.validateMemory checks that the per-task limit x the
pod's concurrent tasks fits). Args: dict "c" (group config) "path".
*/}}
{{- define "modelops-dask.memoryLimitArg" -}}
{{- $c := .c -}}
{{- $m := include "modelops-dask.num" $c.memoryLimit -}}
{{- $limit := dig "limits" "memory" "" (default dict $c.resources) -}}
{{- $limitPath := printf "%s.resources.limits.memory" .path -}}
{{- if $limit -}}
{{- $bytes := include "modelops-dask.bytes" (dict "value" $limit "path" $limitPath) | float64 -}}
{{- if eq $m "auto" -}}
{{- printf "%.0f" (floor (divf $bytes (float64 $c.nworkers))) -}}
{{- else -}}
{{- $m -}}
{{- end -}}
{{- else -}}
{{- $m -}}
{{- end -}}
{{- end -}}

{{/*
Per-process HTTP ports of a worker group (modelops.worker.process_ports): JSON list healthPort + i for
i < nworkers. Port i is named "http" (i = 0) or "http-i" in the pod, the PodMonitor and the policy.
*/}}
{{- define "modelops-dask.processPorts" -}}
{{- $base := int64 .healthPort -}}
{{- $out := list -}}
{{- range $i := until (int .nworkers) -}}
{{- $out = append $out (add $base $i) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{- define "modelops-dask.processPortName" -}}
{{- if eq (int .) 0 -}}http{{- else -}}{{ printf "http-%d" (int .) }}{{- end -}}
{{- end -}}

{{/*
Names of every worker HTTP port any group declares ("http", "http-1", ...), as a JSON list.
*/}}
{{- define "modelops-dask.allProcessPortNames" -}}
{{- $max := 1 -}}
{{- range $g := (include "modelops-dask.workerGroups" . | fromJson).groups -}}
{{- $max = max $max (int64 $g.cfg.nworkers) -}}
{{- end -}}
{{- $out := list -}}
{{- range $i := until (int $max) -}}
{{- $out = append $out (include "modelops-dask.processPortName" $i) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
A worker group's Deployment name (also its PodDisruptionBudget's and ScaledObject's). Args: dict "root" "g".
*/}}
{{- define "modelops-dask.groupDeploymentName" -}}
{{- printf "%s-%s" (include "modelops-dask.fullname" .root) .g.suffix | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The autoscaled worker groups as the scheduler reads them (MODELOPS_WORKER_GROUPS, modelops.settings): JSON
[{name, executor, nworkers, nthreads, min, max}]; "" when no group autoscales. Groups with fixed replicas
are not listed: changing them (their executor included) then rolls only their own pods, never the scheduler.
*/}}
{{- define "modelops-dask.workerGroupsJson" -}}
{{- $out := list -}}
{{- range $g := (include "modelops-dask.workerGroups" . | fromJson).groups -}}
{{- $c := $g.cfg -}}
{{- if $c.autoscaling.enabled -}}
{{- $out = append $out (dict "name" $g.name "executor" $c.executor.type "nworkers" (int64 $c.nworkers) "nthreads" (int64 $c.nthreads) "min" (int64 $c.autoscaling.minReplicas) "max" (int64 $c.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- if $out -}}{{- toJson $out -}}{{- end -}}
{{- end -}}

{{/*
Who owns a group's `.spec.replicas` and what the chart renders for it, as JSON {"owner", "render", "replicas",
"live"}: owner "values" (replicasOwner: values), "cluster" (replicasOwner: cluster: kubectl scale, an HPA of
the user's) or "autoscaler" (autoscaling.enabled: KEDA's HPA); render: whether the Deployment carries
`replicas`; replicas: what it carries; live: the Deployment's count in the cluster (-1 where none is found:
install, `helm template`, --dry-run=client). Args: dict "root" "g" (a workerGroups entry).

The values always render `replicas`. For the cluster's owners, Helm must not fight the owner nor reset the
count: under server-side apply (Helm 4) a manifest that sets `replicas` to another value than the one another
manager wrote is a conflict (the upgrade fails), and a manifest that drops a field Helm alone owned resets it to
its default (1). So, from the live Deployment (`lookup`):
- none yet: `replicas` for "cluster" (the starting count), nothing for "autoscaler" (KEDA scales it);
- another manager (kubectl scale, the HPA) owns the count and Helm applied server-side before (a manager
  "helm" with operation Apply): nothing; Helm's ownership ends, the count stays the owner's;
- otherwise (Helm alone owns it, or Helm applies client-side: Helm 3, or a release Helm 3 installed): the live
  count, unchanged; Helm 3's three-way merge would otherwise reset a dropped field too.
*/}}
{{- define "modelops-dask.groupReplicas" -}}
{{- $c := .g.cfg -}}
{{- $owner := ternary "autoscaler" $c.replicasOwner $c.autoscaling.enabled -}}
{{- $out := dict "owner" $owner "render" true "replicas" (int64 $c.replicas) "live" -1 -}}
{{- if ne $owner "values" -}}
{{- $name := include "modelops-dask.groupDeploymentName" . -}}
{{- $live := lookup "apps/v1" "Deployment" .root.Release.Namespace $name -}}
{{- if not $live -}}
{{- $_ := set $out "render" (eq $owner "cluster") -}}
{{- else -}}
{{- $count := int64 (dig "spec" "replicas" 1 $live) -}}
{{- $_ := set $out "live" $count -}}
{{- $_ := set $out "replicas" $count -}}
{{- $helmApplies := false -}}
{{- $others := false -}}
{{- range $m := (dig "metadata" "managedFields" list $live) -}}
{{- $isHelm := eq (lower (toString $m.manager)) "helm" -}}
{{- if and $isHelm (eq (toString $m.operation) "Apply") -}}
{{- $helmApplies = true -}}
{{- end -}}
{{- if and (not $isHelm) (hasKey (dig "fieldsV1" "f:spec" dict $m) "f:replicas") -}}
{{- $others = true -}}
{{- end -}}
{{- end -}}
{{- $_ := set $out "render" (not (and $helmApplies $others)) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
The pods a group always has (`helm test` asks those): for the values, replicas; for the cluster, the live
count (replicas at install); with autoscaling, minReplicas. Args: dict "root" "g".
*/}}
{{- define "modelops-dask.groupStandingReplicas" -}}
{{- $r := include "modelops-dask.groupReplicas" . | fromJson -}}
{{- $c := .g.cfg -}}
{{- if eq $r.owner "autoscaler" -}}
{{- int64 $c.autoscaling.minReplicas -}}
{{- else if eq $r.owner "cluster" -}}
{{- ternary (int64 $r.live) (int64 $c.replicas) (ge (int64 $r.live) 0) -}}
{{- else -}}
{{- int64 $c.replicas -}}
{{- end -}}
{{- end -}}

{{/*
Whether the scheduler keeps the worker pods' pod-deletion-cost current (scheduler.podDeletionCost: enabled,
or auto with a group that autoscales): "true" or "".
*/}}
{{- define "modelops-dask.podDeletionCost" -}}
{{- $mode := .Values.scheduler.podDeletionCost -}}
{{- if eq $mode "enabled" -}}true
{{- else if eq $mode "auto" -}}
{{- range $g := (include "modelops-dask.workerGroups" . | fromJson).groups -}}
{{- if $g.cfg.autoscaling.enabled -}}true{{- break -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The label selector of the release's worker pods (MODELOPS_POD_DELETION_COST_SELECTOR).
*/}}
{{- define "modelops-dask.workerPodSelector" -}}
{{- $labels := include "modelops-dask.selectorLabels" (dict "root" . "component" "worker") | fromYaml -}}
{{- $terms := list -}}
{{- range $k := keys $labels | sortAlpha -}}
{{- $terms = append $terms (printf "%s=%s" $k (get $labels $k)) -}}
{{- end -}}
{{- join "," $terms -}}
{{- end -}}
