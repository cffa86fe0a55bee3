{{/*
Labels: frozen selector labels, metadata labels and pod template labels.
(Helpers are split by concern: _helpers-*.tpl; checks that fail a render are in _helpers-validate.tpl.)
*/}}

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
The plain `app` label operators select pods by, e.g. `kubectl logs -l app=dask-worker`: dask-scheduler,
dask-worker or modelops-runner. Pod template labels (and the runner Job's own labels) only, never a
selector: selectors are frozen (see selectorLabels). Call with the component name.
*/}}
{{- define "modelops-dask.appLabel" -}}
{{- get (dict "scheduler" "dask-scheduler" "worker" "dask-worker" "runner" "modelops-runner") . -}}
{{- end -}}
