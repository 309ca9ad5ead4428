# The Dataflow worker image (--sdk_container_image): Beam's own SDK image for the Beam release this package pins,
# with CUDA TensorFlow, faiss and this package installed at build time, so a worker installs nothing when it
# starts (no --setup_file, no --requirements_file). Build and push it with `make worker-image`.
# tests/test_containers.py holds the tag to the installed apache_beam.__version__ and the TensorFlow pin to the
# installed TensorFlow's major.minor.
FROM apache/beam_python3.11_sdk:2.77.0

# Plain `tensorflow` on a GPU worker falls back to the CPU without a word, and Dataflow's install-nvidia-driver
# brings only the driver: the and-cuda extra brings the CUDA and cuDNN libraries TensorFlow loads, as wheels.
RUN pip install --no-cache-dir "tensorflow[and-cuda]==2.21.*" "faiss-cpu==1.15.1"

WORKDIR /opt/posters
COPY setup.py MANIFEST.in README.md ./
COPY configs configs
COPY pipelines pipelines
COPY trainer trainer
COPY flex_template flex_template
# The requirements above already satisfy setup.py's ranges, so this adds the package and the rest of its
# dependencies without replacing Beam or TensorFlow.
RUN pip install --no-cache-dir . \
 && python -c "import apache_beam, faiss, tensorflow, tensorflow_transform, pipelines.embed.pipeline, \
pipelines.index.pipeline, pipelines.candidates.pipeline; assert apache_beam.__version__ == '2.77.0', \
apache_beam.__version__; assert tensorflow.sysconfig.get_build_info()['is_cuda_build']"

# The entry point stays the base image's /opt/apache/beam/boot, which starts the SDK worker.
