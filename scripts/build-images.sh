#!/usr/bin/env bash
# Build the scratchbert images, tagged with the project version, and push them or load them
# into a kind cluster. Names come from pipelines/settings.py, the tag from pyproject.toml.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

# bash 3.2 (macOS) has no mapfile: read the values line by line.
{ read -r registry; read -r cpu_name; read -r gpu_name; read -r version; } \
    < <(settings IMAGE_REGISTRY CPU_IMAGE_NAME GPU_IMAGE_NAME project_version)
[[ -n "${version:-}" ]] || die "could not read the project version from pyproject.toml."

usage() {
    cat <<EOF
Usage: scripts/build-images.sh [--push | --kind-load CLUSTER [--gpu-nodes NODES]] [--only cpu|cuda] [--dry-run]

Builds images/Dockerfile (CPU) and images/Dockerfile.cuda (GPU) from the repository root and
tags them <IMAGE_REGISTRY>/<name>:<version> (pipelines/settings.py, pyproject.toml):
  ${registry}/${cpu_name}:${version}
  ${registry}/${gpu_name}:${version}

  --push               push both tags to the registry (log in first: docker login ghcr.io)
  --kind-load CLUSTER  load the images into the nodes of kind cluster CLUSTER
  --gpu-nodes NODES    load the CUDA image (about 6 GB) only into these nodes (comma-separated;
                       kind-up.sh passes its GPU workers), not every node of the cluster
  --only cpu|cuda      build just one of the two images
  --dry-run            print the commands instead of running them
  -h, --help           this text

Build arguments (TORCH_VERSION, TORCH_CUDA, CUDA_IMAGE, PYTHON_IMAGE) can be passed through
DOCKER_BUILD_ARGS, e.g. DOCKER_BUILD_ARGS="--build-arg TORCH_CUDA=cu130".
EOF
}

mode=build
cluster=""
only=""
gpu_nodes=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --push) mode=push ;;
        --kind-load)
            [[ $# -ge 2 && -n "$2" ]] || die "--kind-load needs a cluster name (see --help)."
            mode=kind; cluster="$2"; shift ;;
        --gpu-nodes)
            [[ $# -ge 2 && -n "$2" ]] || die "--gpu-nodes needs a comma-separated list of node names (see --help)."
            gpu_nodes="$2"; shift ;;
        --only)
            [[ "${2:-}" == cpu || "${2:-}" == cuda ]] || die "--only takes 'cpu' or 'cuda', not '${2:-}'."
            only="$2"; shift ;;
        --dry-run) DRY_RUN=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument '$1'." ;;
    esac
    shift
done

[[ "$DRY_RUN" == 1 ]] || need docker
[[ "$mode" != kind || "$DRY_RUN" == 1 ]] || need kind

targets=()
[[ "$only" == cuda ]] || targets+=("images/Dockerfile=${registry}/${cpu_name}:${version}")
[[ "$only" == cpu ]] || targets+=("images/Dockerfile.cuda=${registry}/${gpu_name}:${version}")

extra_args=()
read -r -a extra_args <<<"${DOCKER_BUILD_ARGS:-}" || true

cd "$ROOT"
for t in "${targets[@]}"; do
    dockerfile="${t%%=*}"; image="${t#*=}"
    log "building $image from $dockerfile"
    run docker build --file "$dockerfile" --build-arg "VERSION=$version" \
        ${extra_args[@]+"${extra_args[@]}"} --tag "$image" .
    case "$mode" in
        push) log "pushing $image"; run docker push "$image" ;;
        kind) log "loading $image into kind cluster $cluster"
              nodes=()
              [[ "$dockerfile" != *.cuda || -z "$gpu_nodes" ]] || nodes=(--nodes "$gpu_nodes")
              run kind load docker-image --name "$cluster" ${nodes[@]+"${nodes[@]}"} "$image" ;;
        build) ;;
    esac
done
log "done: ${targets[*]#*=}"
