#!/usr/bin/env bash
# VictoriaMetrics for Voltline's external store (`voltline up --store influx://…`), from
# Debian's `victoria-metrics` package (infra/ensure.sh installs it), on loopback only.
#
#   infra/victoria-metrics.sh start [--dir D] [--port P] [--retention R]   # background; waits until ready
#   infra/victoria-metrics.sh stop  [--dir D]                               # stops it by its PID file
#   infra/victoria-metrics.sh run   [--dir D] [--port P] [--retention R]   # foreground (Ctrl-C stops)
#
# Defaults: --dir .voltline/victoria-metrics, --port 8428, --retention 100y. Then:
#   voltline up --store 'influx://127.0.0.1:8428?org=voltline&bucket=telemetry'
#
# Two flags matter to Voltline, and a VictoriaMetrics you run yourself needs them too:
#   -dedup.minScrapeInterval=1ms  a point written twice (a replay after a crash) is kept once
#   -search.latencyOffset=0s      points are queryable at once (the default, 1m in 1.79, hides the last minute)
set -euo pipefail

cmd="${1:-}"
[ -n "$cmd" ] && shift
dir=".voltline/victoria-metrics"
port=8428
retention="100y"
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --retention) retention="$2"; shift 2 ;;
    *) echo "infra/victoria-metrics.sh: unknown argument '$1' (see the comment at the top of this file)" >&2; exit 2 ;;
  esac
done

binary="$(command -v victoria-metrics || true)"
[ -z "$binary" ] && [ -x /usr/bin/victoria-metrics ] && binary=/usr/bin/victoria-metrics
need_binary() {
  if [ -z "$binary" ]; then
    echo "infra/victoria-metrics.sh: victoria-metrics is not installed; install Debian's package: sudo apt-get install victoria-metrics (or run: bash infra/ensure.sh as root)" >&2
    exit 1
  fi
}

pidfile="$dir/victoria-metrics.pid"
# Whether it still runs: an exited process stays a zombie until its parent reaps it, and
# once the start's shell is gone that parent is PID 1, which may take a second or two
# (1.5-1.9 s for every stop here), so `kill -0` alone would wait that long.
running() {
  local stat
  stat="$(ps -o stat= -p "$1" 2>/dev/null || true)"
  case "${stat:0:1}" in "" | Z | X) return 1 ;; *) return 0 ;; esac
}
args() {
  echo "-storageDataPath=$dir/data" "-httpListenAddr=127.0.0.1:$port" "-retentionPeriod=$retention" \
    "-dedup.minScrapeInterval=1ms" "-search.latencyOffset=0s" "-loggerLevel=WARN"
}

case "$cmd" in
  start)
    need_binary
    mkdir -p "$dir"
    if [ -f "$pidfile" ] && running "$(cat "$pidfile")"; then
      echo "infra/victoria-metrics.sh: already running (PID $(cat "$pidfile")) from $dir" >&2
      exit 0
    fi
    # shellcheck disable=SC2046
    nohup "$binary" $(args) >"$dir/victoria-metrics.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 100); do
      if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
        echo "VictoriaMetrics $(dpkg-query -W -f '${Version}' victoria-metrics 2>/dev/null || true) on http://127.0.0.1:$port (data in $dir/data, PID $(cat "$pidfile"))"
        echo "  voltline up --store 'influx://127.0.0.1:$port?org=voltline&bucket=telemetry'"
        exit 0
      fi
      if ! running "$(cat "$pidfile")"; then
        echo "infra/victoria-metrics.sh: it exited at start; its log ($dir/victoria-metrics.log):" >&2
        tail -20 "$dir/victoria-metrics.log" >&2
        rm -f "$pidfile"
        exit 1
      fi
      sleep 0.1
    done
    echo "infra/victoria-metrics.sh: not ready on port $port after 10 s; see $dir/victoria-metrics.log" >&2
    exit 1
    ;;
  stop)
    if [ ! -f "$pidfile" ]; then
      echo "infra/victoria-metrics.sh: not running from $dir (no $pidfile)" >&2
      exit 0
    fi
    pid="$(cat "$pidfile")"
    if running "$pid"; then
      kill -TERM "$pid"
      for _ in $(seq 1 100); do running "$pid" || break; sleep 0.1; done
      if running "$pid"; then kill -KILL "$pid"; fi
    fi
    rm -f "$pidfile"
    echo "VictoriaMetrics stopped (data kept in $dir/data)"
    ;;
  run)
    need_binary
    mkdir -p "$dir"
    # shellcheck disable=SC2046
    exec "$binary" $(args)
    ;;
  *)
    echo "usage: infra/victoria-metrics.sh start|stop|run [--dir D] [--port P] [--retention R]" >&2
    exit 2
    ;;
esac
