#!/usr/bin/env bash
# Builds (or finds in the cache) the microvm worker's guest image (Debian kernel + an
# initramfs of busybox, Node and the agent) and the snapshot its workers restore from.
# See functions-runtime/drivers/microvm/image.ts. Cache: ${VOLTLINE_CACHE_DIR:-~/.cache/voltline}/microvm/.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec npx node --no-node-snapshot --disable-warning=ExperimentalWarning infra/microvm/build-image.ts "$@"
