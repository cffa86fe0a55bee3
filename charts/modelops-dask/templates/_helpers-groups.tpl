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
The pods a group always has: its replicas, or with autoscaling its minReplicas (`helm test` asks those).
*/}}
{{- define "modelops-dask.groupStandingReplicas" -}}
{{- ternary (int64 .autoscaling.minReplicas) (int64 .replicas) .autoscaling.enabled -}}
{{- end -}}
