# RabbitMQ with the management and prometheus plugins, loopback only. Sourced by dev/up.

rabbit_env() {
  export RABBITMQ_NODENAME=rabbit@localhost
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$RABBIT_PORT
  export RABBITMQ_DIST_PORT=$RABBIT_DIST_PORT
  export ERL_EPMD_ADDRESS=127.0.0.1
  export ERL_EPMD_PORT=$RABBIT_EPMD_PORT
  export RABBITMQ_MNESIA_BASE=$RABBIT_DIR/mnesia
  export RABBITMQ_LOG_BASE=$RABBIT_DIR/log
  export RABBITMQ_CONFIG_FILE=$RABBIT_DIR/rabbitmq.conf
  export RABBITMQ_ENABLED_PLUGINS_FILE=$RABBIT_DIR/enabled_plugins
  export RABBITMQ_PID_FILE=$RABBIT_DIR/rabbit.pid
  export HOME=$RABBIT_DIR/home
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

rabbitmqctl_() { (rabbit_env; /usr/lib/rabbitmq/bin/rabbitmqctl "$@"); }

rabbit_up() {
  tls_certs
  mkdir -p "$RABBIT_DIR"/{mnesia,log,home}
  cat > "$RABBIT_DIR/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$RABBIT_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $RABBIT_MGMT_PORT
prometheus.tcp.ip = 127.0.0.1
prometheus.tcp.port = $RABBIT_PROM_PORT
loopback_users = none
default_user = $RABBIT_USER
default_pass = $RABBIT_PASSWORD
log.file.level = info
listeners.ssl.default = 127.0.0.1:$RABBIT_TLS_PORT
ssl_options.cacertfile = $TLS_DIR/ca.crt
ssl_options.certfile = $TLS_DIR/server.crt
ssl_options.keyfile = $TLS_DIR/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
CONF
  echo '[rabbitmq_management,rabbitmq_prometheus].' > "$RABBIT_DIR/enabled_plugins"
  if ! pid_alive "$RABBIT_DIR/rabbit.pid"; then
    (rabbit_env; setsid -f /usr/lib/rabbitmq/bin/rabbitmq-server >"$RABBIT_DIR/log/stdout.log" 2>&1 </dev/null)
  fi
  wait_until 60 "rabbitmq" "$RABBIT_DIR/log/stdout.log" -- rabbitmqctl_ await_startup --timeout 5
  wait_until 30 "rabbitmq management API" "$RABBIT_DIR/log/stdout.log" -- \
    curl -sf -u "$RABBIT_USER:$RABBIT_PASSWORD" "http://127.0.0.1:$RABBIT_MGMT_PORT/api/overview"
  log "rabbitmq: up (amqp 127.0.0.1:$RABBIT_PORT, management :$RABBIT_MGMT_PORT)"
}

rabbit_down() {
  if pid_alive "$RABBIT_DIR/rabbit.pid"; then
    rabbitmqctl_ shutdown >/dev/null 2>&1 || stop_pidfile "$RABBIT_DIR/rabbit.pid" rabbitmq
  fi
  rm -f "$RABBIT_DIR/rabbit.pid"
}

rabbit_status() {
  if pid_alive "$RABBIT_DIR/rabbit.pid" && rabbitmqctl_ status >/dev/null 2>&1; then
    echo "rabbitmq: running (amqp 127.0.0.1:$RABBIT_PORT)"
  else
    echo "rabbitmq: stopped"; return 1
  fi
}
