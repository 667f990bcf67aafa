# PostgreSQL for Glance's database (sqlite answers "database is locked" when Glance's
# requests and background tasks overlap, and Glance then fails location imports silently).
# Sourced by dev/up.

PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}

pg_cli() { runuser -u postgres -- "$PG_BIN/$1" "${@:2}"; }

postgres_up() {
  [ -x "$PG_BIN/initdb" ] || die "postgres: server binaries not found; run dev/install"
  if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    log "postgres: creating a cluster in $PG_DIR"
    mkdir -p "$PG_DIR/data" "$PG_DIR/run"
    chown -R postgres:postgres "$PG_DIR"
    chmod 700 "$PG_DIR/data"
    pg_cli initdb -D "$PG_DIR/data" -A trust -U postgres >"$PG_DIR/initdb.log" 2>&1 \
      || die "postgres: initdb failed; see $PG_DIR/initdb.log"
  fi
  if ! pg_cli pg_ctl -D "$PG_DIR/data" status >/dev/null 2>&1; then
    pg_cli pg_ctl -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -t 30 \
      -o "-p $PG_PORT -k $PG_DIR/run -c listen_addresses=127.0.0.1" start >/dev/null \
      || { tail -n 20 "$PG_DIR/postgres.log" >&2; die "postgres: did not start; see $PG_DIR/postgres.log"; }
  fi
  wait_until 30 "postgres" "$PG_DIR/postgres.log" -- pg_cli pg_isready -h 127.0.0.1 -p "$PG_PORT"
  log "postgres: up (127.0.0.1:$PG_PORT)"
}

# postgres_database NAME: creates the database and a user of the same name (trust auth on
# loopback, dev only) if missing.
postgres_database() {
  local name=$1
  if ! pg_cli psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "select 1 from pg_database where datname='$name'" | grep -q 1; then
    pg_cli psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "create user \"$name\"" >/dev/null 2>&1 || true
    pg_cli psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "create database \"$name\" owner \"$name\"" >/dev/null
  fi
}

postgres_down() {
  if [ -f "$PG_DIR/data/PG_VERSION" ] && pg_cli pg_ctl -D "$PG_DIR/data" status >/dev/null 2>&1; then
    pg_cli pg_ctl -D "$PG_DIR/data" -m fast -w stop >/dev/null
  fi
}

postgres_status() {
  if [ -f "$PG_DIR/data/PG_VERSION" ] && pg_cli pg_ctl -D "$PG_DIR/data" status >/dev/null 2>&1; then
    echo "postgres: running (127.0.0.1:$PG_PORT)"
  else
    echo "postgres: stopped"; return 1
  fi
}
