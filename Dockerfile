# The replicator image: one image for listen, apply, snapshot, replay, status and dlq (the Helm chart's args pick one).
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY replicator ./replicator
COPY schemas ./schemas
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
# Numeric, non-root, matching the chart's podSecurityContext (runAsUser/runAsGroup 10001).
RUN groupadd --gid 10001 replicator && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin replicator
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 9108
ENTRYPOINT ["replicator"]
CMD ["--help"]
