#!/usr/bin/env bash
# End to end on a kind cluster: build the images, load them into kind, install MinIO and the chart with Helm, run a
# tiny CPU (gloo) AsyncDiffJob, wait for Succeeded and check its objects in MinIO.
#
# Needs Docker (a daemon that answers), kind, kubectl and helm on PATH, and network access for the base images and
# PyPI. It cannot run on machines without a Docker engine (tests/kind/test_kind.py skips there with the reason).
#
# Environment: KIND_CLUSTER (default asyncdiff-kind), KEEP_CLUSTER=1 to keep it afterwards, REUSE_IMAGES=1 to skip
# the builds when the images exist, JOB_TIMEOUT (default 900s), ARTIFACTS (diagnostics folder, default out/kind),
# MINIO_IMAGE, KIND_NODE_IMAGE (optional, e.g. kindest/node:v1.33.1).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$REPO/tests/kind"
CLUSTER="${KIND_CLUSTER:-asyncdiff-kind}"
JOB_TIMEOUT="${JOB_TIMEOUT:-900s}"
ARTIFACTS="${ARTIFACTS:-$REPO/out/kind}"
MINIO_IMAGE="${MINIO_IMAGE:-minio/minio:RELEASE.2025-04-22T22-12-26Z}"
OPERATOR_IMAGE=asyncdiff-operator:kind
WORKER_IMAGE=asyncdiff-worker-cpu:kind
RELEASE=asyncdiff
OPERATOR_NS=asyncdiff-system
JOBS_NS="jobs"
S3_USER=asyncdiff
S3_PASSWORD=asyncdiff-kind-secret
S3_ENDPOINT=http://minio.minio.svc.cluster.local:9000

log() { printf '\n== %s\n' "$*"; }

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is not on PATH" >&2; exit 2; }
done
docker info >/dev/null 2>&1 || { echo "run.sh: the Docker daemon does not answer (docker info)" >&2; exit 2; }

diagnostics() {
  mkdir -p "$ARTIFACTS"
  kubectl get all,asyncdiffjobs,events -A -o wide >"$ARTIFACTS/get-all.txt" 2>&1 || true
  kubectl get asyncdiffjobs -A -o yaml >"$ARTIFACTS/asyncdiffjobs.yaml" 2>&1 || true
  kubectl -n "$OPERATOR_NS" logs "deployment/$RELEASE-asyncdiff-operator" --tail=500 >"$ARTIFACTS/operator.log" 2>&1 || true
  kubectl -n "$JOBS_NS" logs -l asyncdiff.io/job --all-containers --tail=500 >"$ARTIFACTS/workers.log" 2>&1 || true
  kubectl describe pods -A >"$ARTIFACTS/pods.txt" 2>&1 || true
}

cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    log "failed (exit $rc); diagnostics in $ARTIFACTS"
    diagnostics
  fi
  if [ "${KEEP_CLUSTER:-0}" != "1" ]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap cleanup EXIT

log "kind cluster $CLUSTER"
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 180s ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

log "images"
for pair in "operator:$OPERATOR_IMAGE" "worker-cpu:$WORKER_IMAGE"; do
  target="${pair%%:*}"; image="${pair#*:}"
  if [ "${REUSE_IMAGES:-0}" = "1" ] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "reusing $image"
  else
    docker build --target "$target" -t "$image" "$REPO"
  fi
  kind load docker-image "$image" --name "$CLUSTER"
done
# The operator image has no torch (a cheap runtime check of what tests/packaging checks statically).
if docker run --rm --entrypoint python "$OPERATOR_IMAGE" -c "import torch" 2>/dev/null; then
  echo "run.sh: torch is importable in $OPERATOR_IMAGE" >&2; exit 1
fi
[ "$(docker run --rm --entrypoint id "$OPERATOR_IMAGE" -u)" = "10001" ]

log "MinIO"
sed "s|MINIO_IMAGE|$MINIO_IMAGE|" "$HERE/minio.yaml" | kubectl apply -f -
kubectl -n minio rollout status deployment/minio --timeout=300s

restricted_overrides() {  # the securityContext a pod needs in the jobs namespace (Pod Security "restricted")
  local pod='"securityContext":{"runAsNonRoot":true,"runAsUser":10001,"seccompProfile":{"type":"RuntimeDefault"}}'
  local ctr='"securityContext":{"allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]}}'
  printf '{"apiVersion":"v1","spec":{%s,"containers":[{"name":"%s",%s}]}}' "$pod" "$1" "$ctr"
}

s3_pod() {  # s3_pod NAME ARGS...: run s3check.py in the worker image, print its log, fail when it fails
  local name="$1"; shift
  kubectl -n "$JOBS_NS" delete pod "$name" --ignore-not-found >/dev/null
  kubectl -n "$JOBS_NS" run "$name" --image="$WORKER_IMAGE" --image-pull-policy=Never --restart=Never \
    --env="S3_ENDPOINT=$S3_ENDPOINT" --env="AWS_ACCESS_KEY_ID=$S3_USER" --env="AWS_SECRET_ACCESS_KEY=$S3_PASSWORD" \
    --override-type=strategic --overrides="$(restricted_overrides "$name")" \
    --command -- python -c "$(cat "$HERE/s3check.py")" "$@" >/dev/null
  kubectl -n "$JOBS_NS" wait "pod/$name" --for=jsonpath='{.status.phase}'=Succeeded --timeout=180s \
    || { kubectl -n "$JOBS_NS" logs "pod/$name" || true; return 1; }
  kubectl -n "$JOBS_NS" logs "pod/$name"
}

log "namespace $JOBS_NS, S3 credentials Secret, bucket"
kubectl create namespace "$JOBS_NS" --dry-run=client -o yaml | kubectl apply -f -
# Workloads where platform teams run them: the jobs namespace enforces the restricted Pod Security Standard.
kubectl label --overwrite namespace "$JOBS_NS" pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/warn=restricted
kubectl -n "$JOBS_NS" create secret generic asyncdiff-s3 \
  --from-literal=AWS_ACCESS_KEY_ID="$S3_USER" --from-literal=AWS_SECRET_ACCESS_KEY="$S3_PASSWORD" \
  --dry-run=client -o yaml | kubectl apply -f -
s3_pod s3-create-bucket create-bucket asyncdiff

log "helm install"
helm lint --strict "$REPO/charts/asyncdiff-operator"
helm upgrade --install "$RELEASE" "$REPO/charts/asyncdiff-operator" \
  --namespace "$OPERATOR_NS" --create-namespace --wait --timeout 5m \
  --set image.operator.repository=asyncdiff-operator --set image.operator.tag=kind \
  --set image.operator.pullPolicy=Never \
  --set image.worker.repository=asyncdiff-worker-cpu --set image.worker.tag=kind \
  --set image.worker.pullPolicy=Never \
  --set "operator.watchNamespaces={$JOBS_NS}" \
  --set s3.endpoint="$S3_ENDPOINT" --set s3.forcePathStyle=true --set s3.credentialsSecret=asyncdiff-s3
kubectl -n "$OPERATOR_NS" rollout status "deployment/$RELEASE-asyncdiff-operator" --timeout=180s

log "AsyncDiffJob"
kubectl apply -f "$HERE/tiny-job.yaml"
kubectl -n "$JOBS_NS" wait adj/kind-tiny --for=jsonpath='{.status.phase}'=Succeeded --timeout="$JOB_TIMEOUT"
kubectl -n "$JOBS_NS" get adj/kind-tiny -o wide
outputs="$(kubectl -n "$JOBS_NS" get adj/kind-tiny -o jsonpath='{.status.outputs}')"
echo "outputs: $outputs"

log "objects in MinIO"
s3_pod s3-verify verify "$outputs"

log "helm uninstall keeps the CRD and the job"
helm uninstall "$RELEASE" --namespace "$OPERATOR_NS" --wait
kubectl get crd asyncdiffjobs.asyncdiff.io >/dev/null
kubectl -n "$JOBS_NS" get adj/kind-tiny >/dev/null

log "kind end-to-end test passed"
