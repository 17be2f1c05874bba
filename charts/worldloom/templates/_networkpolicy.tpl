{{/* NetworkPolicy parts (templates/networkpolicies.yaml). */}}
{{- define "worldloom.np.dns" -}}
- to:
    {{- toYaml .Values.networkPolicy.dns | nindent 4 }}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end -}}
{{- define "worldloom.np.component" -}}
podSelector:
  matchLabels:
    {{- include "worldloom.selectorLabels" . | nindent 4 }}
{{- end -}}
{{- /* egress to what a pod `uses`: in-cluster dependencies by label, external ones by address */ -}}
{{- define "worldloom.np.uses" -}}
{{- $root := .root -}}
{{- $np := $root.Values.networkPolicy -}}
{{- if has "bus" .uses }}
{{- if eq $root.Values.kafka.mode "strimzi" }}
- to:
    - podSelector:
        matchLabels:
          strimzi.io/cluster: {{ include "worldloom.kafkaName" $root }}
          strimzi.io/kind: Kafka
  ports:
    - {protocol: TCP, port: 9092}
{{- else }}
- to:
    {{- toYaml $np.externalEgress | nindent 4 }}
{{- end }}
{{- end }}
{{- if has "store" .uses }}
{{- if eq $root.Values.objectStore.mode "minio" }}
- to:
    - {{- include "worldloom.np.component" (dict "root" $root "component" "minio") | nindent 6 }}
  ports:
    - {protocol: TCP, port: 9000}
{{- else }}
- to:
    {{- toYaml $np.externalEgress | nindent 4 }}
{{- end }}
{{- end }}
{{- if has "vectors" .uses }}
{{- if eq $root.Values.vectors.mode "milvus" }}
- to:
    - {{- include "worldloom.np.component" (dict "root" $root "component" "milvus") | nindent 6 }}
  ports:
    - {protocol: TCP, port: 19530}
{{- else }}
- to:
    {{- toYaml $np.externalEgress | nindent 4 }}
{{- end }}
{{- end }}
{{- if and (has "ray" .uses) $root.Values.ray.enabled (eq $root.Values.training.launcher "local") }}
- to:
    - podSelector:
        matchLabels:
          {{- include "worldloom.selectorLabels" (dict "root" $root "component" "ray") | nindent 10 }}
          worldloom.io/ray-node: head
  ports:
    - {protocol: TCP, port: 10001}
{{- end }}
{{- if .external }}
- to:
    {{- toYaml $np.externalEgress | nindent 4 }}
{{- end }}
{{- if .apiServer }}
- to:
    {{- toYaml $np.apiServer | nindent 4 }}
  ports:
    - {protocol: TCP, port: 443}
    - {protocol: TCP, port: 6443}
{{- end }}
{{- end -}}
