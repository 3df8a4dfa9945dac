# syntax=docker/dockerfile:1
# One image for every service: `almere serve parking|incidents|signals|optimizer|gateway` (the Helm chart
# sets the args).

FROM node:20-bookworm-slim AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web ./
# Vite writes the dashboard into ../services/gateway/dashboard, where the gateway serves it from.
RUN mkdir -p ../services/gateway && npm run build

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/almere
COPY pyproject.toml README.md ./
COPY contract ./contract
COPY libs ./libs
COPY services ./services
COPY sim ./sim
COPY apps ./apps
COPY protos/gen ./protos/gen
COPY --from=web /src/services/gateway/dashboard ./services/gateway/dashboard
# A regular (not editable) install: the SUMO wheels (eclipse-sumo, sumolib) come with the dependencies.
RUN /opt/almere/bin/pip install .

FROM python:3.11-slim-bookworm
# SUMO's binaries need a few shared libraries the slim image lacks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libxerces-c3.2 libproj25 libfox-1.6-0 libgl1 libglu1-mesa \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 almere && useradd --uid 10001 --gid almere --no-create-home --shell /usr/sbin/nologin almere
COPY --from=build /opt/almere /opt/almere
ENV PATH=/opt/almere/bin:$PATH PYTHONUNBUFFERED=1 ALMERE_DATA_DIR=/var/lib/almere ALMERE_BIND_HOST=0.0.0.0
RUN mkdir -p /var/lib/almere && chown almere:almere /var/lib/almere
USER 10001:10001
EXPOSE 50051 50052 50053 50054 8080 9090
ENTRYPOINT ["almere"]
CMD ["serve", "parking"]
