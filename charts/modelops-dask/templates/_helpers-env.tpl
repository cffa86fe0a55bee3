{{/*
Container environment from a values map or list.
(Helpers are split by concern: _helpers-*.tpl; checks that fail a render are in _helpers-validate.tpl.)
*/}}

{{/*
Environment entries from a map {NAME: value} or a list [{name, value|valueFrom}]; values always
rendered as strings. A map value that is itself a map is taken as the entry's body (e.g. valueFrom).
Call with (dict "env" .env). Variables the chart sets itself are refused by modelops-dask.validateGroup.
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
{{- with $entries }}
{{ toYaml . }}
{{- end -}}
{{- end -}}

{{/*
The variable names of an env value (map keys or list entries' names), as a JSON list.
*/}}
{{- define "modelops-dask.envNames" -}}
{{- $names := list -}}
{{- if kindIs "map" . -}}
{{- $names = keys . | sortAlpha -}}
{{- else if kindIs "slice" . -}}
{{- range . -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- end -}}
{{- toJson $names -}}
{{- end -}}
