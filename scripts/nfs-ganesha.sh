#!/usr/bin/env bash
# A real NFSv3 server on loopback for tests: nfs-ganesha (userspace, FSAL VFS) exporting one
# local directory, plus rpcbind, which ganesha needs to start at all.
#
#   scripts/nfs-ganesha.sh up DIR EXPORT_DIR   install if needed, start rpcbind and ganesha,
#                                              wait until the export answers NFSv3
#   scripts/nfs-ganesha.sh down DIR            stop ganesha (and rpcbind if we started it)
#
# The export is nfs://127.0.0.1/export/ (NFSv3 and v4, read-write, no root squash, AUTH_SYS,
# clients on unprivileged source ports accepted). NFS is on TCP/UDP 127.0.0.1:2049 and MOUNT on
# 127.0.0.1:20048, fixed, so a client may skip the portmapper; both are registered with rpcbind
# (port 111) too. NFSv3 mounts use the Pseudo path (/export, or a subdirectory /export/SUB).
#
# DIR holds ganesha.conf, ganesha.pid, ganesha.log, the NFSv4 recovery directory and, when this
# script started rpcbind, rpcbind.started (its PID). Both subcommands are idempotent; `up` with
# another EXPORT_DIR restarts our ganesha on it. Run as root. There is no systemd: ganesha runs in
# the foreground (`-F`) in the background of this script and `down` kills that PID. The NFSv4
# grace period is off (Graceless), so writes work as soon as `up` returns.
set -euo pipefail

PATH=/usr/sbin:/sbin:$PATH
PSEUDO=/export
NFS_PORT=2049
MNT_PORT=20048
WAIT_S=${NFS_WAIT_S:-60}

die() {
  echo "nfs-ganesha.sh: $*" >&2
  exit 1
}

usage() {
  die "usage: $0 up DIR EXPORT_DIR | $0 down DIR"
}

[ $# -ge 2 ] || usage
cmd=$1
case $cmd in
up) [ $# -eq 3 ] || usage ;;
down) [ $# -le 3 ] || usage ;; # an EXPORT_DIR after DIR is accepted and ignored
*) usage ;;
esac
mkdir -p "$2"
dir=$(realpath "$2")
conf=$dir/ganesha.conf
pidfile=$dir/ganesha.pid
logfile=$dir/ganesha.log
exportfile=$dir/ganesha.export
rpcbind_file=$dir/rpcbind.started
url=nfs://127.0.0.1$PSEUDO/

# The PID in FILE when that process is alive and its command line matches PATTERN, else nothing.
live_pid() { # FILE PATTERN
  [ -f "$1" ] || return 0
  local pid
  pid=$(cat "$1" 2>/dev/null || true)
  if [[ $pid =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/cmdline" ] &&
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2"; then
    echo "$pid"
  fi
}

# Our ganesha: the live PID in DIR/ganesha.pid of a ganesha.nfsd reading DIR/ganesha.conf.
our_ganesha() {
  local pid
  pid=$(live_pid "$pidfile" ganesha.nfsd)
  if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$conf"; then
    echo "$pid"
  fi
}

our_rpcbind() {
  live_pid "$rpcbind_file" rpcbind
}

# Exited: no such process, or a zombie (its ports are closed; init here reaps only after ~2 s).
gone() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  [ "${stat%% *}" = Z ]
}

wait_until() { # SECONDS DESCRIPTION COMMAND... (DESCRIPTION only documents the call)
  local deadline=$((SECONDS + $1))
  shift 2
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

# TERM, then KILL after 10 s.
stop_pid() { # PID
  kill "$1" 2>/dev/null || true
  wait_until 10 "PID $1 exit" gone "$1" || kill -9 "$1" 2>/dev/null || true
  wait_until 5 "PID $1 exit" gone "$1"
}

port_open() { # PORT
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

rpcbind_answers() {
  timeout 5 rpcinfo -p 127.0.0.1 >/dev/null 2>&1
}

# The export answers NFSv3: MOUNT and NFS looked up through the portmapper, then a READDIR.
export_answers() {
  timeout 10 nfs-ls "$url" >/dev/null 2>&1
}

# Ganesha answers, or it exited (the caller tells which).
answers_or_exited() {
  export_answers || gone "$1"
}

log_tail() {
  tail -n 5 "$logfile" 2>/dev/null | grep -v DBUS || true
}

write_conf() { # EXPORT_DIR
  cat >"$conf" <<EOF
# Written by scripts/nfs-ganesha.sh; rewritten by every \`up\` that starts ganesha.
NFS_CORE_PARAM {
  Bind_addr = 127.0.0.1;
  NFS_Port = $NFS_PORT;
  MNT_Port = $MNT_PORT;
  Protocols = 3, 4;
  # NFSv3 clients mount the Pseudo path ($PSEUDO), not the server's directory.
  Mount_Path_Pseudo = true;
  # No rpc.statd / rquotad here; tests need neither locks over NLM nor quotas.
  Enable_NLM = false;
  Enable_RQUOTA = false;
}
NFSv4 {
  # No grace period: NFSv3 and v4 state-changing calls are served right after start.
  Graceless = true;
  RecoveryRoot = "$dir/recovery";
  # Owners as bare uids/gids (no idmapd here).
  Only_Numeric_Owners = true;
}
NFS_KRB5 {
  Active_krb5 = false;
}
EXPORT_DEFAULTS {
  # Changes made directly in EXPORT_DIR show over NFS at once.
  Attr_Expiration_Time = 0;
}
EXPORT {
  Export_Id = 1;
  Path = "$1";
  Pseudo = $PSEUDO;
  Access_Type = RW;
  Squash = No_Root_Squash;
  Protocols = 3, 4;
  Transports = TCP, UDP;
  SecType = sys;
  # Clients bound to ports above 1023 (any non-root client) are accepted.
  PrivilegedPort = false;
  FSAL {
    Name = VFS;
  }
}
EOF
}

# ganesha, its VFS backend (nfs-ganesha-vfs), rpcbind and the libnfs tools used as probe.
installed() {
  command -v ganesha.nfsd >/dev/null && command -v rpcbind >/dev/null &&
    command -v rpcinfo >/dev/null && command -v nfs-ls >/dev/null &&
    { compgen -G '/usr/lib*/ganesha/libfsalvfs.so' || compgen -G '/usr/lib*/*/ganesha/libfsalvfs.so'; } >/dev/null
}

start_rpcbind() {
  if rpcbind_answers; then
    return 0
  fi
  [ -z "$(our_rpcbind)" ] || die "rpcbind (PID $(our_rpcbind)) is running but does not answer rpcinfo"
  # -f: foreground, so that $! is its PID.
  setsid rpcbind -f </dev/null >>"$dir/rpcbind.out" 2>&1 &
  echo $! >"$rpcbind_file"
  wait_until "$WAIT_S" rpcbind rpcbind_answers ||
    die "rpcbind (PID $(cat "$rpcbind_file")) did not answer within ${WAIT_S}s: $(tail -n 3 "$dir/rpcbind.out" 2>/dev/null)"
}

up() {
  local export_dir pid t0=${EPOCHREALTIME//[.,]/}
  mkdir -p "$1"
  export_dir=$(realpath "$1")
  case $export_dir in
  *[\"\\$'\n']*) die "EXPORT_DIR must not contain a double quote, backslash or newline: $export_dir" ;;
  esac
  [ "$EUID" -eq 0 ] || die "run as root (ganesha binds port $NFS_PORT and exports with root's rights)"

  if ! installed; then
    echo "nfs-ganesha.sh: installing nfs-ganesha nfs-ganesha-vfs libnfs-utils rpcbind" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      nfs-ganesha nfs-ganesha-vfs libnfs-utils rpcbind; } >"$dir/apt.log" 2>&1 ||
      die "cannot install nfs-ganesha nfs-ganesha-vfs libnfs-utils rpcbind with apt-get (see $dir/apt.log): $(tail -n 3 "$dir/apt.log")"
  fi

  pid=$(our_ganesha)
  if [ -n "$pid" ]; then
    if [ "$(cat "$exportfile" 2>/dev/null)" = "$export_dir" ]; then
      wait_until "$WAIT_S" export answers_or_exited "$pid"
      if export_answers; then
        echo "nfs-ganesha.sh: already up: $url exports $export_dir (ganesha PID $pid)"
        return 0
      fi
      gone "$pid" || die "our ganesha (PID $pid) runs but $url does not answer; log: $(log_tail)"
    else
      echo "nfs-ganesha.sh: restarting ganesha (PID $pid): it exports $(cat "$exportfile" 2>/dev/null || echo '?'), not $export_dir" >&2
      stop_pid "$pid" || die "ganesha (PID $pid) does not exit"
    fi
  fi

  start_rpcbind
  local p
  for p in $NFS_PORT $MNT_PORT; do
    if port_open "$p"; then
      die "127.0.0.1:$p is already served by something not started by this script for $dir (running ganesha.nfsd: $(pgrep -a -x ganesha.nfsd | tr '\n' ';' || true)); stop it first"
    fi
  done

  write_conf "$export_dir"
  echo "$export_dir" >"$exportfile"
  mkdir -p "$dir/recovery"
  rm -f "$pidfile"
  # setsid and all descriptors to files: the caller's pipes must not stay open.
  setsid ganesha.nfsd -F -f "$conf" -L "$logfile" -p "$pidfile" </dev/null >>"$dir/ganesha.out" 2>&1 &
  pid=$!
  echo "$pid" >"$pidfile"
  wait_until "$WAIT_S" export answers_or_exited "$pid" || true
  if ! export_answers; then
    gone "$pid" && die "ganesha.nfsd (PID $pid) exited; log: $(log_tail)"
    die "ganesha.nfsd (PID $pid) runs but $url did not answer within ${WAIT_S}s; log: $(log_tail)"
  fi
  echo "nfs-ganesha.sh: up in $(((${EPOCHREALTIME//[.,]/} - t0) / 1000)) ms: $url exports $export_dir; NFS 127.0.0.1:$NFS_PORT, MOUNT 127.0.0.1:$MNT_PORT, rpcbind :111 (ganesha PID $pid)"
}

down() {
  local status=0 pid
  pid=$(our_ganesha)
  if [ -n "$pid" ]; then
    stop_pid "$pid" || {
      echo "nfs-ganesha.sh: ganesha (PID $pid) still running" >&2
      status=1
    }
  fi
  rm -f "$pidfile" "$exportfile"
  pid=$(our_rpcbind)
  if [ -n "$pid" ]; then
    stop_pid "$pid" || {
      echo "nfs-ganesha.sh: rpcbind (PID $pid) still running" >&2
      status=1
    }
  fi
  [ $status -ne 0 ] || rm -f "$rpcbind_file"
  rm -rf "$dir/recovery"
  return $status
}

case $cmd in
up) up "$3" ;;
down) down ;;
esac
