#!/usr/bin/env bash
# Certificate Manager's production install, as a production machine (or the Dockerfile) does it:
#
#   deploy/install.sh package OUT_DIR        from a built source checkout: OUT_DIR/certificate-manager-<version>.tgz
#                                            (dist/, package.json, package-lock.json, README.md, this script)
#   deploy/install.sh install ARCHIVE DIR    into an empty or new DIR: unpack, then `npm ci --omit=dev` (production
#                                            dependencies only; better-sqlite3 builds its native addon here)
#   deploy/install.sh check DIR              start the installed server (fresh SQLite data folder, a free loopback
#                                            port), probe it with `npm run health` and its plaintext health listener
#                                            as the image's HEALTHCHECK does, show that a second server on the
#                                            same port is refused with exit 2 and one JSON line, stop it with SIGTERM
#                                            (exit 0), and see the probe fail once it is gone
#   deploy/install.sh [all] [--keep]         the three in a row, through temporary folders (what CI runs); --keep
#                                            leaves the installed folder and prints where it is
#
# Exit 0 when every step did what it should; otherwise 1, with the step and the server's log.
set -euo pipefail

say() { printf '[install] %s\n' "$*"; }
fail() { printf '[install] FAILED: %s\n' "$*" >&2; exit 1; }
millis() { echo $(( $(date +%s%N) / 1000000 )); }   # GNU date (Debian)

# package OUT_DIR: the release archive of this checkout (built first, so it needs the dev dependencies).
package() {
  local out=$1 src
  src=$(cd "$(dirname "$0")/.." && pwd)
  [ -f "$src/package-lock.json" ] || fail "$src is not a source checkout (no package-lock.json)"
  mkdir -p "$out"
  # A clean build: an incremental one keeps the output of sources since deleted.
  (cd "$src" && rm -rf dist && npm run --silent build)
  local version
  version=$(node -p "require('$src/package.json').version")
  local archive="$out/certificate-manager-$version.tgz"
  # Sorted names, fixed owner and times: the same checkout gives the same archive.
  tar -C "$src" --sort=name --owner=0 --group=0 --numeric-owner --mtime='2000-01-01 00:00Z' \
    --exclude='*.tsbuildinfo' --exclude='*.map' \
    -czf "$archive" dist package.json package-lock.json README.md deploy/install.sh
  say "packaged $(du -h "$archive" | cut -f1) into $archive"
  PACKAGED=$archive
}

# install ARCHIVE DIR: what a production machine runs; DIR must be empty or absent.
install_release() {
  local archive=$1 dir=$2
  [ -f "$archive" ] || fail "no release archive at $archive"
  if [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ]; then fail "$dir is not empty: install into a new folder"; fi
  mkdir -p "$dir"
  tar -C "$dir" -xzf "$archive"
  local t0
  t0=$(millis)
  (cd "$dir" && NODE_ENV=production npm ci --omit=dev --no-audit --no-fund --loglevel=error)
  # The point of a production install: nothing that only builds or tests the code.
  for dev in typescript vitest tsx @bufbuild/buf; do
    [ ! -e "$dir/node_modules/$dev" ] || fail "development dependency $dev was installed into $dir"
  done
  [ ! -e "$dir/src" ] && [ ! -e "$dir/test" ] || fail "$dir holds sources or tests: the archive is wrong"
  say "installed into $dir with production dependencies only ($(ls "$dir/node_modules" | wc -l) packages, $(( ($(millis) - t0) / 1000 )) s)"
}

SERVER_PID=
CHECK_DATA=
WORK=
# Whatever way the script ends: no server left running, no temporary folder left behind.
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then kill -KILL "$SERVER_PID" 2>/dev/null || true; fi
  [ -z "$CHECK_DATA" ] || rm -rf "$CHECK_DATA"
  [ -z "$WORK" ] || rm -rf "$WORK"
}
trap cleanup EXIT

# The installed server, as an operator starts it: a clean environment, production mode, only CM_* settings.
# Call it in a subshell (`&` or `( )`): it becomes the server process, so its pid is the server's.
run_server() {
  local dir=$1 data=$2 address=$3
  cd "$dir"
  exec env -i PATH="$PATH" HOME="$data" NODE_ENV=production CM_DATA_DIR="$data/data" \
    CM_LISTEN_ADDRESS="$address" CM_HEALTH_LISTEN_ADDRESS=127.0.0.1:0 node dist/src/main.js
}

# check DIR: start, probe, refuse a second server, stop, probe again.
check() {
  local dir=$1
  [ -f "$dir/dist/src/main.js" ] || fail "$dir has no installed server (dist/src/main.js)"
  CHECK_DATA=$(mktemp -d)
  local log="$CHECK_DATA/server.log" t0 address=
  t0=$(millis)
  run_server "$dir" "$CHECK_DATA" 127.0.0.1:0 >"$log" 2>&1 &
  SERVER_PID=$!
  # Bounded wait for the serving line, which carries the port the kernel chose.
  for _ in $(seq 1 300); do
    address=$(sed -n 's/.*"address":"\([^"]*\)".*"msg":"certificate manager serving".*/\1/p' "$log")
    [ -n "$address" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log" >&2; fail "the server exited while starting"; }
    sleep 0.2
  done
  [ -n "$address" ] || { cat "$log" >&2; fail "the server did not serve within 60 s"; }
  say "server pid $SERVER_PID serving on $address ($(( $(millis) - t0 )) ms after start)"

  local probe health_address
  probe=$(cd "$dir" && npm run --silent health -- "$address" --timeout 10) || { cat "$log" >&2; fail "health probe failed: $probe"; }
  say "npm run health -- $address: $probe"
  # As the image's HEALTHCHECK probes: no arguments, the plaintext health listener from the environment.
  health_address=$(sed -n 's/.*"health_address":"\([^"]*\)".*"msg":"certificate manager serving".*/\1/p' "$log")
  probe=$(cd "$dir" && CM_HEALTH_LISTEN_ADDRESS=$health_address node dist/src/cli/health.js --timeout 10) || { cat "$log" >&2; fail "health listener probe failed: $probe"; }
  say "CM_HEALTH_LISTEN_ADDRESS=$health_address node dist/src/cli/health.js: $probe"

  # A start failure an operator can fix: exit 2 and one JSON line that says what to do.
  local second="$CHECK_DATA/second" status=0 refusal
  mkdir -p "$second"
  (run_server "$dir" "$second" "$address") >"$second/out.log" 2>&1 &
  local second_pid=$! waited=0
  # Bounded: a second server that did start would otherwise be waited for forever.
  while kill -0 "$second_pid" 2>/dev/null && [ $waited -lt 600 ]; do sleep 0.1; waited=$((waited + 1)); done
  kill -0 "$second_pid" 2>/dev/null && { kill -KILL "$second_pid"; fail "a second server on $address was still running after 60 s"; }
  wait "$second_pid" || status=$?
  [ "$status" = 2 ] || { cat "$second/out.log" >&2; fail "a second server on $address exited $status, not 2"; }
  refusal=$(grep '"msg":"refusing to start"' "$second/out.log" | head -n 1)
  case $refusal in
    *CM_LISTEN_ADDRESS*) say "a second server on $address: exit 2, $refusal" ;;
    *) cat "$second/out.log" >&2; fail "a second server on $address did not name CM_LISTEN_ADDRESS in a JSON refusal" ;;
  esac

  kill -TERM "$SERVER_PID"
  local code=0
  waited=0
  while kill -0 "$SERVER_PID" 2>/dev/null && [ $waited -lt 300 ]; do sleep 0.1; waited=$((waited + 1)); done
  kill -0 "$SERVER_PID" 2>/dev/null && { cat "$log" >&2; fail "the server did not stop within 30 s of SIGTERM"; }
  wait "$SERVER_PID" || code=$?
  [ "$code" = 0 ] || { cat "$log" >&2; fail "the server exited $code after SIGTERM, not 0"; }
  SERVER_PID=
  say "SIGTERM: drained and exited 0"

  status=0
  (cd "$dir" && npm run --silent health -- "$address" --timeout 2 >/dev/null 2>&1) || status=$?
  [ "$status" = 1 ] || fail "the health probe answered $status for a stopped server, not 1"
  say "npm run health once it stopped: exit 1"
}

cmd=${1:-all}
case $cmd in
  package) [ $# = 2 ] || fail "usage: $0 package OUT_DIR"; package "$2" ;;
  install) [ $# = 3 ] || fail "usage: $0 install ARCHIVE DIR"; install_release "$2" "$3" ;;
  check) [ $# = 2 ] || fail "usage: $0 check DIR"; check "$2" ;;
  all | --keep)
    keep=false
    for a in "$@"; do [ "$a" = --keep ] && keep=true; done
    work=$(mktemp -d)
    [ $keep = true ] || WORK=$work
    package "$work/release"
    install_release "$PACKAGED" "$work/certmanager"
    check "$work/certmanager"
    [ $keep = false ] || say "installed folder kept: $work/certmanager"
    say "production install: OK"
    ;;
  *) fail "unknown command $cmd (package, install, check, all)" ;;
esac
