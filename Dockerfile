# Flex Template launcher for the nightly chain (`posters nightly`): the launcher runs flex_template/launch.py,
# which launches the embed, index and candidates Dataflow jobs one after another and waits for each.
# Build and register it with `make flex-template`; see docs/scheduling.md for how a scheduler triggers it.
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base

ARG WORKDIR=/template
WORKDIR ${WORKDIR}

COPY setup.py MANIFEST.in README.md ./
COPY configs configs
COPY pipelines pipelines
COPY trainer trainer
COPY flex_template flex_template
RUN pip install --no-cache-dir .

# The launcher stages this package for the workers with --setup_file (what `make dataflow-*` pass too).
ENV FLEX_TEMPLATE_PYTHON_PY_FILE="${WORKDIR}/flex_template/launch.py"
ENV FLEX_TEMPLATE_PYTHON_SETUP_FILE="${WORKDIR}/setup.py"
