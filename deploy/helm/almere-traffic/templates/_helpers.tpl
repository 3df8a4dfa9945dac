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
