#!/bin/bash
# Build service images with buildah (no daemon, no registry) and prove each one starts: run the
# service inside its image and get /healthz from the host on 127.0.0.1.
#   images/build.sh [SERVICE[:TARGET]...]      default: ingest:cpu      (make images)
# The base comes from Debian packages (images/base/build.sh) unless BASE_IMAGE names another.
# Needs root, buildah and debootstrap (apt-get install buildah debootstrap).
set -euo pipefail
cd "$(dirname "$0")/.."
export STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
base=${BASE_IMAGE:-localhost/worldloom/python:3.11-bookworm}
tag=${TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}/\1/p' charts/worldloom/Chart.yaml)}
buildah=(buildah --storage-driver "$STORAGE_DRIVER")
[ "$base" != localhost/worldloom/python:3.11-bookworm ] || images/base/build.sh
# behind a TLS-intercepting proxy the build steps need its CA: mounted while they run, never kept
ca=${BUILD_CA_BUNDLE:-${SSL_CERT_FILE:-}}
mounts=()
[ -z "$ca" ] || [ ! -f "$ca" ] || mounts=(--volume "$ca:/run/build-ca.crt:ro")

smoke() {  # image service port
    local image=$1 service=$2 port=$3 ctr log pid
    log=$(mktemp /tmp/worldloom-smoke.XXXXXX)
    ctr=$("${buildah[@]}" from "$image")
    local var="WORLDLOOM_${service^^}"
    setsid "${buildah[@]}" run --isolation chroot \
        --env "${var}_HTTP__HOST=127.0.0.1" --env "${var}_HTTP__PORT=$port" \
        --env "${var}_HTTP__API_TOKENS=smoke-test-token" --env "${var}_STORE__ROOT=/tmp/store" \
        "$ctr" -- python -m "worldloom.$service" >"$log" 2>&1 &
    pid=$!
    local ok=1
    for _ in $(seq 120); do
        if curl -fsS "http://127.0.0.1:$port/healthz" 2>/dev/null; then ok=0; break; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    echo
    kill -TERM -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    "${buildah[@]}" rm "$ctr" >/dev/null
    if [ "$ok" != 0 ]; then echo "$service did not answer /healthz; its log:"; cat "$log"; rm -f "$log"; return 1; fi
    rm -f "$log"
}

for spec in "${@:-ingest:cpu}"; do
    service=${spec%%:*}; target=${spec#*:}; [ "$target" != "$spec" ] || target=cpu
    image="localhost/worldloom/$service:$tag$([ "$target" = cpu ] || echo "-$target")"
    start=$(date +%s)
    "${buildah[@]}" bud --isolation chroot --layers "${mounts[@]}" --build-arg "BASE_IMAGE=$base" --target "$target" \
        -f "services/$service/Dockerfile" -t "$image" .
    built=$(date +%s)
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    smoke "$image" "$service" "$port"
    echo "$image: built in $((built - start)) s, answered /healthz $(( $(date +%s) - built )) s after start of the smoke run," \
         "size $("${buildah[@]}" images --format '{{.Size}}' "$image")"
done
