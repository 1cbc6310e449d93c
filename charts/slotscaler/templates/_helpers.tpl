{{/* Name prefix of every object: the release name unless fullnameOverride is set. */}}
{{- define "slotscaler.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "slotscaler.labels" -}}
app.kubernetes.io/name: slotscaler
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: slotscaler
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "scaler"). */}}
{{- define "slotscaler.selectorLabels" -}}
app.kubernetes.io/name: slotscaler
app.kubernetes.io/instance: {{ .root.Release.Name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of one component's objects: (dict "root" $ "component" "scaler"). */}}
{{- define "slotscaler.componentLabels" -}}
{{ include "slotscaler.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Object name of one component: (dict "root" $ "component" "scaler"). */}}
{{- define "slotscaler.componentName" -}}
{{- printf "%s-%s" (include "slotscaler.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The slotscaler image (scaler, janitor, dashboard, and agents by default). */}}
{{- define "slotscaler.image" -}}
{{- $img := .Values.image -}}
{{- if $img.digest -}}
{{- printf "%s:%s@%s" $img.repository (default .Chart.AppVersion $img.tag) $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret holding the slot store's Redis URL. */}}
{{- define "slotscaler.redisSecretName" -}}
{{- if .Values.redis.external.existingSecret -}}
{{- .Values.redis.external.existingSecret -}}
{{- else -}}
{{- printf "%s-redis-url" (include "slotscaler.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Key of the Redis URL in that Secret. */}}
{{- define "slotscaler.redisSecretKey" -}}
{{- if .Values.redis.external.existingSecret -}}
{{- .Values.redis.external.existingSecretKey -}}
{{- else -}}
url
{{- end -}}
{{- end -}}

{{/* Whether the chart creates the Redis URL Secret (and its copies in the pools' namespaces). */}}
{{- define "slotscaler.redisSecretCreated" -}}
{{- if not .Values.redis.external.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* The internal Redis' address (host:port). */}}
{{- define "slotscaler.redisInternalAddress" -}}
{{- printf "%s.%s.svc:%d" (include "slotscaler.componentName" (dict "root" . "component" "redis")) .Release.Namespace (int .Values.redis.internal.port) -}}
{{- end -}}

{{/* The REDIS_URL environment variable, always from the Secret. */}}
{{- define "slotscaler.redisEnv" -}}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "slotscaler.redisSecretName" . }}
      key: {{ include "slotscaler.redisSecretKey" . }}
{{- end -}}

{{/* Environment every slotscaler process shares. */}}
{{- define "slotscaler.commonEnv" -}}
{{ include "slotscaler.redisEnv" . }}
- name: KEY_PREFIX
  value: {{ .Values.keyPrefix | quote }}
{{- with .Values.redis.external.replicaAcks }}
- name: REDIS_REPLICA_ACKS
  value: {{ . | quote }}
{{- end }}
- name: LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- end -}}

{{/*
Seconds in a Go duration string ("1h30m", "90s", "500ms"), as a float.
Only the units the binaries accept: h, m, s, ms, us/µs, ns.
*/}}
{{- define "slotscaler.secondsExact" -}}
{{- $d := toString . -}}
{{- $total := 0.0 -}}
{{- range $part := regexFindAll "[0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h)" $d -1 -}}
{{- $n := float64 (regexFind "^[0-9]+(\\.[0-9]+)?" $part) -}}
{{- $unit := trimPrefix (regexFind "^[0-9]+(\\.[0-9]+)?" $part) $part -}}
{{- $mult := dict "h" 3600.0 "m" 60.0 "s" 1.0 "ms" 0.001 "us" 0.000001 "µs" 0.000001 "ns" 0.000000001 -}}
{{- $total = addf $total (mulf $n (get $mult $unit)) -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/* The same, rounded up to whole seconds. */}}
{{- define "slotscaler.seconds" -}}
{{- include "slotscaler.secondsExact" . | float64 | ceil | int64 -}}
{{- end -}}

{{/*
Merge src into dst in place, the explicit value winning (0, false and ""
included, unlike sprig's merge): maps are merged key by key, everything else
(lists too) is replaced. (dict "dst" $d "src" $s)
*/}}
{{- define "slotscaler.mergeInto" -}}
{{- $dst := .dst -}}
{{- range $k, $v := .src -}}
{{- $cur := get $dst $k -}}
{{- if and (kindIs "map" $v) (kindIs "map" $cur) -}}
{{- include "slotscaler.mergeInto" (dict "dst" $cur "src" $v) -}}
{{- else -}}
{{- $_ := set $dst $k $v -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The namespaces the janitor watches, as a JSON list ([] = every namespace):
janitor.watchNamespaces, plus janitor.watchNamespace (the older single value,
still honoured).
*/}}
{{- define "slotscaler.janitorNamespaces" -}}
{{- $j := .Values.janitor -}}
{{- concat (default list $j.watchNamespaces) (compact (list (default "" $j.watchNamespace))) | uniq | sortAlpha | toJson -}}
{{- end -}}

{{/*
The pools with poolDefaults applied and checked, as a YAML list (fromYamlArray).
Every pool gets "namespace" and "graceSeconds".
*/}}
{{- define "slotscaler.pools" -}}
{{- $root := . -}}
{{- $out := list -}}
{{- $seen := dict -}}
{{- range $i, $pool := .Values.pools -}}
{{- $p := deepCopy $root.Values.poolDefaults -}}
{{- include "slotscaler.mergeInto" (dict "dst" $p "src" (deepCopy $pool)) -}}
{{- $ns := default $root.Release.Namespace (get $p "namespace") -}}
{{- $_ := set $p "namespace" $ns -}}
{{- $key := printf "%s/%s" $ns $p.name -}}
{{- if hasKey $seen $key -}}
{{- fail (printf "pools[%d]: pool %s is listed twice" $i $key) -}}
{{- end -}}
{{- $_ := set $seen $key true -}}
{{- $watched := include "slotscaler.janitorNamespaces" $root | fromJsonArray -}}
{{- if and $watched (not (has $ns $watched)) -}}
{{- $quoted := list -}}
{{- range $watched }}{{ $quoted = append $quoted (quote .) }}{{ end -}}
{{- fail (printf "pools[%d] %s: the janitor watches namespace %s only (janitor.watchNamespaces): it would never create this pool's pods" $i $key (join ", " $quoted)) -}}
{{- end -}}
{{- $timeouts := default dict (get $p "phaseTimeouts") -}}
{{- $plan := include "slotscaler.seconds" (default "1h" (get $timeouts "plan")) | int64 -}}
{{- $apply := include "slotscaler.seconds" (default "1h" (get $timeouts "apply")) | int64 -}}
{{- /* The janitor's own floor: the longest phase plus 60s (kill grace and recording the result). */ -}}
{{- $floor := add (max $plan $apply) 60 | int64 -}}
{{- $grace := get $p "terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" $grace -}}
{{- $grace = $floor -}}
{{- else if lt (int64 $grace) $floor -}}
{{- fail (printf "pools[%d] %s: terminationGracePeriodSeconds %v is below the longest phase timeout plus 60s (%ds): a stopping agent could not finish its running phase" $i $key $grace $floor) -}}
{{- end -}}
{{- $_ := set $p "graceSeconds" (int64 $grace) -}}
{{- /* Exact, not rounded up to seconds: 300ms against 2s is fine. */ -}}
{{- $hb := include "slotscaler.secondsExact" (default "30s" (get $p "heartbeatTimeout")) | float64 -}}
{{- with get $p "heartbeatInterval" -}}
{{- if gt (mulf (include "slotscaler.secondsExact" . | float64) 3.0) $hb -}}
{{- fail (printf "pools[%d] %s: heartbeatInterval %s is more than a third of heartbeatTimeout %v: the agent refuses to start" $i $key . (default "30s" (get $p "heartbeatTimeout"))) -}}
{{- end -}}
{{- end -}}
{{- if gt (int64 $p.minReplicaCount) (int64 $p.maxReplicaCount) -}}
{{- fail (printf "pools[%d] %s: minReplicaCount %v is above maxReplicaCount %v" $i $key $p.minReplicaCount $p.maxReplicaCount) -}}
{{- end -}}
{{- $out = append $out $p -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* Namespaces of the pools other than the release's, sorted and unique, as a YAML list. */}}
{{- define "slotscaler.poolNamespaces" -}}
{{- $nss := list -}}
{{- range $p := include "slotscaler.pools" . | fromYamlArray -}}
{{- if ne $p.namespace $.Release.Namespace -}}
{{- $nss = append $nss $p.namespace -}}
{{- end -}}
{{- end -}}
{{- $nss | uniq | sortAlpha | toYaml -}}
{{- end -}}

{{/* Every namespace holding a pool, the release's own included when a pool is there. */}}
{{- define "slotscaler.allPoolNamespaces" -}}
{{- $nss := list -}}
{{- range $p := include "slotscaler.pools" . | fromYamlArray -}}
{{- $nss = append $nss $p.namespace -}}
{{- end -}}
{{- $nss | uniq | sortAlpha | toYaml -}}
{{- end -}}

{{/* The scaler's TLS Secret: the one named in scaler.tls.secretName, else the one the chart generates. */}}
{{- define "slotscaler.scalerTLSSecretName" -}}
{{- if .Values.scaler.tls.secretName -}}
{{- .Values.scaler.tls.secretName -}}
{{- else -}}
{{- printf "%s-tls" (include "slotscaler.componentName" (dict "root" . "component" "scaler")) -}}
{{- end -}}
{{- end -}}

{{/* Checks that span several values; rendered once (from the scaler's Deployment). */}}
{{- define "slotscaler.validate" -}}
{{- $r := .Values.redis -}}
{{- $external := or $r.external.url $r.external.existingSecret -}}
{{- if and $external $r.internal.enabled -}}
{{- fail "redis: redis.external is set and redis.internal.enabled is true: use one (set redis.internal.enabled=false for an external Redis)" -}}
{{- end -}}
{{- if and $r.external.url $r.external.existingSecret -}}
{{- fail "redis.external: set url or existingSecret, not both" -}}
{{- end -}}
{{- if not (or $external $r.internal.enabled) -}}
{{- fail "redis: no slot store: set redis.external.url, redis.external.existingSecret, or redis.internal.enabled=true" -}}
{{- end -}}
{{- if and .Values.scaler.tls.clientCA (not .Values.scaler.tls.secretName) -}}
{{- fail "scaler.tls.clientCA needs scaler.tls.secretName (a kubernetes.io/tls Secret with ca.crt): the chart generates a server certificate only" -}}
{{- end -}}
{{- if and .Values.dashboard.ingress.enabled (not .Values.dashboard.enabled) -}}
{{- fail "dashboard.ingress.enabled needs dashboard.enabled" -}}
{{- end -}}
{{- if and .Values.dashboard.apiTokens.existingSecret .Values.dashboard.apiTokens.tokens -}}
{{- fail "dashboard.apiTokens: set tokens or existingSecret, not both" -}}
{{- end -}}
{{- $n := .Values.notifications -}}
{{- if $n.enabled -}}
{{- if and $n.existingSecret $n.webhooks -}}
{{- fail "notifications: set webhooks or existingSecret, not both" -}}
{{- end -}}
{{- if not (or $n.existingSecret $n.webhooks $n.agentPools.enabled) -}}
{{- fail "notifications.enabled needs notifications.webhooks, notifications.existingSecret or notifications.agentPools.enabled" -}}
{{- end -}}
{{- if and $n.agentPools.enabled (empty (include "slotscaler.notifySecretNamespaces" . | fromJsonArray)) -}}
{{- fail "notifications.agentPools needs notifications.agentPools.namespaces (or janitor.watchNamespaces): the scaler is granted get on Secrets per namespace, never cluster-wide" -}}
{{- end -}}
{{- end -}}
{{- $_ := include "slotscaler.pools" . -}}
{{- end -}}

{{/* The namespaces whose Secrets the scaler may get for the webhooks of
AgentPools: notifications.agentPools.namespaces, else the janitor's. */}}
{{- define "slotscaler.notifySecretNamespaces" -}}
{{- $a := .Values.notifications.agentPools -}}
{{- if $a.namespaces -}}
{{- $a.namespaces | uniq | sortAlpha | toJson -}}
{{- else -}}
{{- include "slotscaler.janitorNamespaces" . -}}
{{- end -}}
{{- end -}}

{{/*
The Secrets the notifier's webhooks name (urlSecretRef, signingSecretRef),
as a YAML map: Secret name -> the keys used. The scaler mounts each one
(only those keys) read-only under /etc/slotscaler/notify/secrets/<name>:
the kubelet reads them, so the scaler's ServiceAccount needs no access to
Secrets at all.
*/}}
{{- define "slotscaler.notifySecrets" -}}
{{- $out := dict -}}
{{- range $w := .Values.notifications.webhooks -}}
{{- range $ref := list $w.urlSecretRef $w.signingSecretRef -}}
{{- if $ref -}}
{{- $keys := get $out $ref.name | default list -}}
{{- $_ := set $out $ref.name (append $keys $ref.key | uniq | sortAlpha) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* Pod-level settings shared by the chart's own components: (dict "root" $ "c" .Values.scaler). */}}
{{- define "slotscaler.podSpecCommon" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
