{{/*
Pool credentials (janitor.poolCredentials, pkg/poolcreds): a Redis user per
pool. The rules below are pkg/poolcreds ControlPlaneACL and ManagerACL, as
redis-server --user arguments; test/keda's chart test compares them.
*/}}

{{/* Whether pools get Redis users of their own. */}}
{{- define "slotscaler.poolCredentials" -}}
{{- if .Values.janitor.poolCredentials.enabled -}}true{{- end -}}
{{- end -}}

{{/* The Secret holding the master key (key, previousKey). */}}
{{- define "slotscaler.poolCredentialsSecretName" -}}
{{- .Values.janitor.poolCredentials.existingSecret | default (printf "%s-pool-credentials" (include "slotscaler.fullname" .)) -}}
{{- end -}}

{{/* The internal Redis' ACL users, when pool credentials are on. */}}
{{- define "slotscaler.redisControlUser" -}}slotscaler-control{{- end -}}
{{- define "slotscaler.redisManagerUser" -}}slotscaler-acl-manager{{- end -}}

{{/*
Key of the URL Secret holding the URL the janitor manages pool users with
(POOL_CREDENTIALS_REDIS_URL), or "" when it uses its REDIS_URL.
*/}}
{{- define "slotscaler.redisManagerSecretKey" -}}
{{- if .Values.redis.internal.enabled -}}
{{- if .Values.redis.internal.auth.enabled -}}manager-url{{- end -}}
{{- else if .Values.redis.external.existingSecret -}}
{{- .Values.redis.external.existingSecretManagerKey -}}
{{- else if .Values.redis.external.managerUrl -}}manager-url
{{- end -}}
{{- end -}}

{{/* The key prefix as a Redis glob matching itself only. */}}
{{- define "slotscaler.prefixGlob" -}}
{{- regexReplaceAll "([*?\\[\\]\\\\])" .Values.keyPrefix "\\${1}" -}}
{{- end -}}

{{/* redis-server arguments: the default user off, the control plane's and the ACL manager's users. */}}
{{- define "slotscaler.redisUserArgs" -}}
- --user
- default
- "off"
- --user
- {{ include "slotscaler.redisControlUser" . }}
- reset
- "on"
- ">$(REDIS_CONTROL_PASSWORD)"
- {{ printf "~%s:*" (include "slotscaler.prefixGlob" .) | quote }}
- resetchannels
- "+@all"
- "-@dangerous"
- "+info"
- "-script|flush"
- "-function|flush"
- "-function|delete"
- "-function|restore"
- --user
- {{ include "slotscaler.redisManagerUser" . }}
- reset
- "on"
- ">$(REDIS_MANAGER_PASSWORD)"
- resetchannels
- "-@all"
- "+acl|setuser"
- "+acl|deluser"
- "+acl|getuser"
- "+info"
- "+ping"
- "+select"
- "+client|setname"
- "+command"
- "+cluster|slots"
- "+cluster|shards"
{{- end -}}
