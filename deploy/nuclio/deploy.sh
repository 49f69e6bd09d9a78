#!/usr/bin/env bash
# Deploy the safety-rope function into the Nuclio that runs next to CVAT (project `cvat`,
# platform `local`, docker network `cvat_cvat`), the way CVAT's serverless/deploy_cpu.sh does.
#
# The image build must not need this repository: a stage directory gets the function's files,
# a wheel of the core (shared/, distribution ropewatch-core, built from a copy so the checkout is never
# written) and the pinned constraints, and nuctl builds from it. The image gets ropewatch-core[model]
# and nothing of the validator.
# The checkpoint is not baked in: its directory is mounted read-only and MODEL_PATH points into it,
# so replacing the file (hot-swap) needs no redeploy. The directory, not the file, is mounted so an
# atomic rename of a new checkpoint is seen inside the container. nuctl 1.14's --volume takes only
# SRC:DST (":ro" is rejected), so the mounts go into the staged function.yaml as spec.volumes with
# volumeMount.readOnly: true, which the local platform honours.
# Without a detector every call from CVAT (which never sends boxes) fails with detector_unavailable,
# so --detector is required; --allow-no-detector deploys a boxes-only function on purpose.
#
# usage: deploy/nuclio/deploy.sh [--gpu] [--dry-run] [--checkpoint FILE] [--detector FILE]
#                                [--allow-no-detector] [--stage DIR] [--network NAME] [--function-dir DIR]
#   --gpu            use function-gpu.yaml (one GPU, one worker)
#   --dry-run        stage, then print the staged tree and the exact commands; run no nuctl
#   --checkpoint     rope classifier checkpoint (default $ROPEWATCH_CHECKPOINT)
#   --detector       person detector weights (default $ROPEWATCH_DETECTOR; required, see above)
#   --allow-no-detector  deploy without a detector: requests must send boxes
#   --stage          build directory (default: a new temporary directory)
#   --network        docker network of CVAT (default $CVAT_NETWORK or cvat_cvat)
#   --function-dir   the function's files (default functions/safety_rope of this repository)
# env: PYTHON (interpreter with pip, setuptools and PyYAML, default python3), NUCTL (default nuctl)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
FUNC_DIR="$REPO/functions/safety_rope"
PROJECT=cvat
MODELS_IN=/opt/nuclio/models
DETECTOR_IN=/opt/nuclio/detector
PYTHON="${PYTHON:-python3}"
NUCTL="${NUCTL:-nuctl}"
GPU=0 DRY=0 NO_DETECTOR=0 STAGE=""
CKPT="${ROPEWATCH_CHECKPOINT:-}"
DETECTOR="${ROPEWATCH_DETECTOR:-}"
NETWORK="${CVAT_NETWORK:-cvat_cvat}"

die() { echo "deploy.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --gpu) GPU=1 ;;
        --dry-run) DRY=1 ;;
        --checkpoint) CKPT="${2:?--checkpoint needs a file}"; shift ;;
        --detector) DETECTOR="${2:?--detector needs a file}"; shift ;;
        --allow-no-detector) NO_DETECTOR=1 ;;
        --stage) STAGE="${2:?--stage needs a directory}"; shift ;;
        --network) NETWORK="${2:?--network needs a name}"; shift ;;
        --function-dir) FUNC_DIR="$(realpath "${2:?--function-dir needs a directory}")"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

FUNC_FILE=function.yaml
[ "$GPU" = 1 ] && FUNC_FILE=function-gpu.yaml
[ -f "$FUNC_DIR/$FUNC_FILE" ] || die "missing $FUNC_DIR/$FUNC_FILE"
[ -n "$CKPT" ] || die "no checkpoint: pass --checkpoint FILE or set ROPEWATCH_CHECKPOINT"
if [ -z "$DETECTOR" ] && [ "$NO_DETECTOR" = 0 ]; then
    die "no detector: CVAT sends no boxes, so every call would fail with detector_unavailable; pass --detector FILE (or ROPEWATCH_DETECTOR), or --allow-no-detector for a boxes-only function"
fi
[ -z "$DETECTOR" ] || [ "$NO_DETECTOR" = 0 ] || die "--detector and --allow-no-detector contradict each other"
if [ "$DRY" = 0 ]; then
    [ -f "$CKPT" ] || die "checkpoint $CKPT not found"
    [ -z "$DETECTOR" ] || [ -f "$DETECTOR" ] || die "detector weights $DETECTOR not found"
    command -v "$NUCTL" >/dev/null || die "$NUCTL not found: install nuctl matching CVAT's Nuclio version"
fi
CKPT="$(realpath -m "$CKPT")"

# --- stage -------------------------------------------------------------------------------------
[ -n "$STAGE" ] || STAGE="$(mktemp -d -t ropewatch-nuclio-XXXXXX)"
mkdir -p "$STAGE"
[ -z "$(ls -A "$STAGE")" ] || die "stage directory $STAGE is not empty"
cp -r "$FUNC_DIR"/. "$STAGE"/
find "$STAGE" -name __pycache__ -prune -exec rm -rf {} +
cp "$REPO/deploy/constraints.txt" "$STAGE/constraints.txt"
mkdir -p "$STAGE/wheels"
CORE_SRC="$(mktemp -d -t ropewatch-core-src-XXXXXX)"
trap 'rm -rf "$CORE_SRC"' EXIT
cp -r "$REPO/shared"/. "$CORE_SRC"/
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation \
    --wheel-dir "$STAGE/wheels" "$CORE_SRC" >&2

# read-only mounts: spec.volumes in the staged function.yaml (hostPath + volumeMount.readOnly)
MOUNTS=("models" "$(dirname "$CKPT")" "$MODELS_IN")
[ -z "$DETECTOR" ] || { DETECTOR="$(realpath -m "$DETECTOR")"; MOUNTS+=("detector" "$(dirname "$DETECTOR")" "$DETECTOR_IN"); }
"$PYTHON" - "$STAGE/$FUNC_FILE" "${MOUNTS[@]}" <<'PY'
import sys

import yaml

path, mounts = sys.argv[1], sys.argv[2:]
with open(path, encoding="utf-8") as fh:
    spec = yaml.safe_load(fh)
volumes = spec.setdefault("spec", {}).setdefault("volumes", [])
for name, host, inside in zip(mounts[::3], mounts[1::3], mounts[2::3]):
    volumes.append({"volume": {"name": name, "hostPath": {"path": host}},
                    "volumeMount": {"name": name, "mountPath": inside, "readOnly": True}})
with open(path, "w", encoding="utf-8") as fh:
    yaml.safe_dump(spec, fh, sort_keys=False)
PY

# --- commands ----------------------------------------------------------------------------------
CREATE=("$NUCTL" create project "$PROJECT" --platform local)
DEPLOY=("$NUCTL" deploy --project-name "$PROJECT" --path "$STAGE" --file "$STAGE/$FUNC_FILE"
        --platform local --platform-config "{\"attributes\": {\"network\": \"$NETWORK\"}}"
        --env "MODEL_PATH=$MODELS_IN/$(basename "$CKPT")")
[ -z "$DETECTOR" ] || DEPLOY+=(--env "DETECTOR_PATH=$DETECTOR_IN/$(basename "$DETECTOR")")
[ "$GPU" = 1 ] && DEPLOY+=(--env DEVICE=cuda) || DEPLOY+=(--env DEVICE=cpu)
LIST=("$NUCTL" get function --platform local)

quoted() { local out; printf -v out '%q ' "$@"; echo "${out% }"; }
[ -n "$DETECTOR" ] || echo "deploy.sh: WARNING: no detector (--allow-no-detector): CVAT's calls send no boxes and will all fail with detector_unavailable" >&2
if [ "$DRY" = 1 ]; then
    echo "# staged build directory: $STAGE"
    (cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort | sed 's|^\./||')
    echo "# commands"
    echo "$NUCTL get project $PROJECT --platform local || $(quoted "${CREATE[@]}")"
    quoted "${DEPLOY[@]}"
    quoted "${LIST[@]}"
    exit 0
fi

"$NUCTL" get project "$PROJECT" --platform local >/dev/null 2>&1 || "${CREATE[@]}"
"${DEPLOY[@]}"
"${LIST[@]}"
