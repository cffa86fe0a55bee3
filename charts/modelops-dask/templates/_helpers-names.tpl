{{/*
Resource names (Kubernetes names are limited to 63 characters) and addresses.
(Helpers are split by concern: _helpers-*.tpl; checks that fail a render are in _helpers-validate.tpl.)
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
The scheduler's own ServiceAccount (and Role), made only when it keeps the pods' deletion cost.
*/}}
{{- define "modelops-dask.schedulerAccountName" -}}
{{- include "modelops-dask.schedulerName" . -}}
{{- end -}}

{{- define "modelops-dask.daskConfigName" -}}
{{- printf "%s-dask-config" (include "modelops-dask.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The image's module that gives each worker process its own HTTP port (nanny and worker preload) and
is the exec probe of a pod with several processes (`python -m`).
*/}}
{{- define "modelops-dask.processPortsModule" -}}modelops.worker.process_ports{{- end -}}

{{/*
The scheduler's address as workers and clients in the release namespace use it (tls:// with tls.enabled).
*/}}
{{- define "modelops-dask.schedulerAddress" -}}
{{- printf "%s://%s:%s" (ternary "tls" "tcp" (eq (toString .Values.tls.enabled) "true")) (include "modelops-dask.schedulerName" .) (include "modelops-dask.num" .Values.scheduler.ports.comm) -}}
{{- end -}}

{{/*
Studies in the cluster (jobs.enabled): the runner pods' ServiceAccount, the submitters' Role and
RoleBinding, the ConfigMap `mops jobs submit` reads, and the results store's claim, server and Service.
*/}}
{{- define "modelops-dask.runnerName" -}}
{{- printf "%s-runner" (include "modelops-dask.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelops-dask.submitterName" -}}
{{- printf "%s-submitter" (include "modelops-dask.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelops-dask.jobsConfigName" -}}
{{- printf "%s-jobs" (include "modelops-dask.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The results PersistentVolumeClaim, Deployment and Service share this name.
*/}}
{{- define "modelops-dask.resultsName" -}}
{{- printf "%s-results" (include "modelops-dask.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
