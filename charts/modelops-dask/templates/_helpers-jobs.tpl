{{/*
Studies in the cluster (jobs.enabled): the results store and the runner Job template that
`mops jobs submit` fills in (job name, labels, the study's ConfigMap, the container's args).
(Helpers are split by concern: _helpers-*.tpl; checks that fail a render are in _helpers-validate.tpl.)
*/}}

{{/*
Where runner pods (read-write) and the results server (read-only) mount the results claim.
*/}}
{{- define "modelops-dask.resultsMountPath" -}}/var/lib/modelops/results{{- end -}}

{{/*
"true" when the results store is the release's PersistentVolumeClaim (results.url ""), "" for s3://.
*/}}
{{- define "modelops-dask.resultsOnClaim" -}}
{{- if eq (toString .Values.results.url) "" -}}true{{- end -}}
{{- end -}}

{{/*
The effective results store URL that runners write to and the results server reads.
*/}}
{{- define "modelops-dask.resultsStore" -}}
{{- if include "modelops-dask.resultsOnClaim" . -}}
{{- printf "file://%s" (include "modelops-dask.resultsMountPath" .) -}}
{{- else -}}
{{- .Values.results.url -}}
{{- end -}}
{{- end -}}

{{- define "modelops-dask.resultsClaimName" -}}
{{- default (include "modelops-dask.resultsName" .) .Values.results.persistence.existingClaim -}}
{{- end -}}

{{/*
"true" when runner pods must run on the results server's node: the store is a claim whose only
access mode is ReadWriteOnce, which one node at a time attaches (the server's pod, its first consumer).
*/}}
{{- define "modelops-dask.resultsColocated" -}}
{{- if and (include "modelops-dask.resultsOnClaim" .) (eq (toJson .Values.results.persistence.accessModes) "[\"ReadWriteOnce\"]") -}}true{{- end -}}
{{- end -}}

{{/*
The store's environment (s3:// only): credentials by reference to results.s3.existingSecret, never
as literals, plus the endpoint and region when set. Empty for the claim.
*/}}
{{- define "modelops-dask.resultsStoreEnv" -}}
{{- $r := .Values.results -}}
{{- if not (include "modelops-dask.resultsOnClaim" .) }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $r.s3.existingSecret | quote }}
      key: {{ $r.s3.accessKeyIdKey | quote }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $r.s3.existingSecret | quote }}
      key: {{ $r.s3.secretAccessKeyKey | quote }}
{{- with $r.s3.endpoint }}
- name: AWS_ENDPOINT_URL_S3
  value: {{ . | quote }}
{{- end }}
{{- with $r.s3.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The results claim as a volume named "results" (claim store only). Runner pods mount it read-write,
the results server read-only (its mount says so).
*/}}
{{- define "modelops-dask.resultsVolume" -}}
{{- if include "modelops-dask.resultsOnClaim" . -}}
- name: results
  persistentVolumeClaim:
    claimName: {{ include "modelops-dask.resultsClaimName" . | quote }}
{{- end -}}
{{- end -}}

{{/*
The runner pods' affinity, as JSON: jobs.runner.affinity, plus, when the store is a ReadWriteOnce
claim (resultsColocated), a required podAffinity to the results server's pod on the same node,
appended to the user's own required podAffinity terms (a user affinity adds to it, never drops it).
*/}}
{{- define "modelops-dask.runnerAffinity" -}}
{{- $affinity := deepCopy (default dict .Values.jobs.runner.affinity) -}}
{{- if include "modelops-dask.resultsColocated" . -}}
{{- $server := include "modelops-dask.selectorLabels" (dict "root" . "component" "results") | fromYaml -}}
{{- $term := dict "labelSelector" (dict "matchLabels" $server) "topologyKey" "kubernetes.io/hostname" -}}
{{- $podAffinity := default dict (get $affinity "podAffinity") -}}
{{- $required := default list (get $podAffinity "requiredDuringSchedulingIgnoredDuringExecution") -}}
{{- $_ := set $podAffinity "requiredDuringSchedulingIgnoredDuringExecution" (append $required $term) -}}
{{- $_ := set $affinity "podAffinity" $podAffinity -}}
{{- end -}}
{{- toJson $affinity -}}
{{- end -}}

{{/*
The runner Job template (batch/v1, without metadata.name/namespace), as YAML. `mops jobs submit`
reads it from the jobs ConfigMap (runner.json "job"), names it, adds its labels, the study's
ConfigMap (a volume and a mount) and the container's args (`mops run ...`), and creates it.
The pod's volumes tmp, dask-config, results and dask-tls are the chart's.
*/}}
{{- define "modelops-dask.runnerJob" -}}
{{- $r := .Values.jobs.runner -}}
{{- $affinity := include "modelops-dask.runnerAffinity" . | fromJson -}}
{{- $onClaim := include "modelops-dask.resultsOnClaim" . -}}
{{- $jobApi129 := semverCompare ">=1.29.0-0" .Capabilities.KubeVersion.Version -}}
apiVersion: batch/v1
kind: Job
metadata:
  labels:
    {{- include "modelops-dask.labels" (dict "root" . "component" "runner") | nindent 4 }}
    app: {{ include "modelops-dask.appLabel" "runner" }}
spec:
  # Runner pods that may fail (killed, crashed) before the Job fails; each next pod resumes the
  # study from the store (tasks with a result are not run again).
  backoffLimit: {{ include "modelops-dask.num" $r.backoffLimit }}
  {{- if gt (int64 $r.activeDeadlineSeconds) 0 }}
  activeDeadlineSeconds: {{ include "modelops-dask.num" $r.activeDeadlineSeconds }}
  {{- end }}
  {{- if not (kindIs "invalid" $r.ttlSecondsAfterFinished) }}
  ttlSecondsAfterFinished: {{ include "modelops-dask.num" $r.ttlSecondsAfterFinished }}
  {{- end }}
  {{- /* The field is served (beta, on by default) from Kubernetes 1.29; with a podFailurePolicy,
  Failed is also what older versions do (a terminating pod is not failed until it has stopped). */}}
  {{- if $jobApi129 }}
  # A replacement pod starts only once the old one has fully stopped: two runners never write at once.
  podReplacementPolicy: Failed
  {{- end }}
  podFailurePolicy:
    rules:
      # `mops run` exit codes: 1 the study finished with failed tasks or was rejected (no such bundle
      # or group), 2 bad usage: another pod would end the same way, so the Job fails at once. 4 (the
      # scheduler or the store unreachable), 5 (an unexpected error), 143 (SIGTERM) start another pod.
      - action: FailJob
        onExitCodes:
          containerName: runner
          operator: In
          values: [1, 2]
        {{- if not $jobApi129 }}
        onPodConditions: []  # declared required by the batch/v1 API of Kubernetes 1.27 and 1.28
        {{- end }}
      # Evictions, preemptions and node drains do not count against backoffLimit.
      - action: Ignore
        onPodConditions:
          - type: DisruptionTarget
            status: "True"
  template:
    metadata:
      labels:
        {{- include "modelops-dask.podLabels" (dict "root" . "component" "runner") | nindent 8 }}
        app: {{ include "modelops-dask.appLabel" "runner" }}
        {{- with $r.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $r.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      restartPolicy: Never
      # The runner uses no Kubernetes API (its study is a mounted ConfigMap; it talks to Dask and
      # the store only): no Role is bound to this ServiceAccount and no token is mounted.
      serviceAccountName: {{ include "modelops-dask.runnerName" . }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- with (include "modelops-dask.imagePullSecrets" . | trim) }}{{ . | nindent 6 }}{{- end }}
      {{- with (include "modelops-dask.podSecurityContext" . | trim) }}{{ . | nindent 6 }}{{- end }}
      terminationGracePeriodSeconds: {{ include "modelops-dask.num" $r.terminationGracePeriodSeconds }}
      {{- with $r.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $r.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: runner
          image: {{ include "modelops-dask.image" . | quote }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          # Filled in by `mops jobs submit` (`mops run ...`); the image's entrypoint execs it as given.
          args: []
          {{- /* tls.enabled: the Dask configuration too, so that a runner started with a tls:// address but
          without --tls-* (a submitting mops without TLS support) still finds its certificate */}}
          {{- with (printf "%s\n%s" (include "modelops-dask.tlsEnv" .) (include "modelops-dask.resultsStoreEnv" .) | trim) }}
          env:
            {{- . | nindent 12 }}
          {{- end }}
          {{- with $r.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with (include "modelops-dask.containerSecurityContext" . | trim) }}{{ . | nindent 10 }}{{- end }}
          terminationMessagePolicy: FallbackToLogsOnError
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if .Values.daskConfig }}
            - name: dask-config
              mountPath: /etc/dask
              readOnly: true
            {{- end }}
            {{- if $onClaim }}
            - name: results
              mountPath: {{ include "modelops-dask.resultsMountPath" . }}
            {{- end }}
            {{- /* tls.enabled: the release's certificate, passed as `mops run --tls-*` (runner.json "tls") */}}
            {{- with (include "modelops-dask.tlsVolumeMount" . | trim) }}
            {{- . | nindent 12 }}
            {{- end }}
      volumes:
        {{- include "modelops-dask.tmpVolume" . | nindent 8 }}
        {{- with (include "modelops-dask.tlsVolume" . | trim) }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- if .Values.daskConfig }}
        - name: dask-config
          configMap:
            name: {{ include "modelops-dask.daskConfigName" . }}
        {{- end }}
        {{- with (include "modelops-dask.resultsVolume" . | trim) }}
        {{- . | nindent 8 }}
        {{- end }}
{{- end -}}
