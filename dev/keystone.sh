# Keystone under uWSGI (fernet tokens, its database on the dev PostgreSQL), bootstrapped with a
# `service` project, snapq's service user, a `glance` user for keystonemiddleware, a demo
# project and user, an application credential for snapq and the image endpoint of the
# Keystone-checking Glance. Sourced by dev/up (after dev/postgres.sh).

KEYSTONE_DB=${KEYSTONE_DB:-keystone}

keystone_write_conf() {
  mkdir -p "$KEYSTONE_DIR"/{etc,log,run}
  install -d -m 700 "$KEYSTONE_DIR/fernet-keys" "$KEYSTONE_DIR/credential-keys"
  cat > "$KEYSTONE_DIR/etc/keystone.conf" <<CONF
[DEFAULT]
log_file = $KEYSTONE_DIR/log/keystone.log

[database]
connection = postgresql+psycopg2://$KEYSTONE_DB@127.0.0.1:$PG_PORT/$KEYSTONE_DB

[token]
provider = fernet
expiration = $KEYSTONE_TOKEN_EXPIRATION
allow_expired_window = 0

[identity]
# Dev only: bcrypt's default 12 rounds make each password token take ~0.6 s.
password_hash_rounds = 4

[fernet_tokens]
key_repository = $KEYSTONE_DIR/fernet-keys

[credential]
key_repository = $KEYSTONE_DIR/credential-keys

[cache]
enabled = false
CONF
  cat > "$KEYSTONE_DIR/etc/uwsgi.ini" <<CONF
[uwsgi]
http-socket = 127.0.0.1:$KEYSTONE_PORT
https-socket = 127.0.0.1:$KEYSTONE_TLS_PORT,$TLS_DIR/server.crt,$TLS_DIR/server.key
module = keystone.wsgi.api:application
virtualenv = $GLANCE_VENV
env = OS_KEYSTONE_CONFIG_DIR=$KEYSTONE_DIR/etc
master = true
# Glance validates every new token here while the tests authenticate in parallel: one process
# of four threads refused connections ("Unable to establish connection" in Glance's log).
processes = 2
threads = 8
listen = 256
# uWSGI's http-socket closes each connection after one response without saying so, and
# keystonemiddleware's pooled connection then fails the next validation ("Connection reset by
# peer"), which Glance turns into a 401. Saying so makes clients open a new one.
add-header = Connection: close
lazy-apps = true
enable-threads = true
buffer-size = 65535
die-on-term = true
pidfile = $KEYSTONE_DIR/run/uwsgi.pid
logto = $KEYSTONE_DIR/log/uwsgi.log
CONF
}

keystone_url() { echo "http://127.0.0.1:$KEYSTONE_PORT/v3"; }

keystone_answers() { curl -sf "$(keystone_url)" >/dev/null; }

keystone_manage() {
  "$GLANCE_VENV/bin/keystone-manage" --config-file "$KEYSTONE_DIR/etc/keystone.conf" "$@" \
    >>"$KEYSTONE_DIR/log/manage.log" 2>&1 || die "keystone: keystone-manage $1 failed; see $KEYSTONE_DIR/log/manage.log"
}

keystone_up() {
  tls_certs
  "$GLANCE_VENV/bin/python" -c 'import keystone' 2>/dev/null || die "keystone: not installed in $GLANCE_VENV; run dev/install"
  keystone_write_conf
  postgres_up
  postgres_database "$KEYSTONE_DB"
  if [ ! -f "$KEYSTONE_DIR/bootstrapped" ]; then
    keystone_manage db_sync
    keystone_manage fernet_setup --keystone-user root --keystone-group root
    keystone_manage credential_setup --keystone-user root --keystone-group root
    keystone_manage bootstrap --bootstrap-password "$KEYSTONE_ADMIN_PASSWORD" \
      --bootstrap-admin-url "$(keystone_url)/" --bootstrap-internal-url "$(keystone_url)/" \
      --bootstrap-public-url "$(keystone_url)/" --bootstrap-region-id RegionOne
    touch "$KEYSTONE_DIR/bootstrapped"
  fi
  if ! pid_alive "$KEYSTONE_DIR/run/uwsgi.pid"; then
    (cd "$KEYSTONE_DIR" && setsid -f "$GLANCE_VENV/bin/uwsgi" --ini "$KEYSTONE_DIR/etc/uwsgi.ini" \
      >"$KEYSTONE_DIR/log/stdout.log" 2>&1 </dev/null)
  fi
  wait_until 60 "keystone" "$KEYSTONE_DIR/log/uwsgi.log" -- keystone_answers
  KEYSTONE_URL=$(keystone_url) GLANCE_URL=http://127.0.0.1:$GLANCE_KEYSTONE_PORT \
    ADMIN_PASSWORD=$KEYSTONE_ADMIN_PASSWORD SNAPQ_PASSWORD=$KEYSTONE_SNAPQ_PASSWORD \
    GLANCE_PASSWORD=$KEYSTONE_GLANCE_PASSWORD DEMO_PASSWORD=$KEYSTONE_DEMO_PASSWORD \
    APP_CRED_SECRET=$KEYSTONE_APP_CRED_SECRET OUT=$KEYSTONE_DIR/accounts.env \
    "$GLANCE_VENV/bin/python" "$SNAPQ_ROOT/dev/keystone_accounts.py" >>"$KEYSTONE_DIR/log/accounts.log" 2>&1 \
    || { tail -n 20 "$KEYSTONE_DIR/log/accounts.log" >&2; die "keystone: setting up the accounts failed"; }
  log "keystone: up ($(keystone_url), tokens live ${KEYSTONE_TOKEN_EXPIRATION} s)"
}

keystone_down() { stop_pidfile "$KEYSTONE_DIR/run/uwsgi.pid" keystone; }

keystone_status() {
  if pid_alive "$KEYSTONE_DIR/run/uwsgi.pid" && keystone_answers; then
    echo "keystone: running ($(keystone_url))"
  else
    echo "keystone: stopped"; return 1
  fi
}
