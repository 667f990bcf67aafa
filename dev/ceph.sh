# Single-node Ceph (1 mon, 1 BlueStore OSD on a sparse file, 1 mgr) on loopback. Sourced by dev/up.

ceph_cli() { ceph -c "$CEPH_CONF" --connect-timeout 10 "$@"; }

ceph_write_conf() {
  local fsid=$1
  cat > "$CEPH_CONF" <<CONF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$CEPH_MON_PORT_V2,v1:127.0.0.1:$CEPH_MON_PORT_V1]
public addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd pool default pg autoscale mode = off
osd pool default pg num = 8
osd pool default pgp num = 8
paxos propose interval = 0.1
mon data avail warn = 2
mon data avail crit = 1
run dir = $CEPH_DIR/run
rbd default clone format = 2
rbd default features = 61
client mount timeout = 30

[client]
keyring = $CEPH_DIR/ceph.\$name.keyring
log file = $CEPH_DIR/log/client.log

[mon]
mon data = $CEPH_DIR/mon/ceph-\$id
keyring = \$mon_data/keyring
log file = $CEPH_DIR/log/\$name.log
pid file = $CEPH_DIR/run/\$name.pid
admin socket = $CEPH_DIR/run/\$name.asok

[osd]
osd data = $CEPH_DIR/osd/ceph-\$id
keyring = \$osd_data/keyring
osd objectstore = bluestore
bluestore block create = true
bluestore block size = $((CEPH_OSD_SIZE_GIB * 1024 * 1024 * 1024))
osd memory target = 1073741824
bluestore cache size = 268435456
log file = $CEPH_DIR/log/\$name.log
pid file = $CEPH_DIR/run/\$name.pid
admin socket = $CEPH_DIR/run/\$name.asok

[mgr]
mgr data = $CEPH_DIR/mgr/ceph-\$id
keyring = \$mgr_data/keyring
log file = $CEPH_DIR/log/\$name.log
pid file = $CEPH_DIR/run/\$name.pid
admin socket = $CEPH_DIR/run/\$name.asok
CONF
}

ceph_bootstrap() {
  log "ceph: creating a new cluster in $CEPH_DIR"
  rm -rf "$CEPH_DIR"
  mkdir -p "$CEPH_DIR"/{mon,osd,mgr,log,run}
  local fsid; fsid=$(uuidgen)
  ceph_write_conf "$fsid"
  ceph-authtool --create-keyring "$CEPH_DIR/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$CEPH_DIR/ceph.client.admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool "$CEPH_DIR/mon.keyring" --import-keyring "$CEPH_DIR/ceph.client.admin.keyring" >/dev/null
  monmaptool --create --fsid "$fsid" \
    --addv a "[v2:127.0.0.1:$CEPH_MON_PORT_V2,v1:127.0.0.1:$CEPH_MON_PORT_V1]" "$CEPH_DIR/monmap" >/dev/null
  mkdir -p "$CEPH_DIR/mon/ceph-a"
  ceph-mon -c "$CEPH_CONF" --mkfs -i a --monmap "$CEPH_DIR/monmap" --keyring "$CEPH_DIR/mon.keyring"
  ceph_start_mon

  local osd_uuid secret id
  osd_uuid=$(uuidgen); secret=$(ceph-authtool --gen-print-key)
  printf '{"cephx_secret": "%s"}' "$secret" > "$CEPH_DIR/osd-secrets.json"
  id=$(ceph_cli osd new "$osd_uuid" -i "$CEPH_DIR/osd-secrets.json")
  rm -f "$CEPH_DIR/osd-secrets.json"
  [ "$id" = 0 ] || die "ceph: expected OSD id 0, got '$id'"
  mkdir -p "$CEPH_DIR/osd/ceph-0"
  ceph-authtool --create-keyring "$CEPH_DIR/osd/ceph-0/keyring" --name osd.0 --add-key "$secret" >/dev/null
  ceph-osd -c "$CEPH_CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$CEPH_DIR/log/osd.0.log" 2>&1 \
    || die "ceph: osd mkfs failed; see $CEPH_DIR/log/osd.0.log"

  mkdir -p "$CEPH_DIR/mgr/ceph-x"
  ceph_cli auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
    -o "$CEPH_DIR/mgr/ceph-x/keyring"
  ceph_start_osd_mgr

  ceph_cli osd set-require-min-compat-client mimic >/dev/null 2>&1
  for pool in "$CEPH_NOVA_POOL" "$CEPH_GLANCE_POOL"; do
    ceph_cli osd pool create "$pool" 8 8 >/dev/null 2>&1
    rbd -c "$CEPH_CONF" pool init "$pool"
  done
  ceph_cli auth get-or-create client.nova mon 'profile rbd' mgr 'profile rbd' \
    osd "profile rbd pool=$CEPH_NOVA_POOL, profile rbd pool=$CEPH_GLANCE_POOL" \
    -o "$CEPH_DIR/ceph.client.nova.keyring"
  ceph_cli auth get-or-create client.nova-ro mon 'profile rbd' mgr 'profile rbd' \
    osd "profile rbd pool=$CEPH_NOVA_POOL, profile rbd-read-only pool=$CEPH_GLANCE_POOL" \
    -o "$CEPH_DIR/ceph.client.nova-ro.keyring"
  ceph_cli auth get-or-create client.glance mon 'profile rbd' mgr "profile rbd pool=$CEPH_GLANCE_POOL" \
    osd "profile rbd pool=$CEPH_GLANCE_POOL" \
    -o "$CEPH_DIR/ceph.client.glance.keyring"
  touch "$CEPH_DIR/bootstrapped"
}

ceph_start_mon() {
  pid_alive "$CEPH_DIR/run/mon.a.pid" || ceph-mon -c "$CEPH_CONF" -i a
  wait_until 30 "ceph-mon" "$CEPH_DIR/log/mon.a.log" -- ceph_cli mon stat
}

ceph_start_osd_mgr() {
  pid_alive "$CEPH_DIR/run/osd.0.pid" || ceph-osd -c "$CEPH_CONF" -i 0
  pid_alive "$CEPH_DIR/run/mgr.x.pid" || ceph-mgr -c "$CEPH_CONF" -i x
  wait_until 60 "ceph-osd" "$CEPH_DIR/log/osd.0.log" -- ceph_osd_up
  wait_until 60 "ceph-mgr" "$CEPH_DIR/log/mgr.x.log" -- ceph_mgr_up
}

ceph_osd_up() { ceph_cli osd dump 2>/dev/null | grep -q '^osd.0 up'; }
ceph_mgr_up() { ceph_cli mgr stat 2>/dev/null | grep -q '"available": true'; }
ceph_healthy() { ceph_cli health 2>/dev/null | grep -q HEALTH_OK; }

ceph_up() {
  if [ ! -f "$CEPH_DIR/bootstrapped" ]; then
    ceph_bootstrap
  else
    ceph_start_mon
    ceph_start_osd_mgr
  fi
  wait_until 60 "ceph (HEALTH_OK)" "$CEPH_DIR/log/mon.a.log" -- ceph_healthy
  log "ceph: up (fsid $(ceph_cli fsid), conf $CEPH_CONF)"
}

ceph_down() {
  for d in mgr.x osd.0 mon.a; do stop_pidfile "$CEPH_DIR/run/$d.pid" "ceph $d"; done
}

ceph_status() {
  local d ok=0
  for d in mon.a osd.0 mgr.x; do
    if pid_alive "$CEPH_DIR/run/$d.pid"; then echo "ceph $d: running"; else echo "ceph $d: stopped"; ok=1; fi
  done
  [ $ok = 0 ] && echo "ceph health: $(ceph_cli health 2>&1)"
  return $ok
}
