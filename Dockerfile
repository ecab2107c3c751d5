# The fleet service (API, ingestion, schedulers). Dongle firmware is built
# separately (ESP-IDF for hardware, agent_fw/host for the simulator).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fleet ./fleet
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/fleet fleet && mkdir -p /var/lib/fleet \
    && chown fleet /var/lib/fleet
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER fleet
ENV FLEET_DATA_DIR=/var/lib/fleet FLEET_API_HOST=0.0.0.0 FLEET_API_PORT=8080
EXPOSE 8080 1883
HEALTHCHECK CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz').status != 200)"
ENTRYPOINT ["fleet"]
CMD ["serve"]
