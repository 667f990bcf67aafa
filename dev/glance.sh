# Glance API under uWSGI with its rbd store, PostgreSQL, and a no-keystone identity filter.
# Sourced by dev/up (after dev/postgres.sh).

# One database per Glance instance (the legacy-API test Glance has its own).
GLANCE_DB=${GLANCE_DB:-glance_$(basename "$GLANCE_DIR" | tr -c 'a-z0-9\n' '_')}

glance_write_conf() {
  mkdir -p "$GLANCE_DIR"/{etc,log,staging,tasks,run,locks}
  cat > "$GLANCE_DIR/etc/glance-api.conf" <<CONF
[DEFAULT]
enabled_backends = ceph:rbd
show_image_direct_url = True
show_multiple_locations = $GLANCE_SHOW_MULTIPLE_LOCATIONS
do_secure_hash = $GLANCE_DO_SECURE_HASH
log_file = $GLANCE_DIR/log/glance-api.log
worker_self_reference_url = http://127.0.0.1:$GLANCE_PORT

[database]
connection = postgresql+psycopg2://$GLANCE_DB@127.0.0.1:$PG_PORT/$GLANCE_DB

[glance_store]
default_backend = ceph

[ceph]
rbd_store_pool = $CEPH_GLANCE_POOL
rbd_store_user = glance
rbd_store_ceph_conf = $CEPH_CONF
rbd_thin_provisioning = True

[os_glance_staging_store]
filesystem_store_datadir = $GLANCE_DIR/staging

[os_glance_tasks_store]
filesystem_store_datadir = $GLANCE_DIR/tasks

[oslo_concurrency]
# Without a lock path Glance's background hashing after a location import fails, and the
# image keeps an import lock that makes every DELETE answer 500.
lock_path = $GLANCE_DIR/locks

[paste_deploy]
config_file = $GLANCE_DIR/etc/glance-api-paste.ini
CONF
  local identity=snapq_noauth
  if [ "${GLANCE_AUTH:-noauth}" = keystone ]; then
    identity=authtoken
    cat >> "$GLANCE_DIR/etc/glance-api.conf" <<CONF

[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:$KEYSTONE_PORT
auth_url = http://127.0.0.1:$KEYSTONE_PORT
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = glance
password = $KEYSTONE_GLANCE_PASSWORD
service_token_roles = service
service_token_roles_required = true
CONF
  fi
  cat > "$GLANCE_DIR/etc/glance-api-paste.ini" <<CONF
[pipeline:glance-api]
pipeline = cors http_proxy_to_wsgi versionnegotiation $identity context rootapp

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
delay_auth_decision = true

[composite:rootapp]
paste.composite_factory = glance.api:root_app_factory
/: apiversions
/v2: apiv2app

[app:apiversions]
paste.app_factory = glance.api.versions:create_resource

[app:apiv2app]
paste.app_factory = glance.api.v2.router:API.factory

[filter:versionnegotiation]
paste.filter_factory = glance.api.middleware.version_negotiation:VersionNegotiationFilter.factory

[filter:context]
paste.filter_factory = glance.api.middleware.context:ContextMiddleware.factory

[filter:snapq_noauth]
paste.filter_factory = snapq_noauth:filter_factory
roles = ${GLANCE_NOAUTH_ROLES:-admin,member,reader,service}

[filter:http_proxy_to_wsgi]
paste.filter_factory = oslo_middleware:HTTPProxyToWSGI.factory

[filter:cors]
paste.filter_factory = oslo_middleware.cors:filter_factory
oslo_config_project = glance
oslo_config_program = glance-api
CONF
  cp "$SNAPQ_ROOT/dev/snapq_noauth.py" "$GLANCE_DIR/etc/"
  local https=""
  [ -n "${GLANCE_TLS_PORT:-}" ] && https="https-socket = 127.0.0.1:$GLANCE_TLS_PORT,$TLS_DIR/server.crt,$TLS_DIR/server.key"
  cat > "$GLANCE_DIR/etc/uwsgi.ini" <<CONF
[uwsgi]
http-socket = 127.0.0.1:$GLANCE_PORT
$https
module = glance.wsgi.api:application
virtualenv = $GLANCE_VENV
pythonpath = $GLANCE_DIR/etc
env = OS_GLANCE_CONFIG_DIR=$GLANCE_DIR/etc
master = true
processes = 1
threads = 4
lazy-apps = true
enable-threads = true
http-chunked-input = true
http-raw-body = true
chunked-input-limit = 10485760
buffer-size = 65535
post-buffering = 0
die-on-term = true
pidfile = $GLANCE_DIR/run/uwsgi.pid
logto = $GLANCE_DIR/log/uwsgi.log
CONF
}

glance_answers() {
  # A Glance that checks tokens answers 401 without one: it is up all the same.
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GLANCE_PORT/v2/images?limit=1")
  [ "$code" = 200 ] || { [ "${GLANCE_AUTH:-noauth}" = keystone ] && [ "$code" = 401 ]; }
}

glance_up() {
  [ -x "$GLANCE_VENV/bin/uwsgi" ] || die "glance: venv missing at $GLANCE_VENV; run dev/install"
  glance_write_conf
  postgres_up
  postgres_database "$GLANCE_DB"
  if [ ! -f "$GLANCE_DIR/db_synced" ]; then
    "$GLANCE_VENV/bin/glance-manage" --config-file "$GLANCE_DIR/etc/glance-api.conf" db_sync \
      >>"$GLANCE_DIR/log/db_sync.log" 2>&1 || die "glance: db_sync failed; see $GLANCE_DIR/log/db_sync.log"
    touch "$GLANCE_DIR/db_synced"
  fi
  if ! pid_alive "$GLANCE_DIR/run/uwsgi.pid"; then
    (cd "$GLANCE_DIR" && setsid -f "$GLANCE_VENV/bin/uwsgi" --ini "$GLANCE_DIR/etc/uwsgi.ini" \
      >"$GLANCE_DIR/log/stdout.log" 2>&1 </dev/null)
  fi
  wait_until 60 "glance" "$GLANCE_DIR/log/uwsgi.log" -- glance_answers
  log "glance: up (http://127.0.0.1:$GLANCE_PORT)"
}

glance_down() { stop_pidfile "$GLANCE_DIR/run/uwsgi.pid" glance; }

glance_status() {
  if pid_alive "$GLANCE_DIR/run/uwsgi.pid" && glance_answers; then
    echo "glance: running (http://127.0.0.1:$GLANCE_PORT)"
  else
    echo "glance: stopped"; return 1
  fi
}
