{{/* Names ------------------------------------------------------------------------------ */}}

{{- define "embedserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Resource name prefix. Kept to 40 characters: KubeRay derives the RayCluster, its pods and
its Services (`<name>-serve-svc`, `<name>-head-svc`) from the RayService name.
*/}}
{{- define "embedserve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "embedserve.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "embedserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "embedserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "embedserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "embedserve.redisName" -}}
{{- printf "%s-redis" (include "embedserve.fullname" .) }}
{{- end }}

{{- define "embedserve.apiKeysSecretName" -}}
{{- .Values.apiKeys.existingSecret | default (printf "%s-api-keys" (include "embedserve.fullname" .)) }}
{{- end }}

{{/* The encoder deployment of a model: `Encoder_` + its alias (the id's last part) lower-cased. */}}
{{- define "embedserve.encoderName" -}}
{{- printf "Encoder_%s" (last (splitList "/" .) | lower) }}
{{- end }}

{{/* Images ----------------------------------------------------------------------------- */}}

{{- define "embedserve.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "embedserve.gpuImage" -}}
{{- printf "%s:%s" .Values.gpu.image.repository (.Values.gpu.image.tag | default (printf "%s-gpu" .Chart.AppVersion)) }}
{{- end }}

{{/* Checks that the schema cannot express --------------------------------------------- */}}

{{- define "embedserve.validate" -}}
{{- $seen := dict }}
{{- range .Values.models }}
{{- $key := include "embedserve.encoderName" . }}
{{- if hasKey $seen $key }}
{{- fail (printf "models: %q and %q are the same model (%s)" (get $seen $key) . $key) }}
{{- end }}
{{- $_ := set $seen $key . }}
{{- end }}
{{- if and .Values.redis.enabled (or .Values.redis.url .Values.redis.existingSecret) }}
{{- fail "redis: set redis.enabled=false to use an external Redis (redis.url or redis.existingSecret)" }}
{{- end }}
{{- if and (eq .Values.cache.mode "redis") (not (or .Values.redis.enabled .Values.redis.url .Values.redis.existingSecret)) }}
{{- fail "cache.mode=redis needs redis.enabled=true, redis.url or redis.existingSecret" }}
{{- end }}
{{- if not (or .Values.workers.enabled .Values.gpu.enabled) }}
{{- fail "enable at least one worker group (workers.enabled or gpu.enabled): the head runs no replicas" }}
{{- end }}
{{- range $group := list "workers" "gpu" }}
{{- $g := index $.Values $group }}
{{- if gt (int $g.minReplicas) (int $g.maxReplicas) }}
{{- fail (printf "%s.minReplicas (%v) is above %s.maxReplicas (%v)" $group $g.minReplicas $group $g.maxReplicas) }}
{{- end }}
{{- end }}
{{- range $path, $v := dict "serve.encoder.numCpus" .Values.serve.encoder.numCpus "gpu.gpusPerReplica" .Values.gpu.gpusPerReplica "serve.encoder.autoscaling.targetOngoingRequests" .Values.serve.encoder.autoscaling.targetOngoingRequests }}
{{- if le (float64 $v) 0.0 }}
{{- fail (printf "%s must be above 0" $path) }}
{{- end }}
{{- end }}
{{- $as := .Values.serve.encoder.autoscaling }}
{{- if gt (int $as.minReplicas) (int $as.maxReplicas) }}
{{- fail "serve.encoder.autoscaling.minReplicas is above maxReplicas" }}
{{- end }}
{{- end }}

{{/*
Ray Serve config (serveConfigV2; deploy/serve.yaml is its single-machine twin). The
application reads its settings (serving/settings.py) from `args`; `deployments` only adds
what settings cannot say: the Ingress's CPUs and the encoders' Serve autoscaling.
*/}}
{{- define "embedserve.serveConfig" -}}
{{- $s := .Values.serve -}}
{{- $enc := $s.encoder -}}
proxy_location: EveryNode
http_options:
  host: 0.0.0.0
  port: 8000
grpc_options:
  port: 9000
  grpc_servicer_functions:
    - serving.api.grpc_servicer.add_embedding_service
    - grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server
logging_config:
  encoding: {{ $s.logEncoding }}
  log_level: {{ $s.logLevel }}
applications:
  - name: embedserve
    route_prefix: /
    import_path: serving.app:build_app
    args:
      encoder_placement: replica
      ingress: {{ $s.ingress.mode }}
      models: {{ join "," .Values.models | quote }}
      variant: {{ $s.variant }}
      {{- with $s.providers }}
      providers: {{ . | quote }}
      {{- end }}
      max_batch_size: {{ $s.maxBatchSize }}
      batch_wait_timeout_ms: {{ $s.batchWaitTimeoutMs | float64 }}
      max_batch_tokens: {{ $s.maxBatchTokens }}
      intra_op_threads: {{ if kindIs "invalid" $s.intraOpThreads }}{{ max 1 (ceil (float64 $enc.numCpus)) }}{{ else }}{{ $s.intraOpThreads }}{{ end }}
      ingress_replicas: {{ $s.ingress.replicas }}
      max_ongoing_requests: {{ $s.maxOngoingRequests }}
      max_queued_requests: {{ $s.maxQueuedRequests }}
      encoder_num_cpus: {{ $enc.numCpus | float64 }}
      encoder_num_gpus: {{ if .Values.gpu.enabled }}{{ .Values.gpu.gpusPerReplica | float64 }}{{ else }}0{{ end }}
      encoder_max_ongoing_requests: {{ $enc.maxOngoingRequests }}
      {{- if not $enc.autoscaling.enabled }}
      encoder_replicas: {{ $enc.replicas }}
      {{- end }}
      cache: {{ .Values.cache.mode | quote }}
      {{- if not (kindIs "invalid" .Values.cache.ttlSeconds) }}
      cache_ttl_s: {{ .Values.cache.ttlSeconds }}
      {{- end }}
    deployments:
      - name: Ingress
        ray_actor_options:
          num_cpus: {{ $s.ingress.numCpus | float64 }}
        {{- if not (kindIs "invalid" $s.ingress.maxReplicasPerNode) }}
        max_replicas_per_node: {{ $s.ingress.maxReplicasPerNode }}
        {{- end }}
      {{- if or $enc.autoscaling.enabled (not (kindIs "invalid" $enc.maxReplicasPerNode)) }}
      {{- range .Values.models }}
      - name: {{ include "embedserve.encoderName" . }}
        {{- if not (kindIs "invalid" $enc.maxReplicasPerNode) }}
        max_replicas_per_node: {{ $enc.maxReplicasPerNode }}
        {{- end }}
        {{- if $enc.autoscaling.enabled }}
        num_replicas: auto
        autoscaling_config:
          min_replicas: {{ $enc.autoscaling.minReplicas }}
          max_replicas: {{ $enc.autoscaling.maxReplicas }}
          target_ongoing_requests: {{ $enc.autoscaling.targetOngoingRequests | float64 }}
          upscale_delay_s: {{ $enc.autoscaling.upscaleDelayS | float64 }}
          downscale_delay_s: {{ $enc.autoscaling.downscaleDelayS | float64 }}
        {{- end }}
      {{- end }}
      {{- end }}
{{- end }}

{{/* Pods ------------------------------------------------------------------------------- */}}

{{/* Labels every Ray pod carries (the metrics Service selects them). */}}
{{- define "embedserve.rayPodLabels" -}}
{{ include "embedserve.selectorLabels" . }}
app.kubernetes.io/component: ray
{{- with .Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Environment of every Ray container: Ray Serve's ingress switches (read when Ray starts;
serving.launch.IngressConfig.switches is the same), the Serve proxy's middleware (a clean 503 +
Retry-After for a request whose Ingress replica died with it, serving/replica_loss.py), Redis URL, API
keys, extraEnv.
*/}}
{{- define "embedserve.env" -}}
{{- $mode := .Values.serve.ingress.mode }}
- name: EMBEDSERVE_INGRESS
  value: {{ $mode | quote }}
- name: RAY_SERVE_ENABLE_DIRECT_INGRESS
  value: {{ if eq $mode "proxy" }}"0"{{ else }}"1"{{ end }}
- name: RAY_SERVE_ENABLE_HA_PROXY
  value: {{ if eq $mode "haproxy" }}"1"{{ else }}"0"{{ end }}
- name: RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD
  value: "0"
- name: RAY_SERVE_HAPROXY_METRICS_ENABLED
  value: "0"
- name: RAY_SERVE_CONTROL_LOOP_INTERVAL_S
  value: "0.5"
- name: RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH
  value: "serving.replica_loss:middlewares"
{{- if .Values.redis.enabled }}
- name: EMBEDSERVE_REDIS_URL
  value: {{ printf "redis://%s:6379/0" (include "embedserve.redisName" .) | quote }}
{{- else if .Values.redis.existingSecret }}
- name: EMBEDSERVE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- else if .Values.redis.url }}
- name: EMBEDSERVE_REDIS_URL
  value: {{ .Values.redis.url | quote }}
{{- end }}
{{- if or .Values.apiKeys.existingSecret .Values.apiKeys.keys }}
- name: EMBEDSERVE_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "embedserve.apiKeysSecretName" . }}
      key: {{ .Values.apiKeys.existingSecretKey }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Ports of every Ray container; KubeRay's serve Service exposes the `serve-*` ones. */}}
{{- define "embedserve.servePorts" -}}
- name: serve
  containerPort: 8000
  protocol: TCP
- name: serve-grpc
  containerPort: 9000
  protocol: TCP
- name: metrics
  containerPort: 8080
  protocol: TCP
{{- end }}

{{/*
A worker group. Call with (dict "root" $ "name" "cpu" "group" .Values.workers "image" ... "gpu" bool).
*/}}
{{- define "embedserve.workerGroup" -}}
{{- $root := .root }}
{{- $g := .group }}
{{- $resources := deepCopy ($g.resources | default dict) }}
{{- if .gpu }}
{{- $limits := $resources.limits | default dict }}
{{- $_ := set $limits "nvidia.com/gpu" $g.gpusPerWorker }}
{{- $_ := set $resources "limits" $limits }}
{{- end }}
- groupName: {{ .name }}
  replicas: {{ $g.minReplicas }}
  minReplicas: {{ $g.minReplicas }}
  maxReplicas: {{ $g.maxReplicas }}
  rayStartParams:
    metrics-export-port: "8080"
    {{- range $k, $v := $g.rayStartParams }}
    {{ $k }}: {{ $v | quote }}
    {{- end }}
  template:
    metadata:
      labels:
        {{- include "embedserve.rayPodLabels" $root | nindent 8 }}
        embedserve.io/worker-group: {{ .name }}
      {{- with $root.Values.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- with $g.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $g.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $g.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: ray-worker
          image: {{ .image }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          ports:
            {{- include "embedserve.servePorts" $root | nindent 12 }}
          {{- with (include "embedserve.env" $root | trim) }}
          env:
            {{- . | nindent 12 }}
          {{- end }}
          # Ready once the application's models are loaded (GET /ready through this pod's
          # Serve proxy); until then the serve Service sends this pod no traffic.
          readinessProbe:
            httpGet:
              path: /ready
              port: serve
            {{- toYaml $root.Values.readinessProbe | nindent 12 }}
          resources:
            {{- toYaml $resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: dshm
              mountPath: /dev/shm
      volumes:
        # Ray's object store lives in shared memory; the container default (64Mi) is too small.
        - name: dshm
          emptyDir:
            medium: Memory
{{- end }}
