# One image for every snapdeploy process; docker-compose.yml picks the command.
FROM golang:1.26-bookworm AS vcsim
WORKDIR /src
COPY tools/vcsim/ ./
RUN go build -o /vcsim .

FROM python:3.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY proto/ proto/
COPY shared/ shared/
COPY services/ services/
RUN pip install --no-cache-dir . && useradd --system snapdeploy
COPY --from=vcsim /vcsim /usr/local/bin/vcsim
USER snapdeploy
ENV SNAPDEPLOY_HEALTH_LISTEN=0.0.0.0:9090
EXPOSE 8080 9090
CMD ["python", "-m", "services.gateway"]
