{{/* Names and labels shared by every template. */}}

{{- define "replicator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "replicator.fullname" -}}
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

{{- define "replicator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "replicator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "replicator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "replicator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: redis-dynamodb-replicator
{{- end -}}

{{- define "replicator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "replicator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The name of a listener Deployment: …-listener-<entry> or, for a sharded entry, …-listener-<entry>-shard-<i>. Used by
listener-deployment.yaml and NOTES.txt. Call with (dict "root" $ "instance" <entry name> "shard" <i> "shards" <n>).
*/}}
{{- define "replicator.listenerName" -}}
{{- $name := ternary .instance (printf "%s-shard-%d" .instance (int .shard)) (eq (int .shards) 1) -}}
{{- printf "%s-listener-%s" (include "replicator.fullname" .root) $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The Redis one listener entry captures, as YAML for fromYaml: {url} or {urlSecret: {name, key}}, plus "id" (two
entries with the same id capture the same Redis) and "shared" (true when it is the top-level redis.*). An entry that
names its own url or urlSecret uses only that: the top-level Secret must not win over an entry's own URL. Call with
(dict "root" $ "instance" <entry>); an empty entry gives the top-level Redis.
*/}}
{{- define "replicator.instanceRedis" -}}
{{- $own := .instance.urlSecret | default dict -}}
{{- $shared := .root.Values.redis.urlSecret | default dict -}}
{{- if $own.name -}}
{{- toYaml (dict "urlSecret" (dict "name" $own.name "key" ($own.key | default "url")) "id" (printf "secret:%s/%s" $own.name ($own.key | default "url")) "shared" false) -}}
{{- else if .instance.url -}}
{{- toYaml (dict "url" .instance.url "id" (printf "url:%s" .instance.url) "shared" false) -}}
{{- else if $shared.name -}}
{{- toYaml (dict "urlSecret" (dict "name" $shared.name "key" ($shared.key | default "url")) "id" (printf "secret:%s/%s" $shared.name ($shared.key | default "url")) "shared" true) -}}
{{- else -}}
{{- toYaml (dict "url" (.root.Values.redis.url | default "") "id" (printf "url:%s" (.root.Values.redis.url | default "")) "shared" true) -}}
{{- end -}}
{{- end -}}

{{/*
The snapshot Jobs, as YAML for fromYaml: {jobs: [{name, redis, node}]}. One Job per distinct Redis the
listener entries capture: an entry with its own url/urlSecret is a Redis the top-level redis.* does not reach, so one
Job would leave its existing keys unbackfilled. Entries that share a Redis share its Job. The Job of the top-level
Redis keeps the name …-snapshot, the others are …-snapshot-<entry name>. "node" is the entry's name, the node name
its listener publishes under, so that events and checkpoints name the node alike. Used by snapshot-job.yaml and
NOTES.txt, which must agree on the names.
*/}}
{{- define "replicator.snapshotJobs" -}}
{{- $root := . -}}
{{- $jobs := list -}}
{{- $seen := dict -}}
{{- range (.Values.listener.instances | default (list dict)) -}}
{{- $redis := fromYaml (include "replicator.instanceRedis" (dict "root" $root "instance" .)) -}}
{{- if not (hasKey $seen $redis.id) -}}
{{- $_ := set $seen $redis.id true -}}
{{- $name := printf "%s-snapshot" (include "replicator.fullname" $root) -}}
{{- if not $redis.shared -}}
{{- $name = printf "%s-%s" $name .name -}}
{{- end -}}
{{- $jobs = append $jobs (dict "name" ($name | trunc 63 | trimSuffix "-") "redis" $redis "node" (.name | default "")) -}}
{{- end -}}
{{- end -}}
{{- toYaml (dict "jobs" $jobs) -}}
{{- end -}}

{{/* The verify Job's name, used by verify-job.yaml and NOTES.txt. */}}
{{- define "replicator.verifyName" -}}
{{- printf "%s-verify" (include "replicator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "replicator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The container every component runs: the same image, config and secrets; "args" and "instance" vary.
Call with (dict "root" $ "args" (list "apply") "redisUrl" <string> "redisUrlSecret" <dict> "nodeName" <string>
"probes" <bool> "resources" <dict>).
*/}}
{{- define "replicator.container" -}}
{{- $root := .root -}}
- name: replicator
  image: {{ include "replicator.image" $root | quote }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  args:
    # --log-level belongs to `replicator` itself, so it goes before the command: after it argparse refuses it.
    - --log-level
    - {{ $root.Values.logLevel | quote }}
    {{- range .args }}
    - {{ . | quote }}
    {{- end }}
    - --config
    - /etc/replicator/config.yaml
  env:
    - name: REPLICATOR_METRICS_PORT
      value: {{ $root.Values.metrics.port | quote }}
    {{- $secret := .redisUrlSecret | default dict }}
    {{- if $secret.name }}
    - name: REPLICATOR_REDIS_URL
      valueFrom:
        secretKeyRef: {name: {{ $secret.name | quote }}, key: {{ $secret.key | default "url" | quote }}}
    {{- else if .redisUrl }}
    - name: REPLICATOR_REDIS_URL
      value: {{ .redisUrl | quote }}
    {{- end }}
    {{- if .nodeName }}
    - name: REPLICATOR_REDIS_NODE_NAME
      value: {{ .nodeName | quote }}
    {{- end }}
    {{- range $name, $value := (.extraEnv | default dict) }}
    - name: {{ $name }}
      value: {{ $value | quote }}
    {{- end }}
    {{- with .extraEnvFrom }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $root.Values.kafka.saslPasswordSecret }}
    {{- if .name }}
    - name: REPLICATOR_KAFKA_SASL_PASSWORD
      valueFrom:
        secretKeyRef: {name: {{ .name | quote }}, key: {{ .key | quote }}}
    {{- end }}
    {{- end }}
    {{- range $name, $value := $root.Values.kafka.env }}
    - name: {{ $name }}
      value: {{ $value | quote }}
    {{- end }}
    {{- with $root.Values.dynamodb.credentialsSecret }}
    {{- if .name }}
    - name: REPLICATOR_DYNAMODB_ACCESS_KEY_ID
      valueFrom:
        secretKeyRef: {name: {{ .name | quote }}, key: {{ .accessKeyIdKey | quote }}}
    - name: REPLICATOR_DYNAMODB_SECRET_ACCESS_KEY
      valueFrom:
        secretKeyRef: {name: {{ .name | quote }}, key: {{ .secretAccessKeyKey | quote }}}
    {{- end }}
    {{- end }}
    {{- with $root.Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: metrics
      containerPort: {{ $root.Values.metrics.port }}
      protocol: TCP
  {{- if .probes }}
  livenessProbe:
    httpGet: {path: /healthz, port: metrics}
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 6
  readinessProbe:
    httpGet: {path: /readyz, port: metrics}
    periodSeconds: 5
    timeoutSeconds: 5
    failureThreshold: 3
  {{- end }}
  resources:
    {{- toYaml .resources | nindent 4 }}
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  volumeMounts:
    - {name: config, mountPath: /etc/replicator, readOnly: true}
    - {name: tmp, mountPath: /tmp}
{{- end -}}

{{- define "replicator.volumes" -}}
- name: config
  configMap:
    name: {{ include "replicator.fullname" . }}
- name: tmp
  emptyDir: {sizeLimit: 64Mi}
{{- end -}}

{{- define "replicator.podSpecCommon" -}}
serviceAccountName: {{ include "replicator.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
