# Sourced by the benchmark scripts that start servers one after the other: a scratch folder
# ($WORK, removed on exit), the server in $SERVER_PID (stopped on exit), a free port, and a
# wait until /health answers 200. Needs $PYTHON.
WORK="$(mktemp -d)"
SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap 'stop_server; rm -rf "$WORK"' EXIT

wait_healthy() {  # PORT LOG
    local script
    script="$(basename "$0")"
    for _ in $(seq 1 600); do
        if "$PYTHON" - "$1" <<'PY' 2>/dev/null; then return 0; fi
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=2)
c.request("GET", "/health")
sys.exit(0 if c.getresponse().status == 200 else 1)
PY
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "$script: the server exited during start-up:" >&2; tail -20 "$2" >&2; exit 1; }
        sleep 0.5
    done
    echo "$script: the server did not become healthy" >&2; tail -20 "$2" >&2; exit 1
}
free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
