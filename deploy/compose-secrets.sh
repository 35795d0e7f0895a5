#!/usr/bin/env bash
# Writes the secrets compose.yaml reads, into DIR (default: secrets/ beside compose.yaml), keeping any that exist:
#   db_password    a random password for MariaDB's user certmanager
#   database_url   mysql://certmanager:<that password>@mariadb:3306/certmanager (CM_DATABASE_URL_FILE)
#   tls.crt/.key   a self-signed P-256 certificate for localhost and 127.0.0.1, valid 90 days; put your own
#                  pair there first (the leaf, then its intermediates; the key in PEM) to use it instead
# DIR is mode 0700 and its files 0444: compose mounts them as they are, and the containers read them as their own
# unprivileged users (certmanager, mysql), while the folder keeps every other user of this machine out.
set -euo pipefail
dir=${1:-"$(cd "$(dirname "$0")/.." && pwd)/secrets"}
umask 077
mkdir -p "$dir"
chmod 0700 "$dir"
say() { printf '[secrets] %s\n' "$*"; }

if [ ! -s "$dir/db_password" ]; then
  # 32 random bytes, base64url without padding: nothing a URL would need to escape.
  openssl rand -base64 32 | tr '+/' '-_' | tr -d '=\n' >"$dir/db_password"
  rm -f "$dir/database_url"
  say "wrote db_password (MariaDB takes it only when its volume is new: with an existing volume, change the user's password in MariaDB too)"
fi
if [ ! -s "$dir/database_url" ]; then
  printf 'mysql://certmanager:%s@mariadb:3306/certmanager' "$(cat "$dir/db_password")" >"$dir/database_url"
  say "wrote database_url"
fi
if [ -s "$dir/tls.crt" ] && [ -s "$dir/tls.key" ]; then
  :
elif [ -e "$dir/tls.crt" ] || [ -e "$dir/tls.key" ]; then
  # Half a pair is someone's own certificate or key: never replace it with a generated one.
  echo "[secrets] $dir holds only one of tls.crt and tls.key: add the other, or remove it to get a self-signed pair" >&2
  exit 1
else
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -addext "extendedKeyUsage=serverAuth" \
    -keyout "$dir/tls.key" -out "$dir/tls.crt" 2> >(grep -v '^[.+*-]*$' >&2)
  say "wrote a self-signed tls.crt and tls.key for localhost (clients: --ca $dir/tls.crt)"
fi
chmod 0444 "$dir"/db_password "$dir"/database_url "$dir"/tls.crt "$dir"/tls.key
say "secrets in $dir"
