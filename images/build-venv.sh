#!/bin/sh
# Build step shared by every service image: install one workspace package and only its dependencies,
# exactly as pinned in uv.lock, into /opt/venv (non-editable, bytecode compiled, no dev tools).
#   build-venv.sh PACKAGE VARIANT     VARIANT cpu: torch from PyTorch's CPU wheels (no CUDA libraries)
#                                     VARIANT cuda: torch as locked (PyPI's CUDA build)
set -eu
package=$1
variant=${2:-cpu}
if [ -f /run/build-ca.crt ]; then  # a TLS-intercepting proxy's CA, mounted by images/build.sh, not kept in the image
    export SSL_CERT_FILE=/run/build-ca.crt PIP_CERT=/run/build-ca.crt
fi
python3.11 -m venv /opt/uv
/opt/uv/bin/pip install --quiet --disable-pip-version-check "uv==${UV_VERSION:-0.13.8}"
export UV_PROJECT_ENVIRONMENT=/opt/venv UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1
/opt/uv/bin/uv sync --frozen --no-dev --no-editable --package "$package" --python python3.11
torch=$(/opt/uv/bin/uv export --frozen --no-dev --no-hashes --package "$package" | sed -n 's/^torch==\([^ ;]*\).*/\1/p')
if [ "$variant" = cpu ] && [ -n "$torch" ]; then
    # same torch version, CPU build: drops the multi-GB CUDA libraries the CPU pools never use
    cuda_wheels=$(/opt/uv/bin/uv pip freeze --python /opt/venv/bin/python | sed -n 's/^\(nvidia-[^=]*\|triton\)==.*/\1/p')
    [ -z "$cuda_wheels" ] || /opt/uv/bin/uv pip uninstall --python /opt/venv/bin/python $cuda_wheels
    /opt/uv/bin/uv pip install --python /opt/venv/bin/python --no-deps --reinstall \
        --index-url https://download.pytorch.org/whl/cpu "torch==${torch}+cpu"
fi
/opt/venv/bin/python -c "import importlib, sys; importlib.import_module(sys.argv[1])" "$(echo "$package" | sed 's/^worldloom-/worldloom./')"
