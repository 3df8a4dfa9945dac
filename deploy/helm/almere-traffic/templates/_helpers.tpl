{{- define "almere.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "almere.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "almere.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "almere.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: almere-traffic
{{- end -}}

{{/* Selector labels of one service: pass (dict "root" $ "service" "parking"). */}}
{{- define "almere.selectorLabels" -}}
app.kubernetes.io/name: {{ include "almere.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .service }}
{{- end -}}

{{- define "almere.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "almere.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "almere.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "almere.natsUrl" -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s-nats:4222" .Release.Name -}}
{{- else -}}
{{- required "externalNats.url is required when nats.enabled is false" .Values.externalNats.url -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding each bus user's NATS password, under the user's name. */}}
{{- define "almere.natsUsersSecret" -}}
{{- if .Values.nats.enabled -}}
{{- printf "%s-nats-users" (include "almere.fullname" .) -}}
{{- else -}}
{{- required "externalNats.usersSecret is required when nats.enabled is false: each bus user's password" .Values.externalNats.usersSecret -}}
{{- end -}}
{{- end -}}

{{/* A process's bus identity: pass (dict "root" $ "user" "parking"). */}}
{{- define "almere.natsIdentity" -}}
- name: ALMERE_NATS_USER
  value: {{ .user | quote }}
- name: ALMERE_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "almere.natsUsersSecret" .root }}
      key: {{ .user }}
{{- end -}}

{{/* host:port of a gRPC service's Service: pass (dict "root" $ "service" "parking"). */}}
{{- define "almere.serviceAddress" -}}
{{- printf "%s-%s:%v" (include "almere.fullname" .root) .service (index .root.Values.services .service).port -}}
{{- end -}}

{{/* Where a feed's operator token is mounted (key <name> of gateway.feedTokens.existingSecret). */}}
{{- define "almere.feedTokensDir" -}}
/etc/almere/feed-tokens
{{- end -}}

{{/* The gateway's feeds file (JSON): gateway.feeds in the gateway's field names, each feed with
the path of its token. A feed's name is its token's key, so names must be unique. */}}
{{- define "almere.gatewayFeeds" -}}
{{- $feeds := list -}}
{{- $seen := dict -}}
{{- range .Values.gateway.feeds -}}
{{- if hasKey $seen .name -}}
{{- fail (printf "gateway.feeds: %q appears twice (a feed's name is the key of its token)" .name) -}}
{{- end -}}
{{- $_ := set $seen .name true -}}
{{- $feed := dict "name" .name "format" .format "facilities" (default dict .facilities) "token_file" (printf "%s/%s" (include "almere.feedTokensDir" $) .name) -}}
{{- with .url }}{{ $_ := set $feed "url" . }}{{ end -}}
{{- with .intervalSeconds }}{{ $_ := set $feed "interval_seconds" . }}{{ end -}}
{{- $feeds = append $feeds $feed -}}
{{- end -}}
{{- toPrettyJson (dict "feeds" $feeds) -}}
{{- end -}}

{{/* The ports of the polled feeds' URLs, space-separated (their egress in the gateway's NetworkPolicy). */}}
{{- define "almere.gatewayFeedPorts" -}}
{{- $ports := dict -}}
{{- range .Values.gateway.feeds -}}
{{- with .url -}}
{{- $url := urlParse . -}}
{{- $port := trimPrefix ":" (regexFind ":[0-9]+$" $url.host) -}}
{{- $_ := set $ports (default (ternary "443" "80" (eq $url.scheme "https")) $port) true -}}
{{- end -}}
{{- end -}}
{{- keys $ports | sortAlpha | join " " -}}
{{- end -}}

{{/* Where tls.existingSecret (tls.crt, tls.key, ca.crt) is mounted in every pod of the chart. */}}
{{- define "almere.tlsDir" -}}
/etc/almere/tls
{{- end -}}

{{/* The TLS Secret's mount (a volumeMounts entry), when tls.existingSecret is set. */}}
{{- define "almere.tlsVolumeMount" -}}
{{- if .Values.tls.existingSecret }}
- name: tls
  mountPath: {{ include "almere.tlsDir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* The TLS Secret as a volume (a volumes entry), when tls.existingSecret is set. */}}
{{- define "almere.tlsVolume" -}}
{{- if .Values.tls.existingSecret }}
- name: tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
{{- end }}
{{- end -}}

{{/* How kubelet checks a service's gRPC port (pass (dict "root" $ "port" 50051)): its gRPC health
check, or with TLS, which kubelet's gRPC probe does not speak, that the port accepts connections. */}}
{{- define "almere.grpcProbe" -}}
{{- if .root.Values.tls.existingSecret -}}
tcpSocket: {port: {{ .port }}}
{{- else -}}
grpc: {port: {{ .port }}}
{{- end -}}
{{- end -}}
