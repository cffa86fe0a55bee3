{{/*
TLS with client certificates between Dask components (tls.enabled): Dask's own distributed.comm.tls
settings, given to every Dask process as DASK_DISTRIBUTED__COMM__* variables naming the files of one
Secret (keys ca.crt, tls.crt, tls.key) mounted read-only at tlsMountPath. The same variables as
modelops.tls.dask_tls_env (tests/chart checks that they agree).
(Helpers are split by concern: _helpers-*.tpl; checks that fail a render are in _helpers-validate.tpl.)
*/}}

{{- define "modelops-dask.tlsMountPath" -}}/etc/modelops/tls{{- end -}}

{{/*
The Secret with ca.crt, tls.crt and tls.key: tls.existingSecret, else the one the chart generates or
cert-manager issues (<fullname>-tls).
*/}}
{{- define "modelops-dask.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "modelops-dask.fullname" .) | trunc 63 | trimSuffix "-") .Values.tls.existingSecret -}}
{{- end -}}

{{/*
The Secret that holds the CA's own key (chart-generated CA, or cert-manager's self-signed CA when no
issuerRef is given): what `openssl x509 -req -CA ... -CAkey ...` signs a laptop's client certificate with.
*/}}
{{- define "modelops-dask.tlsCaSecretName" -}}
{{- printf "%s-tls-ca" (include "modelops-dask.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
"true" when the chart generates the CA and certificate itself (neither existingSecret nor cert-manager).
*/}}
{{- define "modelops-dask.tlsGenerated" -}}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) (not .Values.tls.certManager.enabled) -}}true{{- end -}}
{{- end -}}

{{/*
The DNS names in the release's certificate: the scheduler's Service, short and qualified. (Dask checks
no host name, only the CA; the names are for other TLS clients and for the operator's eyes.)
*/}}
{{- define "modelops-dask.tlsDnsNames" -}}
{{- $s := include "modelops-dask.schedulerName" . -}}
{{- toJson (list $s (printf "%s.%s" $s .Release.Namespace) (printf "%s.%s.svc" $s .Release.Namespace)) -}}
{{- end -}}

{{/*
Environment entries of a Dask process (scheduler, worker and nanny, helm test client): TLS for every
role with the mounted certificate, and plain TCP refused. Empty without tls.enabled.
*/}}
{{- define "modelops-dask.tlsEnv" -}}
{{- if .Values.tls.enabled -}}
{{- $d := include "modelops-dask.tlsMountPath" . }}
- name: DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION
  value: "True"
- name: DASK_DISTRIBUTED__COMM__TLS__CA_FILE
  value: {{ printf "%s/ca.crt" $d | quote }}
{{- range $role := list "SCHEDULER" "WORKER" "CLIENT" }}
- name: {{ printf "DASK_DISTRIBUTED__COMM__TLS__%s__CERT" $role }}
  value: {{ printf "%s/tls.crt" $d | quote }}
- name: {{ printf "DASK_DISTRIBUTED__COMM__TLS__%s__KEY" $role }}
  value: {{ printf "%s/tls.key" $d | quote }}
{{- end }}
{{- end -}}
{{- end -}}

{{- define "modelops-dask.tlsVolumeMount" -}}
{{- if .Values.tls.enabled -}}
- name: dask-tls
  mountPath: {{ include "modelops-dask.tlsMountPath" . }}
  readOnly: true
{{- end -}}
{{- end -}}

{{/*
Only the three keys are projected (a Secret may hold more). With podSecurityContext.fsGroup the files
are 0440, readable by the pod's group only; without it 0444 (else a non-root user could not read them).
*/}}
{{- define "modelops-dask.tlsVolume" -}}
{{- if .Values.tls.enabled -}}
- name: dask-tls
  secret:
    secretName: {{ include "modelops-dask.tlsSecretName" . | quote }}
    defaultMode: {{ if (default dict .Values.podSecurityContext).fsGroup }}0440{{ else }}0444{{ end }}
    items:
      - key: ca.crt
        path: ca.crt
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end -}}
{{- end -}}

{{/*
runner.json "tls": where the runner pod finds the files (`mops run --tls-ca-file/--tls-cert/--tls-key`), or nil.
*/}}
{{- define "modelops-dask.runnerTls" -}}
{{- if .Values.tls.enabled -}}
{{- $d := include "modelops-dask.tlsMountPath" . -}}
{{- toJson (dict "caFile" (printf "%s/ca.crt" $d) "certFile" (printf "%s/tls.crt" $d) "keyFile" (printf "%s/tls.key" $d)) -}}
{{- else -}}
null
{{- end -}}
{{- end -}}
