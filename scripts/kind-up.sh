#!/usr/bin/env bash
# A local Kubeflow Pipelines cluster for scratchbert, end to end:
#   kind cluster (GPU or CPU) -> KFP standalone at settings.KFP_VERSION -> scratchbert images
#   -> object-store Secret -> our overlay (launcher config, bucket Job, device plugin)
#   -> wait until ready -> port-forward the KFP UI to http://localhost:8080
# Every value (KFP version, namespace, names, GPU label) comes from pipelines/settings.py.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
Usage: scripts/kind-up.sh --gpu|--cpu [--name NAME] [--no-build] [--no-port-forward] [--dry-run]

  --gpu              cluster from manifests/kind/kind-gpu.yaml (one GPU worker; needs an NVIDIA
                     driver and the NVIDIA container toolkit as docker's default runtime)
  --cpu              cluster from manifests/kind/kind-cpu.yaml (no GPU): run the CPU pipeline,
                     pipelines/bert_pipeline_cpu.yaml (python pipelines/compile.py --cpu)
  --name NAME        kind cluster name (default: scratchbert); kubectl context kind-NAME
  --no-build         do not build the images: load the already built ones instead
  --no-port-forward  finish without port-forwarding the KFP UI
  --dry-run          print the commands instead of running them
  -h, --help         this text

Re-running is safe: an existing cluster, KFP install, Secret and images are reused/updated.
Remove everything with: kind delete cluster --name NAME
EOF
}

mode=""
name="scratchbert"
build=1
forward=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --gpu) mode=gpu ;;
        --cpu) mode=cpu ;;
        --name) [[ -n "${2:-}" ]] || die "--name needs a value."; name="$2"; shift ;;
        --no-build) build=0 ;;
        --no-port-forward) forward=0 ;;
        --dry-run) DRY_RUN=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument '$1'." ;;
    esac
    shift
done
[[ -n "$mode" ]] || { usage >&2; die "choose --gpu or --cpu."; }
export DRY_RUN

{ read -r KFP_VERSION; read -r NS; read -r SECRET; read -r GPU_LABEL_KEY; read -r GPU_LABEL_VALUE
  read -r GPU_RESOURCE; read -r REGISTRY; read -r CPU_IMAGE; read -r GPU_IMAGE; read -r VERSION
  read -r S3_SERVICE; read -r S3_PORT; } \
    < <(settings KFP_VERSION NAMESPACE S3_SECRET_NAME GPU_NODE_LABEL_KEY GPU_NODE_LABEL_VALUE \
                 GPU_RESOURCE IMAGE_REGISTRY CPU_IMAGE_NAME GPU_IMAGE_NAME project_version S3_SERVICE S3_PORT)

KFP_MANIFESTS="github.com/kubeflow/pipelines/manifests/kustomize"
CONTEXT="kind-${name}"
kc() { run kubectl --context "$CONTEXT" "$@"; }
# query CMD...: a command whose output we use; in a dry run it prints and returns "dry-run".
query() { if [[ "$DRY_RUN" == 1 ]]; then printf '+ %s\n' "$*" >&2; echo dry-run; else "$@"; fi; }

# ---- preflight ------------------------------------------------------------------------------
if [[ "$DRY_RUN" != 1 ]]; then
    need docker kind kubectl "$PYTHON"
    docker info >/dev/null 2>&1 || die "docker is not running (or this user may not use it)."
    if [[ "$mode" == gpu ]]; then
        need nvidia-smi
        nvidia-smi -L >/dev/null || die "nvidia-smi finds no GPU on this host."
        [[ "$(docker info --format '{{.DefaultRuntime}}')" == nvidia ]] || die \
            "docker's default runtime is not nvidia; run: sudo nvidia-ctk runtime configure --runtime=docker --set-as-default && sudo systemctl restart docker"
        if ! grep -Eq '^\s*accept-nvidia-visible-devices-as-volume-mounts\s*=\s*true' \
                /etc/nvidia-container-runtime/config.toml 2>/dev/null; then
            die "the NVIDIA toolkit ignores volume-mounted device lists; run: sudo nvidia-ctk config --set accept-nvidia-visible-devices-as-volume-mounts=true --in-place && sudo systemctl restart docker"
        fi
    fi
fi

# ---- 1. the kind cluster --------------------------------------------------------------------
if [[ "$DRY_RUN" != 1 ]] && kind get clusters 2>/dev/null | grep -qx "$name"; then
    log "kind cluster $name exists; reusing it"
else
    log "creating kind cluster $name from manifests/kind/kind-${mode}.yaml"
    run kind create cluster --name "$name" --config "$ROOT/manifests/kind/kind-${mode}.yaml" --wait 180s
fi

# ---- 2. GPU worker: NVIDIA container toolkit as containerd's default runtime (as nvkind does) -
setup_gpu_node() {
    local node="$1"
    log "installing the NVIDIA container toolkit in node $node"
    # shellcheck disable=SC2016  # expanded inside the node, not here
    run docker exec "$node" bash -euc '
        if ! command -v nvidia-ctk >/dev/null; then
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends ca-certificates curl gpg >/dev/null
            curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey \
                | gpg --batch --yes --dearmor -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
            curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list \
                | sed "s#deb https://#deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://#g" \
                > /etc/apt/sources.list.d/nvidia-container-toolkit.list
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends nvidia-container-toolkit >/dev/null
        fi
        nvidia-ctk runtime configure --runtime=containerd --set-as-default --config-source=command
        systemctl restart containerd
        # Toolkits before 1.19 hide /proc/driver/nvidia behind a tmpfs; expose params with
        # ModifyDeviceFiles: 0 so the driver does not recreate device nodes (nvkind does this).
        if grep -q "^ModifyDeviceFiles: 1" /proc/driver/nvidia/params 2>/dev/null; then
            umount -R /proc/driver/nvidia || true
            cp /proc/driver/nvidia/params /root/gpu-params
            sed -i "s/^ModifyDeviceFiles: 1$/ModifyDeviceFiles: 0/" /root/gpu-params
            mount --bind /root/gpu-params /proc/driver/nvidia/params
        fi
        nvidia-smi -L'
}
if [[ "$mode" == gpu ]]; then
    gpu_nodes="$(query kubectl --context "$CONTEXT" get nodes -l "${GPU_LABEL_KEY}=${GPU_LABEL_VALUE}" \
        -o jsonpath='{.items[*].metadata.name}')"
    [[ -n "$gpu_nodes" ]] || die "no node labelled ${GPU_LABEL_KEY}=${GPU_LABEL_VALUE}; was the cluster made from kind-gpu.yaml?"
    for node in $gpu_nodes; do setup_gpu_node "$node"; done
fi

# ---- 3. Kubeflow Pipelines standalone, at the version the SDK is pinned to -------------------
log "installing Kubeflow Pipelines ${KFP_VERSION} (standalone, platform-agnostic)"
kc apply -k "${KFP_MANIFESTS}/cluster-scoped-resources?ref=${KFP_VERSION}"
kc wait --for condition=established --timeout=120s crd --all
kc apply -k "${KFP_MANIFESTS}/env/platform-agnostic?ref=${KFP_VERSION}"

# ---- 4. our images --------------------------------------------------------------------------
# the CUDA image (about 6 GB) only onto the GPU workers, which alone run it
only=(--only cpu); [[ "$mode" != gpu ]] || only=(--gpu-nodes "${gpu_nodes// /,}")
if [[ "$build" == 1 ]]; then
    run "$ROOT/scripts/build-images.sh" --kind-load "$name" "${only[@]}"
else
    log "loading prebuilt images into $name"
    run kind load docker-image --name "$name" "${REGISTRY}/${CPU_IMAGE}:${VERSION}"
    [[ "$mode" != gpu ]] || run kind load docker-image --name "$name" --nodes "${gpu_nodes// /,}" "${REGISTRY}/${GPU_IMAGE}:${VERSION}"
fi

# ---- 5. object-store credentials (the in-cluster SeaweedFS, unless the Secret already exists) -
if [[ "$DRY_RUN" != 1 ]] && kubectl --context "$CONTEXT" -n "$NS" get secret "$SECRET" >/dev/null 2>&1; then
    log "Secret $NS/$SECRET exists; keeping it (docs/cluster.md shows how to replace it)"
else
    log "creating Secret $NS/$SECRET from the in-cluster object store's credentials"
    kc -n "$NS" wait --for=create secret/mlpipeline-minio-artifact --timeout=120s
    access="$(query kubectl --context "$CONTEXT" -n "$NS" get secret mlpipeline-minio-artifact -o jsonpath='{.data.accesskey}' | base64 -d 2>/dev/null || true)"
    secret="$(query kubectl --context "$CONTEXT" -n "$NS" get secret mlpipeline-minio-artifact -o jsonpath='{.data.secretkey}' | base64 -d 2>/dev/null || true)"
    [[ "$DRY_RUN" == 1 || ( -n "$access" && -n "$secret" ) ]] || die "could not read $NS/mlpipeline-minio-artifact."
    envfile="$(mktemp)"; chmod 600 "$envfile"; trap 'rm -f "$envfile"' EXIT
    printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\nAWS_ENDPOINT_URL=http://%s.%s:%s\n' \
        "$access" "$secret" "$S3_SERVICE" "$NS" "$S3_PORT" > "$envfile"
    if [[ "$DRY_RUN" == 1 ]]; then
        printf '+ kubectl create secret generic %s --from-env-file=... --dry-run=client -o yaml | kubectl apply -f -\n' "$SECRET"
    else
        kubectl --context "$CONTEXT" -n "$NS" create secret generic "$SECRET" \
                --from-env-file="$envfile" --dry-run=client -o yaml \
            | kubectl --context "$CONTEXT" apply -f -
    fi
fi

# ---- 6. scratchbert's overlay ---------------------------------------------------------------
log "applying manifests/overlays/kind-${mode}"
kc apply -k "$ROOT/manifests/overlays/kind-${mode}"

# ---- 7. wait until everything is up ---------------------------------------------------------
log "waiting for Kubeflow Pipelines (first start pulls images: up to 20 minutes)"
kc -n "$NS" wait --for=condition=Available deployment --all --timeout=1200s
kc -n "$NS" wait --for=condition=complete job/scratchbert-create-bucket --timeout=300s
if [[ "$mode" == gpu ]]; then
    kc -n kube-system rollout status daemonset/nvidia-device-plugin-daemonset --timeout=300s
    gpus="$(query kubectl --context "$CONTEXT" get nodes -l "${GPU_LABEL_KEY}=${GPU_LABEL_VALUE}" \
        -o jsonpath="{.items[*].status.allocatable.${GPU_RESOURCE//./\\.}}")"
    [[ -n "$gpus" && "$gpus" != 0 ]] || die "the GPU worker advertises no ${GPU_RESOURCE}; see the device plugin's logs: kubectl --context $CONTEXT -n kube-system logs ds/nvidia-device-plugin-daemonset"
    log "GPU worker advertises ${GPU_RESOURCE}: ${gpus}"
fi

log "ready: cluster $name (kubectl context $CONTEXT), KFP ${KFP_VERSION} in namespace $NS"
if [[ "$mode" == cpu ]]; then
    # the default pipeline pretrains on a GPU node, which this cluster has none of
    log "no GPUs here: run pipelines/bert_pipeline_cpu.yaml (python pipelines/compile.py --cpu), e.g." \
        "scratchbert submit --host http://localhost:8080 --package pipelines/bert_pipeline_cpu.yaml --wait"
fi
if [[ "$forward" == 1 ]]; then
    log "KFP UI on http://localhost:8080 (Ctrl-C stops the port-forward, not the cluster)"
    kc -n "$NS" port-forward svc/ml-pipeline-ui 8080:80
fi
