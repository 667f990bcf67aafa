# A self-signed CA and a server certificate for 127.0.0.1/localhost, for the dev services'
# TLS endpoints (Keystone and the Keystone-checking Glance under uWSGI's https-socket,
# RabbitMQ's TLS listener). Sourced by dev/up.

TLS_DIR=${TLS_DIR:-$SNAPQ_STATE_DIR/tls}

tls_certs() {
  [ -s "$TLS_DIR/server.crt" ] && [ -s "$TLS_DIR/ca.crt" ] && return 0
  command -v openssl >/dev/null || die "tls: openssl missing; run dev/install"
  install -d -m 700 "$TLS_DIR"
  (
    cd "$TLS_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 365 \
      -subj '/CN=snapq dev CA' -addext basicConstraints=critical,CA:TRUE \
      -addext keyUsage=critical,keyCertSign,cRLSign
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj '/CN=localhost'
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt \
      -days 365 -extfile server.ext
    chmod 600 ca.key server.key
  ) >"$TLS_DIR/openssl.log" 2>&1 || die "tls: making the dev certificates failed; see $TLS_DIR/openssl.log"
  log "tls: dev CA and server certificate in $TLS_DIR"
}
