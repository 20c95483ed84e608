#!/usr/bin/env bash
# A real GlusterFS volume for tests: one glusterd, a one-brick volume `sluicetest`, mounted
# with FUSE (`mount -t glusterfs`).
#
#   scripts/glusterfs.sh up DIR MOUNTPOINT     install if needed, start, create, mount
#   scripts/glusterfs.sh down DIR MOUNTPOINT   unmount, stop and delete the volume, stop glusterd
#
# DIR holds the brick, glusterd's PID file and the logs. Both subcommands are idempotent. Run as
# root (glusterd, mount). There is no systemd: glusterd runs in the foreground (`-N`) in the
# background of this script, its PID recorded in DIR/glusterd.pid, and `down` kills that PID.
# The brick host is `gluster-local`, a name added to /etc/hosts for 127.0.0.1: glusterd refuses
# a brick on `127.0.0.1` itself.
set -euo pipefail

VOL=sluicetest
HOST=gluster-local
WAIT_S=${GLUSTERFS_WAIT_S:-60}

die() {
  echo "glusterfs.sh: $*" >&2
  exit 1
}

usage() {
  die "usage: $0 up|down DIR MOUNTPOINT"
}

[ $# -eq 3 ] || usage
cmd=$1
mkdir -p "$2" "$3"
dir=$(realpath "$2")
mnt=$(realpath "$3")
pidfile=$dir/glusterd.pid
brick=$dir/brick

gl() {
  gluster --mode=script "$@"
}

# The mount point as /proc/self/mountinfo writes it (space, tab, newline, backslash escaped).
escaped_mnt=$(printf '%s' "$mnt" | sed -e 's/\\/\\134/g' -e 's/ /\\040/g' -e 's/\t/\\011/g')

# The filesystem type mounted at MOUNTPOINT (the last mount there), or nothing.
fstype_at_mnt() {
  awk -v p="$escaped_mnt" '{
    for (i = 1; i <= NF; i++) if ($i == "-") break
    if ($5 == p) t = $(i + 1)
  } END { if (t != "") print t }' /proc/self/mountinfo
}

# The PID in DIR/glusterd.pid when that process is alive and is glusterd, else nothing.
our_glusterd() {
  [ -f "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q glusterd; then
    echo "$pid"
  fi
}

# PIDs of processes serving or mounting this volume (brick daemon, FUSE client): a glusterfs or
# glusterfsd executable whose arguments name the volume.
volume_processes() {
  local p args
  for p in /proc/[0-9]*; do
    args=()
    mapfile -d '' args 2>/dev/null <"$p/cmdline" || continue
    [ ${#args[@]} -gt 0 ] || continue
    case ${args[0]##*/} in glusterfs | glusterfsd) ;; *) continue ;; esac
    if [[ " ${args[*]} " =~ [\ /=]$VOL[.\ ] ]]; then
      echo "${p#/proc/}"
    fi
  done
}

no_volume_processes() {
  [ -z "$(volume_processes)" ]
}

gone() {
  ! kill -0 "$1" 2>/dev/null
}

wait_until() { # SECONDS DESCRIPTION COMMAND...
  local s=$1 what=$2
  shift 2
  local deadline=$((SECONDS + s))
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

glusterd_answers() {
  gl volume list >/dev/null 2>&1
}

mounted_glusterfs() {
  [ "$(fstype_at_mnt)" = fuse.glusterfs ] && stat -f "$mnt" >/dev/null 2>&1
}

up() {
  if ! command -v glusterd >/dev/null || ! command -v gluster >/dev/null ||
    ! command -v mount.glusterfs >/dev/null; then
    echo "glusterfs.sh: installing glusterfs-server glusterfs-client" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      glusterfs-server glusterfs-client; } >"$dir/apt.log" 2>&1 ||
      die "cannot install glusterfs-server glusterfs-client with apt-get (see $dir/apt.log): $(tail -n 3 "$dir/apt.log")"
  fi
  [ -c /dev/fuse ] || die "no /dev/fuse on this machine: a GlusterFS FUSE mount is impossible"

  if ! grep -Eq "^[[:space:]]*127\.0\.0\.1[[:space:]]+(.*[[:space:]])?$HOST([[:space:]]|$)" /etc/hosts; then
    echo "127.0.0.1 $HOST" >>/etc/hosts
  fi
  getent hosts "$HOST" | grep -q '^127\.0\.0\.1' ||
    die "$HOST does not resolve to 127.0.0.1 (getent: $(getent hosts "$HOST" || echo nothing))"

  if [ "$(fstype_at_mnt)" = fuse.glusterfs ]; then
    echo "glusterfs.sh: $HOST:/$VOL already mounted at $mnt"
    return 0
  fi

  if [ -z "$(our_glusterd)" ]; then
    if glusterd_answers; then
      die "a glusterd not started by this script (no live PID in $pidfile) is already running; stop it first"
    fi
    # setsid and all descriptors to files: the caller's pipes must not stay open.
    setsid glusterd -N --log-file="$dir/glusterd.log" </dev/null >>"$dir/glusterd.out" 2>&1 &
    echo $! >"$pidfile"
    wait_until "$WAIT_S" glusterd glusterd_answers ||
      die "glusterd (PID $(cat "$pidfile")) did not answer within ${WAIT_S}s; log: $(tail -n 5 "$dir/glusterd.log" 2>/dev/null)"
  fi

  # A volume of this name left by an earlier run on another brick is replaced.
  if gl volume info "$VOL" >/dev/null 2>&1; then
    if ! gl volume info "$VOL" | grep -q "^Brick1: $HOST:$brick\$"; then
      gl volume stop "$VOL" force >/dev/null 2>&1 || true
      gl volume delete "$VOL" >/dev/null
    fi
  fi
  if ! gl volume info "$VOL" >/dev/null 2>&1; then
    mkdir -p "$brick"
    gl volume create "$VOL" "$HOST:$brick" force >/dev/null ||
      die "gluster volume create $VOL $HOST:$brick force failed"
  fi
  if ! gl volume info "$VOL" | grep -q '^Status: Started'; then
    gl volume start "$VOL" force >/dev/null || die "gluster volume start $VOL failed"
  fi

  mount -t glusterfs -o log-file="$dir/mount.log" "$HOST:/$VOL" "$mnt" ||
    die "mount -t glusterfs $HOST:/$VOL $mnt failed; log: $(tail -n 5 "$dir/mount.log" 2>/dev/null)"
  wait_until "$WAIT_S" mount mounted_glusterfs ||
    die "$mnt is not a fuse.glusterfs mount ${WAIT_S}s after mounting (it is: $(fstype_at_mnt)); log: $(tail -n 5 "$dir/mount.log" 2>/dev/null)"
  echo "glusterfs.sh: $HOST:/$VOL mounted at $mnt (glusterd PID $(cat "$pidfile"))"
}

down() {
  local status=0 t pid
  # Unmount everything stacked at the mount point.
  while t=$(fstype_at_mnt) && [ -n "$t" ]; do
    if [ "$t" != fuse.glusterfs ]; then
      echo "glusterfs.sh: $mnt is a $t mount, not ours; left alone" >&2
      break
    fi
    umount "$mnt" 2>/dev/null || umount -l "$mnt" || {
      status=1
      break
    }
  done

  if [ -n "$(our_glusterd)" ]; then
    if gl volume info "$VOL" >/dev/null 2>&1; then
      gl volume stop "$VOL" force >/dev/null 2>&1 || true
      gl volume delete "$VOL" >/dev/null 2>&1 || status=1
    fi
    pid=$(our_glusterd)
    kill "$pid" 2>/dev/null || true
    wait_until 10 "glusterd exit" gone "$pid" || kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  # A brick daemon or FUSE client of this volume that outlived the above (by PID).
  for pid in $(volume_processes); do
    kill "$pid" 2>/dev/null || true
  done
  wait_until 10 "volume processes exit" no_volume_processes ||
    for pid in $(volume_processes); do kill -9 "$pid" 2>/dev/null || true; done
  # The brick carries the volume's id in its extended attributes: a new volume cannot reuse it.
  rm -rf "$brick"
  [ -z "$(volume_processes)" ] || {
    echo "glusterfs.sh: still running: $(volume_processes)" >&2
    status=1
  }
  return $status
}

case $cmd in
up) up ;;
down) down ;;
*) usage ;;
esac
