{{/* Names ------------------------------------------------------------------------------------ */}}

{{- define "signgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "signgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "signgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The webhook's pods. The component label keeps the uninstall Job's pod out of the Service. */}}
{{- define "signgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "signgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "signgate.commonLabels" -}}
helm.sh/chart: {{ include "signgate.chart" . }}
app.kubernetes.io/name: {{ include "signgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: signgate
{{- end -}}

{{- define "signgate.labels" -}}
{{ include "signgate.commonLabels" . }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "signgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "signgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* shell-operator appends "-hooks" to VALIDATING_WEBHOOK_CONFIGURATION_NAME. */}}
{{- define "signgate.webhookConfigurationName" -}}
{{- default (include "signgate.fullname" .) .Values.webhookConfigurationName -}}
{{- end -}}

{{- define "signgate.webhookObjectName" -}}
{{- printf "%s-hooks" (include "signgate.webhookConfigurationName" .) -}}
{{- end -}}

{{- define "signgate.tlsSecretName" -}}
{{- if eq .Values.tls.source "existingSecret" -}}
{{- required "tls.existingSecret is required when tls.source is existingSecret" .Values.tls.existingSecret -}}
{{- else -}}
{{- printf "%s-tls" (include "signgate.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* repository[:tag][@digest] from an image dict, with the chart's appVersion as default tag. */}}
{{- define "signgate.imageRef" -}}
{{- $image := .image -}}
{{- $repository := required "image.repository is required: the signgate image you built and pushed (docs/install.md)" $image.repository -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "signgate.image" -}}
{{- include "signgate.imageRef" (dict "image" .Values.image "root" .) -}}
{{- end -}}

{{- define "signgate.cleanupImage" -}}
{{- if .Values.cleanup.image.repository -}}
{{- include "signgate.imageRef" (dict "image" .Values.cleanup.image "root" .) -}}
{{- else -}}
{{- include "signgate.image" . -}}
{{- end -}}
{{- end -}}

{{/* Mount points ------------------------------------------------------------------------------ */}}

{{- define "signgate.paths" -}}
config: /etc/signgate/config
configFile: /etc/signgate/config/config.json
keys: /etc/signgate/keys
rekorKeys: /etc/signgate/rekor-keys
trustedRoots: /etc/signgate/trusted-roots
certificateAuthorities: /etc/signgate/certificate-authorities
registryAuth: /etc/signgate/registry-auth
registryAuthFile: /etc/signgate/registry-auth/.dockerconfigjson
registryCA: /etc/signgate/registry-ca
registryCAFile: /etc/signgate/registry-ca/ca.crt
certs: /validating-certs
cache: /var/cache/signgate
verifierSocketDir: /run/signgate
verifierSocket: /run/signgate/verifier.sock
{{- end -}}

{{/* What signgate reads, for both containers ---------------------------------------------------
The verifier service's workers run the hook's admission code with the hook's SIGNGATE_* variables
(forwarded over the socket), so the verifier container must have the same variables and see the
same files at the same paths. One definition for both containers, so the two cannot drift.
extraEnv goes to both, last (it may override): the process that talks to the registries reads
variables of its own, such as HTTPS_PROXY and NO_PROXY. */}}
{{- define "signgate.sharedEnv" -}}
{{- $paths := include "signgate.paths" . | fromYaml -}}
# signgate excludes its own namespace (and kube-system) from the webhook's selector.
- name: SIGNGATE_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: SIGNGATE_CONFIG
  value: {{ $paths.configFile | quote }}
{{- if .Values.cache.enabled }}
- name: SIGNGATE_CACHE_DIR
  value: {{ $paths.cache | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The configuration, keys, registry credentials and CA, the verdict cache, the verifier's
socket directory and extraVolumeMounts: mounted at the same paths in both containers. */}}
{{- define "signgate.sharedMounts" -}}
{{- $paths := include "signgate.paths" . | fromYaml -}}
{{- $keyNames := include "signgate.keyNames" (dict "section" .Values.keys "what" "keys") | fromJsonArray -}}
{{- $rekorNames := include "signgate.keyNames" (dict "section" .Values.rekorKeys "what" "rekorKeys") | fromJsonArray -}}
- name: config
  mountPath: {{ $paths.config }}
  readOnly: true
{{- if $keyNames }}
- name: keys
  mountPath: {{ $paths.keys }}
  readOnly: true
{{- end }}
{{- if $rekorNames }}
- name: rekor-keys
  mountPath: {{ $paths.rekorKeys }}
  readOnly: true
{{- end }}
{{- range $trust := include "signgate.trustSections" . | fromJsonArray }}
{{- if $trust.names }}
- name: {{ $trust.volume }}
  mountPath: {{ $trust.dir }}
  readOnly: true
{{- end }}
{{- end }}
{{- if .Values.registryAuth.existingSecret }}
- name: registry-auth
  mountPath: {{ $paths.registryAuth }}
  readOnly: true
{{- end }}
{{- if or .Values.registryCA.existingConfigMap .Values.registryCA.existingSecret }}
- name: registry-ca
  mountPath: {{ $paths.registryCA }}
  readOnly: true
{{- end }}
{{- if .Values.cache.enabled }}
- name: cache
  mountPath: {{ $paths.cache }}
{{- end }}
{{- if .Values.verifier.enabled }}
- name: verifier-socket
  mountPath: {{ $paths.verifierSocketDir }}
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The verifier's probe: `signgate ping` exits 0 when the service answers on its socket. */}}
{{- define "signgate.verifierPing" -}}
{{- $paths := include "signgate.paths" . | fromYaml -}}
exec:
  command:
    - /opt/venv/bin/python
    - -m
    - signgate
    - ping
    - --socket
    - {{ $paths.verifierSocket }}
{{- end -}}

{{/* Key sources --------------------------------------------------------------------------------
A key section (keys or rekorKeys) gives its names either inline (name -> PEM) or as `names` in an
existing Secret/ConfigMap whose entries are <name>.pub. Output: a JSON list of names. */}}
{{- define "signgate.keyNames" -}}
{{- $section := .section -}}
{{- $what := .what -}}
{{- $sources := 0 -}}
{{- if $section.inline }}{{ $sources = add1 $sources }}{{ end -}}
{{- if $section.existingSecret }}{{ $sources = add1 $sources }}{{ end -}}
{{- if $section.existingConfigMap }}{{ $sources = add1 $sources }}{{ end -}}
{{- if gt $sources 1 -}}
{{- fail (printf "%s: use one source of keys: inline, existingSecret or existingConfigMap" $what) -}}
{{- end -}}
{{- $names := list -}}
{{- if $section.inline -}}
{{- if $section.names -}}
{{- fail (printf "%s.names is only used with %s.existingSecret or %s.existingConfigMap (inline keys are named by their keys)" $what $what $what) -}}
{{- end -}}
{{- $names = keys $section.inline | sortAlpha -}}
{{- else if or $section.existingSecret $section.existingConfigMap -}}
{{- if not $section.names -}}
{{- fail (printf "%s.names is required with an existing Secret/ConfigMap: the key names, each stored as <name>.pub" $what) -}}
{{- end -}}
{{- $names = $section.names -}}
{{- else if $section.names -}}
{{- fail (printf "%s.names is set, but neither %s.existingSecret nor %s.existingConfigMap is" $what $what $what) -}}
{{- end -}}
{{- range $name, $_ := $section.hashAlgorithms -}}
{{- if not (has $name $names) -}}
{{- fail (printf "%s.hashAlgorithms.%s: no key of that name" $what $name) -}}
{{- end -}}
{{- end -}}
{{- toJson $names -}}
{{- end -}}

{{/* The config's key map: name -> path, or {path, hashAlgorithm}. */}}
{{- define "signgate.keyMap" -}}
{{- $map := dict -}}
{{- range $name := .names -}}
{{- $path := printf "%s/%s.pub" $.dir $name -}}
{{- $algorithm := get ($.section.hashAlgorithms | default dict) $name -}}
{{- if $algorithm -}}
{{- $_ := set $map $name (dict "path" $path "hashAlgorithm" $algorithm) -}}
{{- else -}}
{{- $_ := set $map $name $path -}}
{{- end -}}
{{- end -}}
{{- toJson $map -}}
{{- end -}}

{{/* Trust material for certificate signers ---------------------------------------------------
trustedRoots (Sigstore trusted_root.json) and certificateAuthorities (PEM CA bundles): each inline
(name -> file content, rendered into a ConfigMap) or `names` in an existing ConfigMap whose entries
are <name><suffix>. Public material, like public keys: a ConfigMap, no Secret. Output: a JSON list
with one entry per section: what, volume, configMap, suffix, dir (the mount) and names. */}}
{{- define "signgate.trustSections" -}}
{{- $paths := include "signgate.paths" . | fromYaml -}}
{{- $fullname := include "signgate.fullname" . -}}
{{- $sections := list -}}
{{- range $spec := list (dict "what" "trustedRoots" "volume" "trusted-roots" "suffix" ".json" "dir" $paths.trustedRoots) (dict "what" "certificateAuthorities" "volume" "certificate-authorities" "suffix" ".pem" "dir" $paths.certificateAuthorities) }}
{{- $section := get $.Values $spec.what | default dict -}}
{{- $what := $spec.what -}}
{{- $names := list -}}
{{- if and $section.inline $section.existingConfigMap -}}
{{- fail (printf "%s: use one source: inline or existingConfigMap" $what) -}}
{{- else if $section.inline -}}
{{- if $section.names -}}
{{- fail (printf "%s.names is only used with %s.existingConfigMap (inline entries are named by their keys)" $what $what) -}}
{{- end -}}
{{- $names = keys $section.inline | sortAlpha -}}
{{- else if $section.existingConfigMap -}}
{{- if not $section.names -}}
{{- fail (printf "%s.names is required with %s.existingConfigMap: the names, each stored as <name>%s" $what $what $spec.suffix) -}}
{{- end -}}
{{- $names = $section.names -}}
{{- else if $section.names -}}
{{- fail (printf "%s.names is set, but %s.existingConfigMap is not" $what $what) -}}
{{- end -}}
{{- $configMap := default (printf "%s-%s" $fullname $spec.volume) $section.existingConfigMap -}}
{{- $sections = append $sections (merge (dict "names" $names "configMap" $configMap "inline" ($section.inline | default dict)) $spec) -}}
{{- end -}}
{{- toJson $sections -}}
{{- end -}}

{{/* The signgate configuration, as JSON (the hook reads JSON without importing yaml). -------- */}}
{{- define "signgate.config" -}}
{{- $paths := include "signgate.paths" . | fromYaml -}}
{{- $keyNames := include "signgate.keyNames" (dict "section" .Values.keys "what" "keys") | fromJsonArray -}}
{{- $rekorNames := include "signgate.keyNames" (dict "section" .Values.rekorKeys "what" "rekorKeys") | fromJsonArray -}}
{{- $config := deepCopy .Values.config -}}
{{- $webhook := $config.webhook | default dict -}}
{{- $_ := set $webhook "signgateNamespace" .Release.Namespace -}}
{{- $_ := set $config "webhook" $webhook -}}
{{- $_ := set $config "keys" (include "signgate.keyMap" (dict "names" $keyNames "section" .Values.keys "dir" $paths.keys) | fromJson) -}}
{{- /* Trust material: the mounted files, beside any paths config.trustedRoots and
config.certificateAuthorities name (files mounted with extraVolumes). A name given twice fails. */ -}}
{{- range $trust := include "signgate.trustSections" . | fromJsonArray -}}
{{- $map := get $config $trust.what | default dict -}}
{{- range $name := $trust.names -}}
{{- if hasKey $map $name -}}
{{- fail (printf "%s.%s is both in config.%s and mounted by the chart: name it once" $trust.what $name $trust.what) -}}
{{- end -}}
{{- $_ := set $map $name (printf "%s/%s%s" $trust.dir $name $trust.suffix) -}}
{{- end -}}
{{- if $map -}}
{{- $_ := set $config $trust.what $map -}}
{{- end -}}
{{- end -}}
{{- $identityNames := keys ($config.identities | default dict) -}}
{{- $rootNames := keys ($config.trustedRoots | default dict) -}}
{{- $authorityNames := keys ($config.certificateAuthorities | default dict) -}}
{{- if $rekorNames -}}
{{- $_ := set $config "rekorKeys" (include "signgate.keyMap" (dict "names" $rekorNames "section" .Values.rekorKeys "dir" $paths.rekorKeys) | fromJson) -}}
{{- end -}}
{{- $registries := $config.registries | default dict -}}
{{- if .Values.registryAuth.existingSecret -}}
{{- $_ := set $registries "auth" $paths.registryAuthFile -}}
{{- end -}}
{{- if and .Values.registryCA.existingConfigMap .Values.registryCA.existingSecret -}}
{{- fail "registryCA: set existingConfigMap or existingSecret, not both" -}}
{{- end -}}
{{- if or .Values.registryCA.existingConfigMap .Values.registryCA.existingSecret -}}
{{- $_ := set $registries "caBundle" $paths.registryCAFile -}}
{{- end -}}
{{- $_ := set $config "registries" $registries -}}
{{- /* The cache directory is not a configuration field: SIGNGATE_CACHE_DIR names it. */ -}}
{{- /* Every key a rule names must be configured: fail at install, not at pod start. */ -}}
{{- range $index, $rule := $config.policy -}}
{{- $action := $rule.action | default "verify" -}}
{{- $type := $rule.type | default "cosign" -}}
{{- $ruleKeys := $rule.keys | default list -}}
{{- $ruleIdentities := $rule.identities | default list -}}
{{- /* A rule that lists identities and no keys trusts certificates only: no `default` key. */ -}}
{{- if and (eq $action "verify") (eq $type "cosign") (not $ruleKeys) (not $ruleIdentities) -}}
{{- $ruleKeys = list "default" -}}
{{- end -}}
{{- if and $ruleKeys (not $keyNames) -}}
{{- fail (printf "keys: no public key configured, but config.policy[%d] (%s) needs one: set keys.inline.<name> (PEM), or keys.existingSecret/keys.existingConfigMap with keys.names" $index $rule.images) -}}
{{- end -}}
{{- range $name := $ruleIdentities -}}
{{- if not (has $name $identityNames) -}}
{{- fail (printf "config.policy[%d] (%s) names identity %q, which is not in config.identities (%s)" $index $rule.images $name (join ", " (sortAlpha $identityNames))) -}}
{{- end -}}
{{- end -}}
{{- if and $rule.trustedRoot (not (has $rule.trustedRoot $rootNames)) -}}
{{- fail (printf "config.policy[%d] (%s) names trustedRoot %q, which is neither in trustedRoots nor in config.trustedRoots (%s)" $index $rule.images $rule.trustedRoot (join ", " (sortAlpha $rootNames))) -}}
{{- end -}}
{{- if and $rule.certificateAuthority (not (has $rule.certificateAuthority $authorityNames)) -}}
{{- fail (printf "config.policy[%d] (%s) names certificateAuthority %q, which is neither in certificateAuthorities nor in config.certificateAuthorities (%s)" $index $rule.images $rule.certificateAuthority (join ", " (sortAlpha $authorityNames))) -}}
{{- end -}}
{{- $named := concat $ruleKeys (without ($rule.required | default list) $ruleIdentities) -}}
{{- if $rule.notary -}}
{{- $named = concat $named ($rule.notary.rootKeys | default list) -}}
{{- end -}}
{{- range $name := $named -}}
{{- if not (has $name $keyNames) -}}
{{- fail (printf "config.policy[%d] (%s) names key %q, which is not configured (keys: %s)" $index $rule.images $name (join ", " $keyNames)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toPrettyJson $config -}}
{{- end -}}

{{/* TLS material for tls.source=helm, computed once per render and memoized in .Values:
the Secret and the Deployment's checksum must see the same certificate. An existing Secret
(lookup) is reused as long as it is complete and not within renewDays of expiry. */}}
{{- define "signgate.helmTLS" -}}
{{- if not (hasKey .Values "__signgateTLS") -}}
{{- $name := include "signgate.tlsSecretName" . -}}
{{- $now := now | unixEpoch | int64 -}}
{{- $renewSeconds := mul (int .Values.tls.helm.renewDays) 86400 -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $name -}}
{{- $data := dict -}}
{{- if and $existing $existing.data -}}
{{- $annotations := $existing.metadata.annotations | default dict -}}
{{- $notAfter := get $annotations "signgate.dev/tls-not-after" | default "0" | int64 -}}
{{- if and (index $existing.data "tls.crt") (index $existing.data "tls.key") (index $existing.data "ca.crt") (gt $notAfter (add $now $renewSeconds)) -}}
{{- $data = dict "tls.crt" (index $existing.data "tls.crt") "tls.key" (index $existing.data "tls.key") "ca.crt" (index $existing.data "ca.crt") "notAfter" (toString $notAfter) "reused" true -}}
{{- end -}}
{{- end -}}
{{- if not $data -}}
{{- $svc := include "signgate.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- $days := int .Values.tls.helm.validityDays -}}
{{- $ca := genCA (printf "%s-webhook-ca" $svc) $days -}}
{{- $dnsNames := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc $ns) nil $dnsNames $days $ca -}}
{{- $data = dict "tls.crt" ($cert.Cert | b64enc) "tls.key" ($cert.Key | b64enc) "ca.crt" ($ca.Cert | b64enc) "notAfter" (toString (add $now (mul $days 86400))) "reused" false -}}
{{- end -}}
{{- $_ := set .Values "__signgateTLS" $data -}}
{{- end -}}
{{- toJson (get .Values "__signgateTLS") -}}
{{- end -}}

{{/* Does the chart create a metrics Service? */}}
{{- define "signgate.metricsService" -}}
{{- if or .Values.metrics.service.enabled .Values.metrics.serviceMonitor.enabled -}}true{{- end -}}
{{- end -}}

{{/*
"true" when shell-operator will register a MutatingWebhookConfiguration: mutation.enabled, or any
policy rule with pinDigest (the hook adds the kubernetesMutating binding exactly then). RBAC and
the uninstall cleanup must follow, or shell-operator cannot create it.
*/}}
{{- define "signgate.mutating" -}}
{{- $on := .Values.mutation.enabled -}}
{{- range .Values.config.policy -}}
{{- if .pinDigest -}}{{- $on = true -}}{{- end -}}
{{- end -}}
{{- if $on -}}true{{- end -}}
{{- end -}}
