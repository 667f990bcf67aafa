# Shared settings for the dev services. Every value can be overridden from the environment.
# Sourced by dev/up, dev/down, dev/status and dev/install; never executed on its own.
set -euo pipefail

SNAPQ_ROOT=${SNAPQ_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
SNAPQ_STATE_DIR=${SNAPQ_STATE_DIR:-$SNAPQ_ROOT/.state}

# Ceph
CEPH_DIR=${CEPH_DIR:-$SNAPQ_STATE_DIR/ceph}
CEPH_CONF=${CEPH_CONF:-$CEPH_DIR/ceph.conf}
CEPH_MON_PORT_V2=${CEPH_MON_PORT_V2:-3300}
CEPH_MON_PORT_V1=${CEPH_MON_PORT_V1:-6789}
CEPH_OSD_SIZE_GIB=${CEPH_OSD_SIZE_GIB:-40}
CEPH_NOVA_POOL=${CEPH_NOVA_POOL:-vms}
CEPH_GLANCE_POOL=${CEPH_GLANCE_POOL:-images}

# RabbitMQ
RABBIT_DIR=${RABBIT_DIR:-$SNAPQ_STATE_DIR/rabbitmq}
RABBIT_PORT=${RABBIT_PORT:-5672}
RABBIT_MGMT_PORT=${RABBIT_MGMT_PORT:-15672}
RABBIT_PROM_PORT=${RABBIT_PROM_PORT:-15692}
RABBIT_DIST_PORT=${RABBIT_DIST_PORT:-25672}
RABBIT_EPMD_PORT=${RABBIT_EPMD_PORT:-4369}
RABBIT_USER=${RABBIT_USER:-snapq}
RABBIT_PASSWORD=${RABBIT_PASSWORD:-snapq-dev}
RABBIT_VHOST=${RABBIT_VHOST:-/}

# PostgreSQL (Glance's database)
PG_DIR=${PG_DIR:-$SNAPQ_STATE_DIR/postgres}
PG_PORT=${PG_PORT:-5433}

# Glance
GLANCE_DIR=${GLANCE_DIR:-$SNAPQ_STATE_DIR/glance}
GLANCE_VENV=${GLANCE_VENV:-$SNAPQ_STATE_DIR/glance-venv}
GLANCE_PORT=${GLANCE_PORT:-9292}
GLANCE_VERSION=${GLANCE_VERSION:-33.0.0}
GLANCE_SHOW_MULTIPLE_LOCATIONS=${GLANCE_SHOW_MULTIPLE_LOCATIONS:-False}
GLANCE_DO_SECURE_HASH=${GLANCE_DO_SECURE_HASH:-True}

# Keystone (in Glance's venv) and a second Glance that checks Keystone tokens
KEYSTONE_DIR=${KEYSTONE_DIR:-$SNAPQ_STATE_DIR/keystone}
KEYSTONE_VERSION=${KEYSTONE_VERSION:-30.0.0}
KEYSTONE_PORT=${KEYSTONE_PORT:-5000}
# Short on purpose: snapq's token renewal runs in every test, and an expired token is really
# refused (allow_expired_window = 0).
KEYSTONE_TOKEN_EXPIRATION=${KEYSTONE_TOKEN_EXPIRATION:-60}
KEYSTONE_ADMIN_PASSWORD=${KEYSTONE_ADMIN_PASSWORD:-snapq-dev-admin}
KEYSTONE_SNAPQ_PASSWORD=${KEYSTONE_SNAPQ_PASSWORD:-snapq-dev-service}
KEYSTONE_GLANCE_PASSWORD=${KEYSTONE_GLANCE_PASSWORD:-snapq-dev-glance}
KEYSTONE_DEMO_PASSWORD=${KEYSTONE_DEMO_PASSWORD:-snapq-dev-demo}
KEYSTONE_APP_CRED_SECRET=${KEYSTONE_APP_CRED_SECRET:-snapq-dev-app-cred}
GLANCE_KEYSTONE_PORT=${GLANCE_KEYSTONE_PORT:-9295}

# TLS endpoints beside the plain ones, with a dev CA (dev/tls.sh)
KEYSTONE_TLS_PORT=${KEYSTONE_TLS_PORT:-5001}
GLANCE_KEYSTONE_TLS_PORT=${GLANCE_KEYSTONE_TLS_PORT:-9296}
RABBIT_TLS_PORT=${RABBIT_TLS_PORT:-5671}

log() { printf '[dev] %s\n' "$*" >&2; }
die() { printf '[dev] ERROR: %s\n' "$*" >&2; exit 1; }

# wait_until SECONDS DESCRIPTION LOGFILE -- command...
wait_until() {
  local limit=$1 what=$2 logfile=$3; shift 4
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      printf '[dev] ERROR: %s did not answer within %ss; see its log: %s\n' "$what" "$limit" "$logfile" >&2
      [ -f "$logfile" ] && tail -n 20 "$logfile" >&2
      return 1
    fi
    sleep 0.3
  done
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pidfile PIDFILE NAME: TERM, wait up to 20 s, then KILL.
stop_pidfile() {
  local pidfile=$1 name=$2 pid
  pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then log "$name did not stop, killing"; kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$pidfile"
}
