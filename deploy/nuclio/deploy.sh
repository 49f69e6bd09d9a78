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
# atomic rename of a new checkpoint is seen inside the container.
#
# usage: deploy/nuclio/deploy.sh [--gpu] [--dry-run] [--checkpoint FILE] [--detector FILE]
#                                [--stage DIR] [--network NAME] [--function-dir DIR]
#   --gpu            use function-gpu.yaml (one GPU, one worker)
#   --dry-run        stage, then print the staged tree and the exact commands; run no nuctl
#   --checkpoint     rope classifier checkpoint (default $ROPEWATCH_CHECKPOINT)
#   --detector       person detector weights (default $ROPEWATCH_DETECTOR; optional)
#   --stage          build directory (default: a new temporary directory)
#   --network        docker network of CVAT (default $CVAT_NETWORK or cvat_cvat)
#   --function-dir   the function's files (default functions/safety_rope of this repository)
# env: PYTHON (interpreter with pip + setuptools for the wheel, default python3), NUCTL (default nuctl)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
FUNC_DIR="$REPO/functions/safety_rope"
PROJECT=cvat
MODELS_IN=/opt/nuclio/models
DETECTOR_IN=/opt/nuclio/detector
PYTHON="${PYTHON:-python3}"
NUCTL="${NUCTL:-nuctl}"
GPU=0 DRY=0 STAGE=""
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

# --- commands ----------------------------------------------------------------------------------
CREATE=("$NUCTL" create project "$PROJECT" --platform local)
DEPLOY=("$NUCTL" deploy --project-name "$PROJECT" --path "$STAGE" --file "$STAGE/$FUNC_FILE"
        --platform local --platform-config "{\"attributes\": {\"network\": \"$NETWORK\"}}"
        --volume "$(dirname "$CKPT"):$MODELS_IN:ro" --env "MODEL_PATH=$MODELS_IN/$(basename "$CKPT")")
if [ -n "$DETECTOR" ]; then
    DETECTOR="$(realpath -m "$DETECTOR")"
    DEPLOY+=(--volume "$(dirname "$DETECTOR"):$DETECTOR_IN:ro" --env "DETECTOR_PATH=$DETECTOR_IN/$(basename "$DETECTOR")")
fi
[ "$GPU" = 1 ] && DEPLOY+=(--env DEVICE=cuda) || DEPLOY+=(--env DEVICE=cpu)
LIST=("$NUCTL" get function --platform local)

quoted() { local out; printf -v out '%q ' "$@"; echo "${out% }"; }
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
