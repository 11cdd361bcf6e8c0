# syntax=docker/dockerfile:1
# iys-gateway image: `docker build -t iys-gateway .`, then `docker run --rm -p 8080:8080 iys-gateway` (embedded store)
# or any other command: `docker run --rm iys-gateway migrate`, `... import FILE`, `... load`, `... generate --rows N`.
# docker-compose.yml builds and runs it with Postgres, Redis, Prometheus and Grafana.

# ---- build: all dependencies, TypeScript → dist/ ----------------------------------------------------------
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` would run tsc before src/ is here; the build is its own step below.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY loaders ./loaders
# dist/ mirrors the source tree: dist/src/ (the server, the CLI) and dist/loaders/ (the offline programs).
RUN npm run build

# ---- runtime: production dependencies, compiled code, non-root ---------------------------------------------
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0
WORKDIR /app
# package.json is also read at run time (the version in GET /openapi.json, src/http/openapi.ts).
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` runs tsc, a devDependency that is not installed here; dist/ comes from the build stage.
# No dependency needs an install script (the uWebSockets.js binaries ship prebuilt in the package).
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
# The Redis index's Lua scripts: dist/src/filter/scripts.js reads them from src/filter/lua (src/filter/scripts.ts says why).
COPY src/filter/lua ./src/filter/lua
COPY src/auth/lua ./src/auth/lua
COPY bin ./bin
# The embedded store's default seed (EMBEDDED_SEED_FILE), used when REDIS_URL is unset.
COPY data ./data
# /data: scrub jobs and the decision-log spool (SCRUB_DIR, DECISION_SPOOL_DIR); mount a volume there.
RUN mkdir -p /data && chown node:node /data
USER node
EXPOSE 8080 2775
# No curl in the slim image: Node's fetch. The port follows PORT (default 8080).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || '8080') + '/healthz').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "bin/iys-gateway.js"]
CMD ["serve"]
