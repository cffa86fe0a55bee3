{{/*
Pod and container building blocks shared by the scheduler, the workers and the test pods.
(Helpers are split by concern: _helpers-*.tpl; checks that fail a render are in _helpers-validate.tpl.)
*/}}

{{/*
An image reference, built here only: digest wins over tag; tag defaults to the chart's appVersion.
Args: dict "image" (repository, tag, digest) "root" $.
*/}}
{{- define "modelops-dask.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion (include "modelops-dask.num" .image.tag)) -}}
{{- end -}}
{{- end -}}

{{/*
The release's image (scheduler, results server, runner and test pods; a worker group may have its own).
*/}}
{{- define "modelops-dask.image" -}}
{{- include "modelops-dask.imageRef" (dict "image" .Values.image "root" .) -}}
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

{{/*
A group's own containers (initContainers, extraContainers), as given, except that one without a
securityContext gets containerSecurityContext: every container the chart renders is then admitted in
a namespace enforcing the `restricted` Pod Security Standard. A container's own securityContext is
kept whole. Call with (dict "root" $ "containers" LIST).
*/}}
{{- define "modelops-dask.groupContainers" -}}
{{- $out := list -}}
{{- range $c := .containers -}}
{{- if and (not (hasKey $c "securityContext")) $.root.Values.containerSecurityContext -}}
{{- $c = merge (dict "securityContext" $.root.Values.containerSecurityContext) $c -}}
{{- end -}}
{{- $out = append $out $c -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/*
Where a pull secret's config.json is mounted (bundles.oci.pullSecret); the workers' DOCKER_CONFIG.
*/}}
{{- define "modelops-dask.dockerConfigDir" -}}
/etc/modelops/docker
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
A worker probe: one process, httpGet /health on "http"; several, an exec probe that checks /health
of every process's port and fails naming the ones that do not answer. Args: dict "root" "probe" "ports".
*/}}
{{- define "modelops-dask.workerProbe" -}}
{{- if gt (len .ports) 1 -}}
exec:
  command:
    - python
    - -m
    - {{ include "modelops-dask.processPortsModule" .root | quote }}
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
