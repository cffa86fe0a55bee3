{{/*
Value helpers: numbers as text, the deep merge of worker groups, memory quantities.
(Helpers are split by concern: _helpers-*.tpl; checks that fail a render are in _helpers-validate.tpl.)
*/}}

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
