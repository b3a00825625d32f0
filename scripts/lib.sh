# shellcheck shell=bash
# Shared helpers for scripts/*.sh (sourced, not run).
#
# Every cluster-side value (KFP version, image names, namespace, secret name, ...) comes from
# pipelines/settings.py through `settings NAME...`; nothing here spells one out.

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"

# settings NAME... -> the values, one per line. Callables (project_version) are called.
# settings.py uses only the standard library, so any python3 can read it.
settings() {
    "$PYTHON" - "$ROOT/pipelines/settings.py" "$@" <<'PY'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("scratchbert_settings", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
for name in sys.argv[2:]:
    value = getattr(mod, name)
    print(value() if callable(value) else value)
PY
}

log() {
    if [[ -t 2 ]]; then printf '\033[1m==> %s\033[0m\n' "$*" >&2; else printf '==> %s\n' "$*" >&2; fi
}
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

need() {
    local cmd
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' is not on PATH; install it (see docs/cluster.md, Prerequisites)."
    done
}

# run CMD...: run a command, or only print it when DRY_RUN=1 (used by tests/static).
DRY_RUN="${DRY_RUN:-0}"
run() {
    if [[ "$DRY_RUN" == 1 ]]; then
        printf '+ %s\n' "$*"
    else
        "$@"
    fi
}
