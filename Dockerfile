# Arcade STEM API images. Two targets from one file:
#   docker build --target lambda -t arcade-api:lambda .   # AWS Lambda (what `sam build` makes)
#   docker build --target server -t arcade-api:server .   # gunicorn on port 5000, anywhere
#   docker run --rm -p 5000:5000 --env-file .env -v arcade-data:/data arcade-api:server
# Settings and secrets come from the environment at run time: none are baked in (.dockerignore
# lets only api/ and requirements/ into the build context).

ARG PYTHON_VERSION=3.12

# ---- Lambda --------------------------------------------------------------------------------
FROM public.ecr.aws/lambda/python:${PYTHON_VERSION} AS lambda-deps
COPY requirements/runtime.txt /tmp/runtime.txt
# Pinned and complete (--no-deps): the image holds exactly the lock file.
RUN pip install --no-cache-dir --no-deps --only-binary=:all: \
        --requirement /tmp/runtime.txt --target /opt/task

FROM public.ecr.aws/lambda/python:${PYTHON_VERSION} AS lambda
COPY --from=lambda-deps /opt/task ${LAMBDA_TASK_ROOT}
COPY api/ ${LAMBDA_TASK_ROOT}/api/
# /var/task is read-only at run time: compile now, or every cold start compiles again.
RUN python -m compileall -q "${LAMBDA_TASK_ROOT}/api"
CMD ["api.lambda_handler.handler"]

# ---- Server (gunicorn) ---------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS server-deps
COPY requirements/runtime.txt /tmp/runtime.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps --only-binary=:all: \
        --requirement /tmp/runtime.txt

FROM python:${PYTHON_VERSION}-slim AS server
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STORE_URL=sqlite:////data/arcade.db
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin arcade \
    && mkdir /data \
    && chown arcade /data
COPY --from=server-deps /opt/venv /opt/venv
WORKDIR /app
COPY api/ /app/api/
RUN python -m compileall -q /app/api
USER 10001
VOLUME ["/data"]
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/status', timeout=4)"]
# Several workers share the SQLite ledger safely (WAL); threads serve while one waits on a PUBACK.
CMD ["gunicorn", "--bind", "0.0.0.0:5000", "--workers", "2", "--threads", "4", \
     "--access-logfile", "-", "api:create_app()"]
