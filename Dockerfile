# Certificate Manager as a container image. Both stages run the steps CI runs outside Docker (deploy/install.sh):
# the build stage packages a release and installs it into an empty folder with production dependencies only; the
# runtime stage checks that install as the unprivileged user the server runs as.
#
#   docker build -t certmanager .
#   docker compose up --build          (compose.yaml: with MariaDB and TLS; README "Running in production")

ARG NODE_IMAGE=node:20-bookworm

FROM ${NODE_IMAGE} AS build
WORKDIR /src
# Dependencies first, so a change of the sources alone reuses this layer.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN bash deploy/install.sh package /release \
 && bash deploy/install.sh install /release/certificate-manager-*.tgz /opt/certmanager

# The slim image of the same Debian release: the native addons built above (better-sqlite3, pkcs11js) link the
# same glibc, and no compiler or npm cache comes along.
FROM ${NODE_IMAGE}-slim
RUN groupadd --system --gid 10001 certmanager \
 && useradd --system --uid 10001 --gid certmanager --home-dir /var/lib/certmanager --shell /usr/sbin/nologin certmanager \
 && install -d -o certmanager -g certmanager -m 0700 /var/lib/certmanager /var/lib/certmanager-keys
COPY --from=build --chown=root:root /opt/certmanager /opt/certmanager
WORKDIR /opt/certmanager
USER 10001:10001
# HOME and npm's cache in /tmp: nothing of the check may land in the data volume's path.
RUN HOME=/tmp npm_config_cache=/tmp/npm-cache npm_config_update_notifier=false bash deploy/install.sh check /opt/certmanager \
 && rm -rf /tmp/npm-cache /tmp/.npm

# The data folder (SQLite when no CM_DATABASE_URL, API-key pepper, page-token key, bootstrap key) and the local
# keystore live in separate volumes: a backup of the data must not carry the keys that open it.
ENV NODE_ENV=production \
    CM_DATA_DIR=/var/lib/certmanager \
    CM_LOCAL_KEYSTORE=/var/lib/certmanager-keys/root-keys.json \
    CM_LISTEN_ADDRESS=0.0.0.0:50051 \
    CM_HEALTH_LISTEN_ADDRESS=127.0.0.1:50052
VOLUME ["/var/lib/certmanager", "/var/lib/certmanager-keys"]
EXPOSE 50051
# The probe reads CM_HEALTH_LISTEN_ADDRESS: plaintext, health only, so it needs no client certificate or key.
HEALTHCHECK --interval=15s --timeout=6s --start-period=60s --retries=3 CMD ["node", "dist/src/cli/health.js", "--timeout", "5"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "dist/src/main.js"]
