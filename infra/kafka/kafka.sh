#!/usr/bin/env bash
# Apache Kafka 4.4.0 in KRaft mode for Voltline's cluster mode (`voltline up --kafka …`): the
# jars from Maven Central through infra/kafka/pom.xml (Maven, once, into a cache outside the
# project), run with Java 17 (Debian's openjdk-17-jre-headless and maven; infra/ensure.sh
# installs both and fetches the jars), one or three nodes, each broker and controller at
# once, on loopback only.
#
#   infra/kafka/kafka.sh fetch                                             # the jars into the cache; quick when cached
#   infra/kafka/kafka.sh cached                                            # exit 0 when the jars are cached (never fetches)
#   infra/kafka/kafka.sh start      [--dir D] [--port P] [--nodes 1|3] [--secure]  # background; waits until every broker is ready
#   infra/kafka/kafka.sh stop       [--dir D] [--node N]                  # SIGTERM by PID file, SIGKILL after 20 s; all nodes or one
#   infra/kafka/kafka.sh kill       [--dir D] [--node N]                  # kill -9 (tests of a crash); all nodes or one
#   infra/kafka/kafka.sh start-node [--dir D]  --node N                   # starts one stopped node of D again; waits until ready
#   infra/kafka/kafka.sh run        [--dir D] [--port P]                  # one node in the foreground (Ctrl-C stops)
#
# Defaults: --dir .voltline/kafka, --port 9092, --nodes 1. Then:
#   voltline up --kafka 127.0.0.1:9092
#
# Ports: node N (1, 2, 3) listens on 127.0.0.1 only, broker on P+2(N-1), controller on the
# port after it: one node 9092 (broker) and 9093; three nodes 9092, 9094, 9096 (brokers) and
# 9093, 9095, 9097. A cluster takes the 2×nodes ports from P.
# Replication: one node 1; three nodes 3 (internal topics and new topics' default) with
# min.insync.replicas 2, so acks=all writes go on with one node down. Topics are never
# created on first use (auto.create.topics.enable=false): Voltline creates its own.
# A killed node is fenced, and its partitions lead elsewhere, after 4 s (Kafka's default: 9 s).
# The consumer-offsets topic has 5 partitions (default 50): the first consumer group of a new
# cluster is then ready in about 0.5 s instead of 3.5 s, which tests feel.
#
# --secure (a new D): each node also listens for clients with TLS and SASL (SASL_SSL) on
# P+2×nodes+(N-1): PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for user 'voltline' with a random
# password, and a self-signed certificate for 127.0.0.1 made with Java's keytool. D/secure.env
# says how to connect (brokers, ca_file, username, password); the plain listener stays for
# the readiness check and between the nodes.
#
# D holds the cluster: cluster.env (its id, nodes, port), brokers (the bootstrap addresses, one
# a line) and node-N/ (server.properties, data/, kafka.log, kafka.pid). Starting again on a D
# keeps its data (a formatted node is never formatted again) and its nodes and port; delete
# D for a new cluster. kafka.log keeps warnings and errors (VOLTLINE_KAFKA_LOG_LEVEL=info for
# Kafka's full log); the previous run's log is kept as kafka.log.1.
# Cache: ${VOLTLINE_KAFKA_HOME:-~/.cache/voltline/kafka-4.4.0}/libs (the `fetched` marker beside
# it is written last, so a half-finished fetch is done again); Maven keeps its copy in ~/.m2.
# The readiness check (infra/kafka/ready.ts) runs on the project's Node (npm ci first).
# --owner-pid PID [--temp] (start, start-node): the cluster is killed when that process ends
# (and with --temp, D is removed then too); tests pass their own PID and a temp D, so no Kafka
# and no folder outlives them, however the test process ends.
set -euo pipefail

KAFKA_VERSION=4.4.0
me="infra/kafka/kafka.sh"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
home="${VOLTLINE_KAFKA_HOME:-$HOME/.cache/voltline/kafka-$KAFKA_VERSION}"
libs="$home/libs"
marker="$home/fetched"
ready_timeout_ms=60000

cmd="${1:-}"
[ -n "$cmd" ] && shift
dir=".voltline/kafka"
port=""
nodes=""
node=""
owner=""
temp=""
secure=""
needs_value() { [ "$#" -ge 2 ] || { echo "$me: '$1' needs a value (see the comment at the top of this file)" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) needs_value "$@"; dir="$2"; shift 2 ;;
    --port) needs_value "$@"; port="$2"; shift 2 ;;
    --nodes) needs_value "$@"; nodes="$2"; shift 2 ;;
    --node) needs_value "$@"; node="$2"; shift 2 ;;
    --owner-pid) needs_value "$@"; owner="$2"; shift 2 ;;
    --temp) temp="--temp"; shift ;;
    --secure) secure=1; shift ;;
    *) echo "$me: unknown argument '$1' (see the comment at the top of this file)" >&2; exit 2 ;;
  esac
done
fail() { echo "$me: $1" >&2; exit 1; }

# --- what it needs -------------------------------------------------------------------------

install_hint="install Debian's packages: sudo apt-get install openjdk-17-jre-headless maven (or run: bash infra/ensure.sh as root)"
need_java() {
  command -v java >/dev/null 2>&1 || fail "java is not installed (Kafka $KAFKA_VERSION needs Java 17 or newer); $install_hint"
  local major
  major="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
  if [ -n "$major" ] && [ "$major" -lt 17 ]; then fail "Kafka $KAFKA_VERSION needs Java 17 or newer and the java here is $major; $install_hint"; fi
}
need_mvn() {
  command -v mvn >/dev/null 2>&1 || fail "mvn is not installed (it fetches Kafka $KAFKA_VERSION from Maven Central, once); $install_hint"
}
node_bin="$root/node_modules/.bin/node"
need_node() {
  [ -x "$node_bin" ] || fail "the readiness check runs on the project's Node 24 and $node_bin is missing: run npm ci first"
}

pom_sum() { cksum <"$here/pom.xml" | cut -d' ' -f1; }
fetched() { [ -f "$marker" ] && [ "$(cat "$marker")" = "$(pom_sum)" ]; }
fetch() {
  fetched && return 0
  need_java
  need_mvn
  mkdir -p "$home"
  # Two test files may start the first clusters at once: one fetches, the other waits for it
  # (the lock's file descriptor stays in this subshell, not in the JVMs started later).
  (
    if command -v flock >/dev/null 2>&1; then flock 9; fi
    fetched && exit 0
    echo "$me: fetching Kafka $KAFKA_VERSION from Maven Central into $libs (about 45 MB, once)" >&2
    rm -rf "$marker" "$libs" "$libs.partial"
    if ! mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$libs.partial" >"$home/fetch.log" 2>&1; then
      echo "$me: Maven could not fetch Kafka $KAFKA_VERSION (is Maven Central reachable? a proxy goes in ~/.m2/settings.xml); the end of its output ($home/fetch.log):" >&2
      tail -15 "$home/fetch.log" >&2
      exit 1
    fi
    mv "$libs.partial" "$libs"
    pom_sum >"$marker"
  ) 9>"$home/fetch.lock" || exit 1
}

# --- the cluster in D ------------------------------------------------------------------------

absolute_dir() { mkdir -p "$dir"; dir="$(cd "$dir" && pwd)"; }
have_cluster() { [ -f "$dir/cluster.env" ]; }
setting() { sed -n "s/^$1=//p" "$dir/cluster.env"; }
# Reads D's cluster.env (a flag given must agree with it), or, for a new D, checks the flags
# and writes it with a new cluster id.
load_cluster() {
  local create="$1" stored
  if have_cluster; then
    cluster_id="$(setting cluster_id)"
    stored="$(setting secure)"
    if [ -n "$secure" ] && [ "${stored:-0}" != 1 ]; then
      fail "Cannot $cmd as '--secure' must match the cluster in $dir (made without it); delete $dir for a new cluster"
    fi
    secure="${stored:-0}"
    for key in nodes port; do
      stored="$(setting "$key")"
      if [ -n "${!key}" ] && [ "${!key}" != "$stored" ]; then
        fail "Cannot $cmd as '--$key' must match the cluster in $dir (made with --$key $stored): current value is ${!key}; delete $dir for a new cluster"
      fi
      printf -v "$key" '%s' "$stored"
    done
    return 0
  fi
  [ "$create" = create ] || fail "Cannot $cmd as '--dir' must hold a cluster made by '$me start': current value is $dir (no cluster.env)"
  nodes="${nodes:-1}"
  port="${port:-9092}"
  secure="${secure:-0}"
  case "$nodes" in 1 | 3) ;; *) fail "Cannot $cmd as '--nodes' must be 1 or 3: current value is $nodes" ;; esac
  local taken=$((2 * nodes + secure * nodes))
  if ! [[ "$port" =~ ^[0-9]+$ ]] || [ "$port" -lt 1024 ] || [ "$port" -gt $((65535 - taken + 1)) ]; then
    fail "Cannot $cmd as '--port' must be a port from 1024 to $((65535 - taken + 1)) (the cluster takes $taken ports from it): current value is $port"
  fi
  # A Kafka cluster id: 16 random bytes in URL-safe base64 without padding, not starting with
  # '-' (Kafka's own Uuid.randomUuid avoids those too: they read as command-line options).
  cluster_id="-"
  while [[ "$cluster_id" == -* ]]; do cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"; done
  printf 'cluster_id=%s\nnodes=%s\nport=%s\nsecure=%s\n' "$cluster_id" "$nodes" "$port" "$secure" >"$dir/cluster.env"
}
check_node() {
  [ -n "$node" ] || fail "Cannot $cmd as '--node' must be given (1 to $nodes)"
  if ! [[ "$node" =~ ^[0-9]+$ ]] || [ "$node" -lt 1 ] || [ "$node" -gt "$nodes" ]; then
    fail "Cannot $cmd as '--node' must be a node of the cluster in $dir (1 to $nodes): current value is $node"
  fi
}
all_nodes() { seq 1 "$nodes"; }
broker_port() { echo $((port + 2 * ($1 - 1))); }
controller_port() { echo $((port + 2 * ($1 - 1) + 1)); }
secure_port() { echo $((port + 2 * nodes + $1 - 1)); }
bootstrap() {
  local n list=()
  for n in $(all_nodes); do list+=("127.0.0.1:$(broker_port "$n")"); done
  (IFS=,; echo "${list[*]}")
}

# --secure: the TLS key and certificate and the SASL password, once per D (D/tls, D/secure.env).
make_secrets() {
  [ "$secure" = 1 ] || return 0
  [ -f "$dir/secure.env" ] && return 0
  command -v keytool >/dev/null 2>&1 || fail "Cannot $cmd --secure as keytool (Java's) is not installed; $install_hint"
  local tls="$dir/tls" store_pw password n list=()
  rm -rf "$tls"
  mkdir -p "$tls"
  store_pw="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  password="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  keytool -genkeypair -alias kafka -keyalg RSA -keysize 2048 -validity 3650 -dname "CN=127.0.0.1" \
    -ext "SAN=ip:127.0.0.1,dns:localhost" -storetype PKCS12 -keystore "$tls/kafka.p12" \
    -storepass "$store_pw" -keypass "$store_pw" >"$tls/keytool.log" 2>&1 || { cat "$tls/keytool.log" >&2; fail "keytool could not make the TLS certificate"; }
  keytool -exportcert -rfc -alias kafka -keystore "$tls/kafka.p12" -storepass "$store_pw" -file "$tls/ca.pem" >>"$tls/keytool.log" 2>&1 ||
    { cat "$tls/keytool.log" >&2; fail "keytool could not export the TLS certificate"; }
  printf '%s\n' "$store_pw" >"$tls/store-password"
  for n in $(all_nodes); do list+=("127.0.0.1:$(secure_port "$n")"); done
  printf 'brokers=%s\nca_file=%s\nusername=voltline\npassword=%s\n' "$(IFS=,; echo "${list[*]}")" "$tls/ca.pem" "$password" >"$dir/secure.env.partial"
  mv "$dir/secure.env.partial" "$dir/secure.env"
}
secure_setting() { sed -n "s/^$1=//p" "$dir/secure.env"; }
# The SASL_SSL listener's lines of server.properties (none without --secure).
secure_config() {
  [ "$secure" = 1 ] || return 0
  local password store_pw
  password="$(secure_setting password)"
  store_pw="$(cat "$dir/tls/store-password")"
  printf '%s\n' \
    "listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512" \
    "listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_voltline=\"$password\";" \
    "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;" \
    "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;" \
    "ssl.keystore.type=PKCS12" \
    "ssl.keystore.location=$dir/tls/kafka.p12" \
    "ssl.keystore.password=$store_pw" \
    "ssl.key.password=$store_pw"
}

write_config() {
  local n="$1" nd="$dir/node-$1" voters=() v rf=1 min_isr=1
  for v in $(all_nodes); do voters+=("$v@127.0.0.1:$(controller_port "$v")"); done
  if [ "$nodes" = 3 ]; then rf=3; min_isr=2; fi
  local secure_listener=""
  if [ "$secure" = 1 ]; then secure_listener=",SASL_SSL://127.0.0.1:$(secure_port "$n")"; fi
  mkdir -p "$nd"
  cat >"$nd/server.properties" <<EOF
# Written by infra/kafka/kafka.sh at every start (node $n of $nodes); edit the script, not this file.
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$(IFS=,; echo "${voters[*]}")
listeners=PLAINTEXT://127.0.0.1:$(broker_port "$n"),CONTROLLER://127.0.0.1:$(controller_port "$n")$secure_listener
advertised.listeners=PLAINTEXT://127.0.0.1:$(broker_port "$n")$secure_listener
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=PLAINTEXT
$(secure_config)
log.dirs=$nd/data
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$min_isr
default.replication.factor=$rf
min.insync.replicas=$min_isr
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
offsets.topic.num.partitions=5
transaction.state.log.num.partitions=5
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000
EOF
}

# StorageTool for every node not yet formatted, in parallel (a JVM start each).
format_nodes() {
  local n jobs=() failed=0 job
  local scram=()
  if [ "$secure" = 1 ]; then
    # SCRAM credentials live in the cluster's metadata: written when a node is formatted.
    scram=(--add-scram "SCRAM-SHA-256=[name=voltline,password=$(secure_setting password)]"
      --add-scram "SCRAM-SHA-512=[name=voltline,password=$(secure_setting password)]")
  fi
  for n in "$@"; do
    [ -f "$dir/node-$n/data/meta.properties" ] && continue
    java -Xmx256m -XX:TieredStopAtLevel=1 -cp "$libs/*" kafka.tools.StorageTool format \
      -t "$cluster_id" -c "$dir/node-$n/server.properties" ${scram[@]+"${scram[@]}"} >"$dir/node-$n/format.log" 2>&1 &
    jobs+=("$!:$n")
  done
  for job in ${jobs[@]+"${jobs[@]}"}; do
    if ! wait "${job%%:*}"; then
      echo "$me: formatting node ${job#*:} failed; $dir/node-${job#*:}/format.log:" >&2
      tail -20 "$dir/node-${job#*:}/format.log" >&2
      failed=1
    fi
  done
  [ "$failed" = 0 ] || exit 1
}

cmdline() {
  if [ -r "/proc/$1/cmdline" ]; then tr '\0' ' ' <"/proc/$1/cmdline"; else ps -o args= -p "$1" 2>/dev/null || true; fi
}
# Whether a process has not finished exiting. Its command line is not enough: a killed JVM
# loses it (its memory goes first) while its listening sockets still take connections for a
# moment; they are closed once every thread is a zombie or gone.
alive() {
  local task stat
  if [ -d "/proc/$1/task" ]; then
    for task in /proc/"$1"/task/*/stat; do
      read -r stat 2>/dev/null <"$task" || continue
      stat="${stat##*) }"
      case "${stat:0:1}" in Z | X) ;; *) return 0 ;; esac
    done
    return 1
  fi
  stat="$(ps -o stat= -p "$1" 2>/dev/null || true)"
  case "${stat:0:1}" in "" | Z | X) return 1 ;; *) return 0 ;; esac
}
# A node's JVM PID when it runs (its PID file alone could name an exited or reused PID).
pid_of() {
  local file="$dir/node-$1/kafka.pid" pid line
  [ -f "$file" ] || return 1
  pid="$(cat "$file")"
  line="$(cmdline "$pid")"
  [[ "$line" == *"kafka.Kafka $dir/node-$1/server.properties"* ]] || return 1
  echo "$pid"
}
running() { pid_of "$1" >/dev/null; }
forget_exited() { local n; for n in $(all_nodes); do running "$n" || rm -f "$dir/node-$n/kafka.pid"; done; }

jvm_opts=(
  -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
  -Dorg.slf4j.simpleLogger.defaultLogLevel="${VOLTLINE_KAFKA_LOG_LEVEL:-warn}"
  -Dorg.slf4j.simpleLogger.log.kafka.server.KafkaRaftServer=info
  -Dorg.slf4j.simpleLogger.showDateTime=true "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss.SSS"
)
# Before anything starts: a port some other program listens on fails here, not in a node's log.
check_ports() {
  local n p
  for n in "$@"; do
    for p in "$(broker_port "$n")" "$(controller_port "$n")" $([ "$secure" = 1 ] && secure_port "$n"); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        fail "Cannot $cmd as port $p (node $n) on 127.0.0.1 is taken by another program; choose another --port (with a new --dir)"
      fi
    done
  done
}
launch() {
  local n="$1" nd="$dir/node-$1"
  [ -f "$nd/kafka.log" ] && mv -f "$nd/kafka.log" "$nd/kafka.log.1"
  nohup java "${jvm_opts[@]}" -cp "$libs/*" kafka.Kafka "$nd/server.properties" </dev/null >"$nd/kafka.log" 2>&1 &
  echo $! >"$nd/kafka.pid"
}

# Waits until every node with a PID file answers and lists them all as brokers; when not,
# prints why and the end of their logs, stops the nodes this call started ($@) and fails.
wait_ready() {
  local n pid checks=()
  for n in $(all_nodes); do
    [ -f "$dir/node-$n/kafka.pid" ] || continue
    pid="$(cat "$dir/node-$n/kafka.pid")"
    checks+=("$n=127.0.0.1:$(broker_port "$n"):$pid")
  done
  # kafkajs 2.2.4 sets a negative timer when a request completes with nothing queued
  # (tulios/kafkajs#1751, requestQueue scheduleCheckPendingRequests); Node 24 warns about it
  # on stderr. Harmless here; silenced for this short-lived check only.
  if "$node_bin" --disable-warning=TimeoutNegativeWarning "$here/ready.ts" --timeout-ms "$ready_timeout_ms" \
    --cluster-id "$cluster_id" "${checks[@]}" 2>"$dir/ready.err"; then
    rm -f "$dir/ready.err"
    return 0
  fi
  echo "$me: Kafka in $dir did not become ready: $(tail -1 "$dir/ready.err")" >&2
  for n in $(all_nodes); do
    [ -f "$dir/node-$n/kafka.log" ] || continue
    echo "--- the end of $dir/node-$n/kafka.log:" >&2
    tail -15 "$dir/node-$n/kafka.log" >&2
  done
  stop_nodes KILL "$@"
  exit 1
}

# Stops nodes: TERM (Kafka's controlled shutdown) then KILL after 20 s, or KILL at once.
stop_nodes() {
  local signal="$1" n pid pids=() left
  shift
  for n in "$@"; do
    if pid="$(pid_of "$n")"; then
      kill "-$signal" "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for _ in $(seq 1 200); do
    left=0
    for pid in ${pids[@]+"${pids[@]}"}; do if alive "$pid"; then left=1; fi; done
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  for pid in ${pids[@]+"${pids[@]}"}; do if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi; done
  # After SIGKILL too, wait until the ports are closed: the caller may connect right away.
  for pid in ${pids[@]+"${pids[@]}"}; do
    for _ in $(seq 1 50); do if alive "$pid"; then sleep 0.1; else break; fi; done
  done
  for n in "$@"; do rm -f "$dir/node-$n/kafka.pid"; done
}

# With --owner-pid: a watcher (this script's `watch`) kills the cluster when the owner ends.
start_watcher() {
  [ -n "$owner" ] || return 0
  [[ "$owner" =~ ^[0-9]+$ ]] || fail "Cannot $cmd as '--owner-pid' must be a process id: current value is $owner"
  local pid
  pid="$(cat "$dir/watcher.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && [[ "$(cmdline "$pid")" == *"kafka.sh watch --dir $dir --owner-pid $owner "* ]]; then return 0; fi
  # shellcheck disable=SC2086 # $temp is empty or one word
  nohup bash "$here/kafka.sh" watch --dir "$dir" --owner-pid "$owner" $temp </dev/null >/dev/null 2>&1 &
  echo $! >"$dir/watcher.pid"
}

say_running() {
  local n pids=()
  for n in $(all_nodes); do pids+=("$(pid_of "$n" || echo -)"); done
  echo "Kafka $KAFKA_VERSION (KRaft, $nodes node$([ "$nodes" = 1 ] || echo s)) on $(bootstrap) (data in $dir, PIDs ${pids[*]})"
  echo "  voltline up --kafka $(bootstrap)"
  if [ "$secure" = 1 ]; then
    echo "  with TLS and SASL: VOLTLINE_KAFKA_PASSWORD=\$(sed -n 's/^password=//p' $dir/secure.env) voltline up --kafka $(secure_setting brokers) --kafka-tls --kafka-ca $(secure_setting ca_file) --kafka-sasl scram-sha-256 --kafka-username voltline"
  fi
}

# Everything a start needs before a JVM runs: the jars, the tools, D's cluster and configs.
prepare() {
  [ -z "$node" ] || [ "$cmd" = start-node ] || fail "Cannot $cmd as '--node' is for stop, kill and start-node: current value is $node"
  [ "$1" = create ] || [ -f "$dir/cluster.env" ] || fail "Cannot $cmd as '--dir' must hold a cluster made by '$me start': current value is $dir (no cluster.env)"
  fetch
  need_java
  absolute_dir
  load_cluster "$1"
  make_secrets
  local n
  for n in $(all_nodes); do write_config "$n"; done
  tr ',' '\n' <<<"$(bootstrap)" >"$dir/brokers"
  forget_exited
}

case "$cmd" in
  fetch)
    fetch
    echo "Kafka $KAFKA_VERSION jars in $libs"
    ;;
  cached)
    fetched || fail "the Kafka $KAFKA_VERSION jars are not in $libs yet: bash infra/kafka/kafka.sh fetch (Maven Central, once)"
    ;;
  start)
    prepare create
    need_node
    stopped=()
    for n in $(all_nodes); do running "$n" || stopped+=("$n"); done
    if [ "${#stopped[@]}" -eq 0 ]; then
      echo "$me: already running from $dir" >&2
      say_running
      exit 0
    fi
    check_ports "${stopped[@]}"
    format_nodes "${stopped[@]}"
    start_watcher
    for n in "${stopped[@]}"; do launch "$n"; done
    wait_ready "${stopped[@]}"
    say_running
    ;;
  start-node)
    prepare existing
    check_node
    need_node
    if running "$node"; then
      echo "$me: node $node already runs from $dir (PID $(pid_of "$node"))" >&2
      exit 0
    fi
    check_ports "$node"
    format_nodes "$node"
    start_watcher
    launch "$node"
    wait_ready "$node"
    echo "Kafka node $node on 127.0.0.1:$(broker_port "$node") again (PID $(pid_of "$node"))"
    ;;
  stop | kill)
    if [ ! -f "$dir/cluster.env" ]; then
      echo "$me: no Kafka cluster in $dir (no cluster.env); nothing to stop" >&2
      exit 0
    fi
    absolute_dir
    load_cluster existing
    if [ -n "$node" ]; then check_node; targets=("$node"); else mapfile -t targets < <(all_nodes); fi
    if [ "$cmd" = stop ]; then stop_nodes TERM "${targets[@]}"; else stop_nodes KILL "${targets[@]}"; fi
    what="$([ "$cmd" = stop ] && echo stopped || echo killed)"
    if [ -n "$node" ]; then echo "Kafka node $node in $dir $what (data kept)"; else echo "Kafka in $dir $what ($nodes node(s); data kept)"; fi
    ;;
  run)
    [ -z "$nodes" ] || [ "$nodes" = 1 ] || fail "Cannot run as 'run' is one node in the foreground: current value of '--nodes' is $nodes; use start"
    prepare create
    [ "$nodes" = 1 ] || fail "Cannot run as 'run' is one node in the foreground and the cluster in $dir has $nodes: use start"
    running 1 && fail "Kafka already runs from $dir (PID $(pid_of 1)); stop it first"
    check_ports 1
    format_nodes 1
    echo "Kafka $KAFKA_VERSION (KRaft, 1 node) on $(bootstrap), data in $dir; Ctrl-C stops it" >&2
    echo "  voltline up --kafka $(bootstrap)" >&2
    echo $$ >"$dir/node-1/kafka.pid"
    exec java "${jvm_opts[@]}" -cp "$libs/*" kafka.Kafka "$dir/node-1/server.properties"
    ;;
  watch)
    # Internal (start --owner-pid): waits for the owner to end, then kills the cluster (and
    # with --temp removes D, which holds a cluster.env: the script's own folder).
    while [ -f "$dir/cluster.env" ] && kill -0 "$owner" 2>/dev/null; do sleep 1; done
    [ -f "$dir/cluster.env" ] || exit 0
    load_cluster existing
    mapfile -t targets < <(all_nodes)
    stop_nodes KILL "${targets[@]}"
    if [ -n "$temp" ]; then rm -rf -- "$dir"; fi
    ;;
  *)
    echo "usage: $me fetch | cached | start|run [--dir D] [--port P] [--nodes 1|3] [--secure] | stop|kill [--dir D] [--node N] | start-node [--dir D] --node N" >&2
    exit 2
    ;;
esac
