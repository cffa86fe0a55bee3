{{/*
Names. Kubernetes names are limited to 63 characters.
*/}}
{{- define "modelops-dask.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelops-dask.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "modelops-dask.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelops-dask.schedulerName" -}}
{{- printf "%s-scheduler" (include "modelops-dask.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelops-dask.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modelops-dask.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The label key that tells worker groups apart (part of the worker selectors).
*/}}
{{- define "modelops-dask.groupLabelKey" -}}modelops-dask.io/worker-group{{- end -}}

{{/*
Selector labels. Frozen: a Deployment's selector is immutable, so these never include the chart
or app version or anything a value can change. Call with (dict "root" $ "component" "worker").
*/}}
{{- define "modelops-dask.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelops-dask.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
Metadata labels: the selector labels plus chart/version/managed-by. Same arguments as selectorLabels.
*/}}
{{- define "modelops-dask.labels" -}}
helm.sh/chart: {{ include "modelops-dask.chart" .root }}
{{ include "modelops-dask.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: modelops-dask
{{- end -}}

{{/*
Pod template labels: the selector labels plus labels that never change between chart versions. No
helm.sh/chart or app version here: a pod template that changes restarts its pods (the scheduler's
strategy is Recreate, which drops running studies), and bumping only the chart must not.
*/}}
{{- define "modelops-dask.podLabels" -}}
{{ include "modelops-dask.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: modelops-dask
{{- end -}}

{{/*
The image reference: digest wins over tag; tag defaults to the chart's appVersion.
*/}}
{{- define "modelops-dask.image" -}}
{{- $img := .Values.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag | toString) -}}
{{- end -}}
{{- end -}}

{{- define "modelops-dask.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
{{- if kindIs "map" . }}
  - name: {{ .name | quote }}
{{- else }}
  - name: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The scheduler's address as workers and clients in the release namespace use it.
*/}}
{{- define "modelops-dask.schedulerAddress" -}}
{{- printf "tcp://%s:%s" (include "modelops-dask.schedulerName" .) (include "modelops-dask.num" .Values.scheduler.ports.comm) -}}
{{- end -}}

{{/*
A number as plain text. Numbers from values files arrive as float64 and would otherwise print as
1e+06; whole numbers print without a fraction, strings pass through.
*/}}
{{- define "modelops-dask.num" -}}
{{- $v := . -}}
{{- if or (kindIs "float64" $v) (kindIs "float32" $v) -}}
{{- if eq (floor $v) (float64 $v) -}}{{ int64 $v }}{{- else -}}{{ $v }}{{- end -}}
{{- else -}}
{{- $v | toString -}}
{{- end -}}
{{- end -}}

{{/*
Deep merge for worker groups: returns JSON of `base` with `over` laid on top. Maps merge key by
key (recursively); everything else in `over` (lists, scalars, zero values included) replaces.
Sprig's merge functions skip zero values (a group could not set replicas: 0), hence this helper.
*/}}
{{- define "modelops-dask.deepMerge" -}}
{{- $out := deepCopy .base -}}
{{- range $k, $v := .over -}}
{{- $cur := get $out $k -}}
{{- if and (kindIs "map" $v) (kindIs "map" $cur) -}}
{{- $_ := set $out $k (include "modelops-dask.deepMerge" (dict "base" $cur "over" $v) | fromJson) -}}
{{- else -}}
{{- $_ := set $out $k $v -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
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
{{- $ref := "" -}}
{{- if $img.digest -}}
{{- $ref = printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- $ref = printf "%s:%s" $img.repository (default .root.Chart.AppVersion (include "modelops-dask.num" $img.tag)) -}}
{{- end -}}
{{- toJson (dict "ref" $ref "pullPolicy" $img.pullPolicy) -}}
{{- end -}}

{{/*
The worker groups, as JSON {"groups": [{"name", "suffix", "cfg"}, ...]}: the main group "default"
(from worker.*), then each worker.groups entry in name order, merged over worker.*.
*/}}
{{- define "modelops-dask.workerGroups" -}}
{{- $base := omit .Values.worker "groups" -}}
{{- $list := list (dict "name" "default" "suffix" "worker" "cfg" $base) -}}
{{- range $name := keys .Values.worker.groups | sortAlpha -}}
{{- if eq $name "default" -}}
{{- fail "worker.groups: the name \"default\" is reserved for the main workers (worker.*)" -}}
{{- end -}}
{{- $over := get $.Values.worker.groups $name | default dict -}}
{{- $cfg := include "modelops-dask.deepMerge" (dict "base" $base "over" $over) | fromJson -}}
{{- $list = append $list (dict "name" $name "suffix" (printf "worker-%s" $name) "cfg" $cfg) -}}
{{- end -}}
{{- toJson (dict "groups" $list) -}}
{{- end -}}

{{/*
Environment entries from a map {NAME: value} or a list [{name, value|valueFrom}]; values always
rendered as strings. A map value that is itself a map is taken as the entry's body (e.g. valueFrom).
Call with (dict "env" .env "path" "worker.env" "reserved" (list ...)).
*/}}
{{- define "modelops-dask.env" -}}
{{- $entries := list -}}
{{- if kindIs "map" .env -}}
{{- range $k := keys .env | sortAlpha -}}
{{- $v := get $.env $k -}}
{{- if kindIs "map" $v -}}
{{- $entries = append $entries (merge (dict "name" $k) $v) -}}
{{- else -}}
{{- $entries = append $entries (dict "name" $k "value" (include "modelops-dask.num" $v)) -}}
{{- end -}}
{{- end -}}
{{- else if kindIs "slice" .env -}}
{{- range .env -}}
{{- if hasKey . "value" -}}
{{- $entries = append $entries (merge (dict "value" (include "modelops-dask.num" .value)) (omit . "value")) -}}
{{- else -}}
{{- $entries = append $entries . -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $entries -}}
{{- if has .name $.reserved -}}
{{- fail (printf "%s: %s is set by the chart from its own value; set that value instead of the variable" $.path .name) -}}
{{- end -}}
{{- end -}}
{{- with $entries }}
{{ toYaml . }}
{{- end -}}
{{- end -}}

{{/*
Hardened security contexts, shared by every pod.
*/}}
{{- define "modelops-dask.podSecurityContext" -}}
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "modelops-dask.containerSecurityContext" -}}
{{- with .Values.containerSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "modelops-dask.tmpVolume" -}}
- name: tmp
  emptyDir:
    {{- with .Values.tmpVolume.medium }}
    medium: {{ . }}
    {{- end }}
    {{- with .Values.tmpVolume.sizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
{{- end -}}

{{- define "modelops-dask.daskConfigName" -}}
{{- printf "%s-dask-config" (include "modelops-dask.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
An httpGet probe on /health. Call with (dict "probe" .readinessProbe "port" "http").
*/}}
{{- define "modelops-dask.httpProbe" -}}
httpGet:
  path: /health
  port: {{ .port }}
initialDelaySeconds: {{ include "modelops-dask.num" .probe.initialDelaySeconds }}
periodSeconds: {{ include "modelops-dask.num" .probe.periodSeconds }}
timeoutSeconds: {{ include "modelops-dask.num" .probe.timeoutSeconds }}
failureThreshold: {{ include "modelops-dask.num" .probe.failureThreshold }}
{{- end -}}

{{/*
Scheduling knobs of a pod spec. Call with a scheduler or worker-group config map.
*/}}
{{- define "modelops-dask.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
terminationGracePeriodSeconds: {{ include "modelops-dask.num" .terminationGracePeriodSeconds }}
{{- end -}}

{{/*
Delete policy of the `helm test` pods. Hook resources are not part of the release, so `helm uninstall`
leaves behind any test pod still there. Helm 4 reads a test pod's logs (`helm test --logs`) before it
applies hook-succeeded: a passing test pod is removed at once. Helm 3 would fail `helm test --logs`
on a pod already deleted, so under Helm 3 a test pod stays until the next `helm test` replaces it.
A failing test pod always stays, for its logs.
*/}}
{{- define "modelops-dask.testHookDeletePolicy" -}}
{{- if semverCompare ">=4.0.0-0" .Capabilities.HelmVersion.Version -}}
before-hook-creation,hook-succeeded
{{- else -}}
before-hook-creation
{{- end -}}
{{- end -}}

{{/*
A Kubernetes memory quantity (8Gi, 512Mi, 2G, 1500M, or plain bytes) as whole bytes; anything else
fails naming the field. Args: dict "value" "path".
*/}}
{{- define "modelops-dask.bytes" -}}
{{- $q := include "modelops-dask.num" .value -}}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$" $q) -}}
{{- fail (printf "%s: %q is not a memory quantity this chart understands (e.g. 8Gi, 512Mi, 2G, or bytes)" .path $q) -}}
{{- end -}}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $q -}}
{{- $unit := trimPrefix $num $q -}}
{{- $units := dict "" 1.0 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 "P" 1000000000000000.0 -}}
{{- printf "%.0f" (mulf (float64 $num) (get $units $unit)) -}}
{{- end -}}

{{/*
`--memory-limit` of each worker process. "auto" with a container memory limit is that limit split
between the pod's `nworkers` processes (distributed's own "auto" would take the host's memory and
cores, not the container's); without a container limit, Dask's "auto" (the host's memory) is the
real limit and is passed as is. Also checks that executor.taskMemoryLimitMb x the pod's concurrent
tasks (nworkers x nthreads) fits in the container's limit. Args: dict "c" (group config) "path".
*/}}
{{- define "modelops-dask.memoryLimitArg" -}}
{{- $c := .c -}}
{{- $m := include "modelops-dask.num" $c.memoryLimit -}}
{{- $limit := dig "limits" "memory" "" (default dict $c.resources) -}}
{{- $limitPath := printf "%s.resources.limits.memory" .path -}}
{{- if $limit -}}
{{- $bytes := include "modelops-dask.bytes" (dict "value" $limit "path" $limitPath) | float64 -}}
{{- $tm := int64 $c.executor.taskMemoryLimitMb -}}
{{- if and (gt $tm 0) (ne $c.executor.type "direct") -}}
{{- $concurrent := mul (int64 $c.nworkers) (int64 $c.nthreads) -}}
{{- $limitMi := divf $bytes 1048576.0 -}}
{{- if gt (float64 (mul $tm $concurrent)) $limitMi -}}
{{- fail (printf "%s.executor.taskMemoryLimitMb (%d MiB) x %d concurrent tasks (nworkers %d x nthreads %d) = %d MiB exceeds %s (%s = %.0f MiB): lower the per-task limit or the concurrency, or raise the pod's limit" .path $tm $concurrent (int64 $c.nworkers) (int64 $c.nthreads) (mul $tm $concurrent) $limitPath (include "modelops-dask.num" $limit) $limitMi) -}}
{{- end -}}
{{- end -}}
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
Per-process HTTP ports of a worker group (files/process_ports.py): JSON list healthPort + i for
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

{{- define "modelops-dask.processPortsName" -}}
{{- printf "%s-process-ports" (include "modelops-dask.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelops-dask.processPortsDir" -}}/etc/modelops-dask{{- end -}}

{{- define "modelops-dask.processPortsFile" -}}
{{- printf "%s/process_ports.py" (include "modelops-dask.processPortsDir" .) -}}
{{- end -}}

{{/*
Whether any worker group runs more than one process per pod ("true" or "").
*/}}
{{- define "modelops-dask.anyPerProcessPorts" -}}
{{- range $g := (include "modelops-dask.workerGroups" . | fromJson).groups -}}
{{- if gt (int64 $g.cfg.nworkers) 1 -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/*
A worker probe: one process, httpGet /health on "http"; several, an exec probe that checks /health
of every process's port and fails naming the ones that do not answer. Args: dict "root" "probe" "ports".
*/}}
{{- define "modelops-dask.workerProbe" -}}
{{- if gt (len .ports) 1 -}}
exec:
  command:
    - python
    - {{ include "modelops-dask.processPortsFile" .root | quote }}
    - {{ printf "%.2f" (divf (float64 .probe.timeoutSeconds) (float64 (len .ports))) | quote }}
    {{- range .ports }}
    - {{ . | quote }}
    {{- end }}
initialDelaySeconds: {{ include "modelops-dask.num" .probe.initialDelaySeconds }}
periodSeconds: {{ include "modelops-dask.num" .probe.periodSeconds }}
timeoutSeconds: {{ include "modelops-dask.num" .probe.timeoutSeconds }}
failureThreshold: {{ include "modelops-dask.num" .probe.failureThreshold }}
{{- else -}}
{{- include "modelops-dask.httpProbe" (dict "probe" .probe "port" "http") -}}
{{- end -}}
{{- end -}}
