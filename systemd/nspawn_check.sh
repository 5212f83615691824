#!/usr/bin/env bash
# End-to-end check of systemd/adaptive-scheduler.service under a real systemd, in a booted
# systemd-nspawn container (Debian 12). Not part of the pytest suite: it takes a few minutes.
#   1. the unit starts and becomes active only on READY=1 (Type=notify), with a STATUS line;
#      a job enqueued through the embedded Redis runs;
#   2. a hung main loop (SIGSTOP) misses its watchdog pings: systemd aborts it and restarts it,
#      and the restarted daemon serves again;
#   3. `systemctl stop` ends cleanly, well inside TimeoutStopSec.
# It tests a committed revision (git archive), not the working tree.
#
# Usage, as root: systemd/nspawn_check.sh [REV]        (REV defaults to HEAD)
# Needs: systemd-nspawn (package systemd-container), debootstrap, and this checkout's .venv (./dev).
# The root file system is made once with debootstrap (a few minutes) in $ASCHED_NSPAWN_ROOT
# (default /tmp/asched-nspawn/rootfs) and reused. Notes: MemoryMax= is not enforced in the container.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
REV=${1:-HEAD}
ROOT=${ASCHED_NSPAWN_ROOT:-/tmp/asched-nspawn/rootfs}
WORK=$(dirname "$ROOT")
fail() { echo "nspawn_check: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root"
command -v systemd-nspawn >/dev/null || fail "no systemd-nspawn: apt-get install systemd-container"
[ -x "$REPO/.venv/bin/pip" ] || fail "no $REPO/.venv: run ./dev first"
git -C "$REPO" cat-file -e "$REV:scheduler/notify.py" 2>/dev/null \
  || fail "$REV has no scheduler/notify.py: the daemon does not send READY=1, Type=notify would time out"

if [ ! -x "$ROOT/usr/bin/python3" ]; then
  command -v debootstrap >/dev/null || fail "no debootstrap: apt-get install debootstrap"
  echo "nspawn_check: debootstrap into $ROOT (a few minutes)" >&2
  mkdir -p "$WORK"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,python3,python3-venv,redis-server,procps \
    bookworm "$ROOT" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
    || fail "debootstrap failed, see $WORK/debootstrap.log"
fi

# --- the project, installed as systemd/README.md says ---------------------------------------------
APP=$ROOT/opt/adaptive-scheduler
rm -rf "$APP" "$ROOT/var/tmp/asched-wheels" "$ROOT/var/lib/private/adaptive-scheduler" "$ROOT/var/lib/adaptive-scheduler"
mkdir -p "$APP" "$ROOT/var/tmp/asched-wheels"
git -C "$REPO" archive "$REV" | tar -x -C "$APP"
# the dependencies' wheels, fetched here with this host's pip configuration; the container's pip takes
# them and gets from PyPI (through the host's network) what its own Python needs beyond them
# (markers are evaluated for the host's Python here: Debian's 3.11.2 also needs async-timeout for redis)
WHEELS=$ROOT/var/tmp/asched-wheels
PIP=("$REPO/.venv/bin/pip" -q --disable-pip-version-check)
"${PIP[@]}" wheel --no-deps -w "$WHEELS" "$APP" || fail "building the project's wheel failed"
"${PIP[@]}" download -d "$WHEELS" --only-binary=:all: "$WHEELS"/adaptive_scheduler-*.whl 2>&1 \
  | grep -v 'is ignored: it is neither' || true
install -m 644 "$APP/systemd/adaptive-scheduler.service" "$ROOT/etc/systemd/system/"
install -d -m 755 "$ROOT/etc/adaptive-scheduler"
install -m 600 "$APP/systemd/env.example" "$ROOT/etc/adaptive-scheduler/env"
echo "ASCHED_ALLOWED_MODULES='[\"adaptive_scheduler.tasks.demo\"]'" >>"$ROOT/etc/adaptive-scheduler/env"  # what the check enqueues
rm -f "$ROOT/etc/systemd/system/multi-user.target.wants/redis-server.service"  # the daemon starts its own
ln -sf /etc/systemd/system/adaptive-scheduler.service \
  "$ROOT/etc/systemd/system/multi-user.target.wants/adaptive-scheduler.service"
# the container's pip trusts what the host's does (a TLS-inspecting proxy's CA, say) and uses its proxy
CA=${PIP_CERT:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}
PIP_ENV=()
[ -f "$CA" ] && PIP_ENV+=(--bind-ro="$CA:/var/tmp/asched-host-ca.pem" --setenv=PIP_CERT=/var/tmp/asched-host-ca.pem)
for var in HTTPS_PROXY https_proxy HTTP_PROXY http_proxy NO_PROXY no_proxy; do
  [ -n "${!var:-}" ] && PIP_ENV+=(--setenv="$var=${!var}")
done
systemd-nspawn -q --register=no --keep-unit -D "$ROOT" "${PIP_ENV[@]}" /bin/sh -c '
  python3 -m venv /opt/adaptive-scheduler/.venv &&
  /opt/adaptive-scheduler/.venv/bin/pip install -q --disable-pip-version-check --retries 1 --timeout 20 \
    --find-links /var/tmp/asched-wheels -e /opt/adaptive-scheduler' \
  || fail "installing into the container failed"

# --- the check, run inside the booted container by a oneshot unit; it powers the container off ----
cat >"$ROOT/usr/local/sbin/asched-check" <<'EOF'
#!/bin/bash
set -u
U=adaptive-scheduler
VENV=/opt/adaptive-scheduler/.venv
export ASCHED_STATE_DIR=/var/lib/adaptive-scheduler
export ASCHED_ALLOWED_MODULES='["adaptive_scheduler.tasks.demo"]'
prop() { systemctl show -P "$1" $U; }
say() { echo "[$(printf '%6.1f' "$(cut -d' ' -f1 /proc/uptime)") s] $*"; }
verdict=PASS
check() { if eval "$2"; then say "ok:   $1"; else say "FAIL: $1"; verdict=FAIL; fi; }
wait_for() { local i; for ((i = 0; i < $1 * 10; i++)); do eval "$2" && return 0; sleep 0.1; done; return 1; }
# enqueue with the CLI (plain RQ underneath), then wait for the job's result through RQ
run_job() {
  local id
  id=$($VENV/bin/adaptive-scheduler enqueue add "$1" --priority "$2" 2>&1) || { say "enqueue: $id"; return 1; }
  $VENV/bin/python - "$id" <<'PY'
import sys, time
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer
r = Redis.from_url("unix:///var/lib/adaptive-scheduler/redis.sock")
for _ in range(100):
    job = Job.fetch(sys.argv[1], connection=r, serializer=JSONSerializer)
    if job.get_status() == "finished":
        print(f"    job {job.id}: finished, result {job.return_value()}")
        sys.exit(0)
    time.sleep(0.1)
print(f"    job {sys.argv[1]}: {job.get_status()} after 10 s")
sys.exit(1)
PY
}

wait_for 90 '[ "$(prop ActiveState)" != activating ]'
say "after boot: $(systemctl show -p ActiveState -p SubState -p MainPID -p WatchdogUSec -p TimeoutStopUSec $U | tr '\n' ' ')"
say "STATUS: $(prop StatusText)"
check "active, so READY=1 was received (Type=notify)" '[ "$(prop ActiveState)" = active ]'
check "STATUS line set by the daemon" '[ -n "$(prop StatusText)" ]'
check "a job enqueued into the embedded Redis runs" 'run_job "[2, 3]" P1'

pid=$(prop MainPID)
[ "$pid" -gt 1 ] || { say "no main process to hang: VERDICT: FAIL"; journalctl -b -u $U --no-pager | tail -40; exit 1; }
say "SIGSTOP to the daemon (pid $pid): its main loop hangs; WatchdogSec=$(prop WatchdogUSec)"
kill -STOP "$pid"
check "the watchdog restarted the daemon" \
  'wait_for 150 "[ \"\$(prop NRestarts)\" -ge 1 ] && [ \"\$(prop ActiveState)\" = active ]"'
say "after the restart: $(systemctl show -p ActiveState -p MainPID -p NRestarts -p StatusText $U | tr '\n' ' ')"
check "a new main process" '[ "$(prop MainPID)" != "$pid" ]'
check "the restarted daemon runs jobs" 'run_job "[4, 5]" P0'

t0=$(date +%s%N)
systemctl stop $U
say "systemctl stop took $(( ($(date +%s%N) - t0) / 1000000 )) ms (TimeoutStopSec=$(prop TimeoutStopUSec))"
check "stopped cleanly (Result=success)" '[ "$(prop Result)" = success ]'

say "--- journal of $U ---"
journalctl -b -u $U --no-pager -o short-monotonic | cut -c1-240
say "VERDICT: $verdict"
EOF
chmod 755 "$ROOT/usr/local/sbin/asched-check"
cat >"$ROOT/etc/systemd/system/asched-check.service" <<'EOF'
[Unit]
Description=adaptive-scheduler end-to-end check
After=adaptive-scheduler.service
[Service]
Type=oneshot
TimeoutStartSec=400
ExecStart=/bin/sh -c '/usr/local/sbin/asched-check >/root/asched-check.log 2>&1'
ExecStopPost=/bin/systemctl poweroff --no-block
[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/asched-check.service "$ROOT/etc/systemd/system/multi-user.target.wants/"
rm -rf "$ROOT/root/asched-check.log" "$ROOT"/var/log/journal/*

echo "nspawn_check: booting the container (check log: $ROOT/root/asched-check.log)" >&2
timeout 600 systemd-nspawn -q --register=no --keep-unit -D "$ROOT" --private-network -b --console=pipe \
  </dev/null >"$WORK/boot.log" 2>&1 || echo "nspawn_check: container exited with $? (boot log: $WORK/boot.log)" >&2
[ -s "$ROOT/root/asched-check.log" ] || fail "no check log: see $WORK/boot.log"
cat "$ROOT/root/asched-check.log"
grep -q "VERDICT: PASS" "$ROOT/root/asched-check.log"
