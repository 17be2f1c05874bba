{{/* Names and labels --------------------------------------------------------------------------- */}}

{{- define "worldloom.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "worldloom.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "worldloom.labels" -}}
{{ include "worldloom.selectorLabels" . }}
app.kubernetes.io/part-of: worldloom
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* Every pod of the release carries these, so the default-deny NetworkPolicy selects them all. */}}
{{- define "worldloom.releaseSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "worldloom.image" -}}
{{- $root := .root -}}
{{- $tag := .tag | default $root.Values.global.image.tag | default $root.Chart.AppVersion -}}
{{- printf "%s/%s:%s%s" $root.Values.global.image.registry .repository $tag (ternary (printf "-%s" .variant) "" (and (not (empty .variant)) (ne .variant "cpu"))) -}}
{{- end -}}

{{/* Dependencies ---------------------------------------------------------------------------------- */}}

{{- define "worldloom.kafkaName" -}}{{ include "worldloom.fullname" . }}-kafka{{- end -}}

{{- define "worldloom.kafkaBootstrap" -}}
{{- if eq .Values.kafka.mode "strimzi" -}}
{{- printf "%s-kafka-bootstrap:9092" (include "worldloom.kafkaName" .) -}}
{{- else -}}
{{- required "kafka.external.bootstrapServers is required when kafka.mode is external" .Values.kafka.external.bootstrapServers -}}
{{- end -}}
{{- end -}}

{{- define "worldloom.s3Endpoint" -}}
{{- if eq .Values.objectStore.mode "minio" -}}
{{- printf "%s-minio:9000" (include "worldloom.fullname" .) -}}
{{- else -}}
{{- required "objectStore.external.endpoint is required when objectStore.mode is external" .Values.objectStore.external.endpoint -}}
{{- end -}}
{{- end -}}

{{- define "worldloom.s3Secret" -}}
{{- .Values.objectStore.existingSecret | default (printf "%s-s3" (include "worldloom.fullname" .)) -}}
{{- end -}}

{{- define "worldloom.milvusUri" -}}
{{- if eq .Values.vectors.mode "milvus" -}}
{{- printf "http://%s-milvus:19530" (include "worldloom.fullname" .) -}}
{{- else -}}
{{- required "vectors.external.uri is required when vectors.mode is external" .Values.vectors.external.uri -}}
{{- end -}}
{{- end -}}

{{- define "worldloom.authSecret" -}}
{{- .Values.auth.existingSecret | default (printf "%s-api-tokens" (include "worldloom.fullname" .)) -}}
{{- end -}}

{{- define "worldloom.rayHeadService" -}}{{ include "worldloom.fullname" . }}-ray-head-svc{{- end -}}

{{- define "worldloom.rayHasGpuGroup" -}}
{{- $gpu := false -}}
{{- range .Values.ray.workerGroups }}{{ if .gpu }}{{ $gpu = true }}{{ end }}{{ end -}}
{{- and .Values.ray.enabled .Values.gpu.enabled $gpu -}}
{{- end -}}

{{/*
One service, resolved: the global defaults with the service's block on top ("settings" and "env"
merged key by key, everything else replaced whole), plus what the chart derives (GPU placement,
dependency addresses). Returns YAML; callers use `include "worldloom.service" ... | fromYaml`.
*/}}
{{- define "worldloom.service" -}}
{{- $root := .root -}}
{{- $g := $root.Values.global -}}
{{- $b := get $root.Values.services .name -}}
{{- $gpuIn := $b.gpu | default dict -}}
{{- $capable := $gpuIn.capable | default false -}}
{{- $gpuOn := false -}}
{{- if hasKey $gpuIn "enabled" -}}{{- $gpuOn = $gpuIn.enabled -}}{{- else -}}{{- $gpuOn = and $capable $root.Values.gpu.enabled -}}{{- end -}}
{{- if and $gpuOn (not $capable) -}}{{- fail (printf "services.%s.gpu.enabled: the %s service cannot use a GPU (gpu.capable is false)" .name .name) -}}{{- end -}}
{{- $s := dict "name" .name "module" $b.module "kind" ($b.kind | default "deployment") "port" ($b.port | default 8000) -}}
{{- $_ := set $s "probes" (merge (deepCopy ($b.probes | default dict)) (dict "liveness" "/healthz" "readiness" "/readyz")) -}}
{{- $_ := set $s "uses" ($b.uses | default list) -}}
{{- $_ := set $s "consumer" ($b.consumer | default dict) -}}
{{- range $k := list "replicas" "resources" "nodeSelector" "tolerations" "affinity" "priorityClassName" "terminationGracePeriodSeconds" "tmpSizeLimit" "podSecurityContext" "securityContext" -}}
{{- $_ := set $s $k (ternary (get $b $k) (get $g $k) (hasKey $b $k)) -}}
{{- end -}}
{{- range $k := list "env" "autoscaling" "podDisruptionBudget" "startupProbe" -}}
{{- $_ := set $s $k (merge (deepCopy (get $b $k | default dict)) (deepCopy (get $g $k | default dict))) -}}
{{- end -}}
{{- $_ := set $s "secretSettings" ($b.secretSettings | default dict) -}}
{{- $img := $b.image | default dict -}}
{{- $_ := set $s "image" (include "worldloom.image" (dict "root" $root "repository" ($img.repository | default .name) "tag" ($img.tag | default "") "variant" ($img.variant | default (ternary "cuda" "cpu" $gpuOn)))) -}}
{{- $_ := set $s "gpuOn" $gpuOn -}}
{{- if $gpuOn -}}
{{- $gpu := $root.Values.gpu -}}
{{- $_ := set $s "nodeSelector" (merge (deepCopy ($b.nodeSelector | default dict)) (deepCopy $gpu.nodeSelector)) -}}
{{- $_ := set $s "tolerations" (concat $gpu.tolerations ($b.tolerations | default list)) -}}
{{- $_ := set $s "runtimeClassName" ($gpuIn.runtimeClassName | default $gpu.runtimeClassName) -}}
{{- $res := deepCopy $s.resources -}}
{{- $count := toString ($gpuIn.count | default $gpu.count) -}}
{{- $_ := set $res "requests" (set (deepCopy ($res.requests | default dict)) $gpu.resourceName $count) -}}
{{- $_ := set $res "limits" (set (deepCopy ($res.limits | default dict)) $gpu.resourceName $count) -}}
{{- $_ := set $s "resources" $res -}}
{{- end -}}
{{/* settings the chart owns (addresses of what it deploys), then global.settings, then the service's */}}
{{- $derived := dict "http" (dict "host" "0.0.0.0" "port" $s.port) -}}
{{- if has "bus" $s.uses -}}
{{- $bus := dict "kind" "kafka" "bootstrap_servers" (include "worldloom.kafkaBootstrap" $root) -}}
{{- if eq $root.Values.kafka.mode "strimzi" -}}
{{- $_ := set $bus "partitions" $root.Values.kafka.topicDefaults.partitions -}}
{{- $_ := set $bus "replication_factor" $root.Values.kafka.topicDefaults.replicas -}}
{{- end -}}
{{- $_ := set $derived "bus" $bus -}}
{{- end -}}
{{- if has "store" $s.uses -}}
{{- $store := dict "kind" "s3" "endpoint" (include "worldloom.s3Endpoint" $root) "bucket" $root.Values.objectStore.bucket "secure" (and (eq $root.Values.objectStore.mode "external") $root.Values.objectStore.external.secure) -}}
{{- if $root.Values.objectStore.region -}}{{- $_ := set $store "region" $root.Values.objectStore.region -}}{{- end -}}
{{- $_ := set $derived "store" $store -}}
{{- end -}}
{{- if has "vectors" $s.uses -}}
{{- $_ := set $derived "vectors" (dict "uri" (include "worldloom.milvusUri" $root)) -}}
{{- end -}}
{{- $_ := set $s "apiAccess" false -}}
{{- if and (has "ray" $s.uses) (eq $root.Values.training.launcher "rayjob") -}}
{{- $_ := set $s "apiAccess" true -}}
{{- $_ := set $derived "training" (dict "launcher" "rayjob" "allow_gpu" $root.Values.gpu.enabled "rayjob" (include "worldloom.rayjobSettings" (dict "root" $root "svc" $s "block" $b) | fromYaml)) -}}
{{- else if and (has "ray" $s.uses) $root.Values.ray.enabled -}}
{{- $_ := set $derived "training" (dict "ray_address" (printf "ray://%s:10001" (include "worldloom.rayHeadService" $root)) "allow_gpu" (eq (include "worldloom.rayHasGpuGroup" $root) "true")) -}}
{{- end -}}
{{- if $s.consumer.group -}}{{- $_ := set $derived "consumer_group" $s.consumer.group -}}{{- end -}}
{{- if eq .name "generate" -}}{{- $_ := set $derived "device" (ternary "cuda" "cpu" $gpuOn) -}}{{- end -}}
{{- $_ := set $s "settings" (mustMergeOverwrite $derived (deepCopy ($g.settings | default dict)) (deepCopy ($b.settings | default dict))) -}}
{{- toYaml $s -}}
{{- end -}}

{{/*
What a job service needs to launch each job as a RayJob (worldloom.core.settings.RayJobSettings): the
service's own image (its CUDA variant for GPU workers), the pools, the resources, the labels the
rayjob NetworkPolicy selects, and the Secret keys of the store credentials (never their values).
Maps that are settings values (not blocks) are rendered as JSON strings.
*/}}
{{- define "worldloom.rayjobSettings" -}}
{{- $root := .root -}}
{{- $rj := $root.Values.training.rayjob -}}
{{- $img := .block.image | default dict -}}
{{- $image := dict "root" $root "repository" ($img.repository | default .svc.name) "tag" ($img.tag | default "") -}}
{{- $labels := merge (include "worldloom.selectorLabels" (dict "root" $root "component" "rayjob") | fromYaml) (dict "app.kubernetes.io/part-of" "worldloom" "worldloom.io/uses-store" "true") -}}
{{- $out := dict "namespace" $root.Release.Namespace "ray_version" $root.Values.ray.version -}}
{{- $_ := set $out "image" (include "worldloom.image" (merge (dict "variant" "cpu") $image)) -}}
{{- $_ := set $out "gpu_image" (include "worldloom.image" (merge (dict "variant" "cuda") $image)) -}}
{{- $_ := set $out "labels" (toJson $labels) -}}
{{- $_ := set $out "node_selector" (toJson ($root.Values.global.nodeSelector | default dict)) -}}
{{- $_ := set $out "tolerations" ($root.Values.global.tolerations | default list) -}}
{{- $_ := set $out "gpu_node_selector" (toJson ($root.Values.gpu.nodeSelector | default dict)) -}}
{{- $_ := set $out "gpu_tolerations" ($root.Values.gpu.tolerations | default list) -}}
{{- $_ := set $out "gpu_resource" $root.Values.gpu.resourceName -}}
{{- with $root.Values.gpu.runtimeClassName }}{{ $_ := set $out "gpu_runtime_class" . }}{{ end -}}
{{- $_ := set $out "head_resources" (toJson $rj.head.resources) -}}
{{- $_ := set $out "worker_resources" (toJson $rj.worker.resources) -}}
{{- $_ := set $out "pod_security_context" (toJson .svc.podSecurityContext) -}}
{{- $_ := set $out "security_context" (toJson .svc.securityContext) -}}
{{- $_ := set $out "env" (toJson (include "worldloom.stringMap" $root.Values.ray.workerEnv | fromJson)) -}}
{{- $_ := set $out "image_pull_secrets" ($root.Values.global.image.pullSecrets | default list) -}}
{{- $secret := include "worldloom.s3Secret" $root -}}
{{- $_ := set $out "store_access_key" (dict "name" $secret "key" $root.Values.objectStore.accessKeyKey) -}}
{{- $_ := set $out "store_secret_key" (dict "name" $secret "key" $root.Values.objectStore.secretKeyKey) -}}
{{- $_ := set $out "ttl_seconds_after_finished" $rj.ttlSecondsAfterFinished -}}
{{- if $rj.activeDeadlineSeconds }}{{ $_ := set $out "active_deadline_seconds" $rj.activeDeadlineSeconds }}{{ end -}}
{{- toYaml $out -}}
{{- end -}}

{{- define "worldloom.stringMap" -}}
{{- $out := dict -}}
{{- range $k, $v := . }}{{ $_ := set $out $k (toString $v) }}{{ end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The WORLDLOOM_<SERVICE>_* variables of a settings tree: maps nest with "__", lists are JSON. */}}
{{- define "worldloom.settingsEnv" -}}
{{- $prefix := .prefix -}}
{{- range $key := keys .settings | sortAlpha }}
{{- $value := get $.settings $key }}
{{- $name := printf "%s%s" $prefix (upper $key) }}
{{- if kindIs "map" $value }}
{{- include "worldloom.settingsEnv" (dict "prefix" (printf "%s__" $name) "settings" $value) }}
{{- else if kindIs "slice" $value }}
- name: {{ $name }}
  value: {{ toJson $value | quote }}
{{- else if kindIs "invalid" $value }}
{{- else }}
- name: {{ $name }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The full env of a service container: its settings, its secrets and plain extra variables. */}}
{{- define "worldloom.env" -}}
{{- $root := .root -}}
{{- $s := .svc -}}
{{- $prefix := printf "WORLDLOOM_%s_" (upper $s.name | replace "-" "_") -}}
{{- range $path := list "http.api_tokens" "store.access_key" "store.secret_key" "vectors.token" }}
{{- $parts := splitList "." $path }}
{{- if hasKey (get $s.settings (first $parts) | default dict) (last $parts) }}
{{- fail (printf "services.%s.settings.%s is a credential: it comes from a Secret (see auth, objectStore, vectors)" $s.name $path) }}
{{- end }}
{{- end }}
{{- include "worldloom.settingsEnv" (dict "prefix" $prefix "settings" $s.settings) }}
- name: {{ $prefix }}HTTP__API_TOKENS
  valueFrom: {secretKeyRef: {name: {{ include "worldloom.authSecret" $root }}, key: {{ $root.Values.auth.secretKey }}}}
{{- if has "store" $s.uses }}
- name: {{ $prefix }}STORE__ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ include "worldloom.s3Secret" $root }}, key: {{ $root.Values.objectStore.accessKeyKey }}}}
- name: {{ $prefix }}STORE__SECRET_KEY
  valueFrom: {secretKeyRef: {name: {{ include "worldloom.s3Secret" $root }}, key: {{ $root.Values.objectStore.secretKeyKey }}}}
{{- end }}
{{- if and (has "vectors" $s.uses) $root.Values.vectors.existingSecret }}
- name: {{ $prefix }}VECTORS__TOKEN
  valueFrom: {secretKeyRef: {name: {{ $root.Values.vectors.existingSecret }}, key: {{ $root.Values.vectors.tokenKey }}}}
{{- end }}
{{- range $setting, $ref := $s.secretSettings }}
- name: {{ $prefix }}{{ upper $setting | replace "." "__" }}
  valueFrom: {secretKeyRef: {name: {{ $ref.name }}, key: {{ $ref.key }}}}
{{- end }}
- name: HOME
  value: /tmp
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- range $name, $value := $s.env }}
- name: {{ $name }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end -}}

{{/* Pod-level parts every workload of the chart shares. */}}
{{- define "worldloom.podSecurity" -}}
{{- /* only a job service launching RayJobs talks to the API server; nothing else gets a token */}}
automountServiceAccountToken: {{ .apiAccess | default false }}
securityContext:
  {{- toYaml .podSecurityContext | nindent 2 }}
{{- end -}}

{{- define "worldloom.placement" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* Labels that say which dependencies a pod talks to; the dependencies' NetworkPolicies admit them. */}}
{{- define "worldloom.usesLabels" -}}
{{- range .uses }}
worldloom.io/uses-{{ . }}: "true"
{{- end }}
{{- end -}}

{{- define "worldloom.enabledServices" -}}
{{- $names := list -}}
{{- range $name := keys .Values.services | sortAlpha -}}
{{- if (get $.Values.services $name).enabled -}}{{- $names = append $names $name -}}{{- end -}}
{{- end -}}
{{- toJson $names -}}
{{- end -}}

{{/* The spec of the chart's Ingresses: class, optional TLS, one host, the given paths. */}}
{{- define "worldloom.ingressSpec" -}}
{{- $in := .root.Values.ingress -}}
ingressClassName: {{ $in.className }}
{{- if $in.tls.enabled }}
tls:
  - secretName: {{ required "ingress.tls.secretName is required with ingress.tls.enabled" $in.tls.secretName }}
    {{- with $in.host }}
    hosts: [{{ . | quote }}]
    {{- end }}
{{- end }}
rules:
  - {{- with $in.host }}
    host: {{ . | quote }}
    {{- end }}
    http:
      paths:
        {{- range .paths }}
        - path: {{ .path }}
          pathType: {{ .type }}
          backend:
            service:
              name: {{ .service }}
              port: {number: {{ .port }}}
        {{- end }}
{{- end -}}
