#!/usr/bin/env bash
# Brings the services Voltline's tests need onto this machine, from the project's own files:
# Debian packages with apt where it runs as root (or with password-less sudo). Quick when
# everything is already there. Where it cannot install, it stops with one message naming
# what is missing and the command that installs it, before any test runs.
#
#   infra/ensure.sh            # what the tests need (npm test and .ci/run call it)
#   infra/ensure.sh --check    # only say what is missing; never install
#
# Needed now: Mosquitto 2 (the external-broker tests start their own instances on free
# loopback ports; the packaged service is not started) and Chromium (the web console's
# tests drive it headless with playwright-core, from /usr/bin/chromium) and VictoriaMetrics
# (the external store's tests start their own through infra/victoria-metrics.sh; the
# packaged service is not started) and Java 17 with Maven for Apache Kafka (the cluster
# mode's tests start their own through infra/kafka/kafka.sh, whose jars come from Maven
# Central: fetched here, once, into ~/.cache/voltline, so no test waits for them) and the
# worker drivers' walls (issue 17): bubblewrap for `sandbox`, runsc for `gvisor`, QEMU and a
# static busybox for `microvm`, whose guest image the driver builds from Debian's kernel
# package and caches (functions-runtime/drivers/microvm).
set -euo pipefail

check_only=0
[ "${1:-}" = "--check" ] && check_only=1

# package → a file that shows it is installed
declare -A PROBES=(
  [mosquitto]="/usr/sbin/mosquitto"
  [chromium]="/usr/bin/chromium"
  [victoria-metrics]="/usr/bin/victoria-metrics"
  [openjdk-17-jre-headless]="/usr/bin/java"
  [maven]="/usr/bin/mvn"
  [bubblewrap]="/usr/bin/bwrap"
  [runsc]="/usr/bin/runsc"
  [qemu-system-x86]="/usr/bin/qemu-system-x86_64"
  [busybox-static]="/bin/busybox"
)

# The Kafka jars, once java and mvn are there (--check: only say whether they are cached).
kafka_jars() {
  if [ "$check_only" = 1 ]; then bash "$(dirname "$0")/kafka/kafka.sh" cached; else bash "$(dirname "$0")/kafka/kafka.sh" fetch >/dev/null; fi
}

# The microvm driver's guest image (the Debian kernel package, fetched once with apt-get
# download, and an initramfs of busybox, Node and the agent), built ahead so no test waits
# for it; the driver builds it itself when it is missing. --check: nothing to do; before
# `npm install`: nothing yet.
microvm_image() {
  if [ "$check_only" = 1 ]; then return 0; fi
  # It needs the project's Node 24 and node_modules: before `npm install` (CI's first call)
  # there is nothing to build it with yet; `npm test` calls this again after.
  if [ ! -x "$(dirname "$0")/../node_modules/node/bin/node" ]; then return 0; fi
  if ! out="$(bash "$(dirname "$0")/microvm/build-image.sh" --no-snapshot 2>&1)"; then
    echo "infra/ensure.sh: the microvm guest image could not be built (it needs apt-get download of Debian's linux-image-cloud-amd64 once):" >&2
    echo "$out" | tail -5 >&2
    exit 1
  fi
}

missing=()
for pkg in "${!PROBES[@]}"; do
  probe="${PROBES[$pkg]}"
  if [ ! -x "$probe" ] && ! command -v "$(basename "$probe")" >/dev/null 2>&1; then missing+=("$pkg"); fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  kafka_jars
  microvm_image
  exit 0
fi

install_cmd="apt-get install -y --no-install-recommends ${missing[*]}"
say_missing() {
  echo "infra/ensure.sh: the tests need ${missing[*]}, which is not installed here, and $1." >&2
  echo "  Install it with: sudo apt-get update && sudo $install_cmd   (then run the tests again)" >&2
  exit 1
}
[ "$check_only" = 1 ] && say_missing "--check does not install"
command -v apt-get >/dev/null 2>&1 || say_missing "this machine has no apt-get to install it with"
if [ "$(id -u)" = 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo)
else
  say_missing "installing needs root"
fi

echo "infra/ensure.sh: installing ${missing[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >&2
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for pkg in "${missing[@]}"; do
  probe="${PROBES[$pkg]}"
  if [ ! -x "$probe" ]; then
    echo "infra/ensure.sh: apt-get installed $pkg but $probe is not there" >&2
    exit 1
  fi
done
echo "infra/ensure.sh: installed ${missing[*]}" >&2
kafka_jars
microvm_image
