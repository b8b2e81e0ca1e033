import functools
import http.server
import importlib
import os
import threading

import pytest
import torch

torch.set_num_threads(1)  # small models: one thread is as fast, and timings do not fight over 2 cores
# Processes the tests start (sweep pools, Ray workers, the CLI) inherit one thread too: tests that
# compare their results with this process's need the same kernels, and a matrix product may
# round differently when it is split over another number of threads.
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Every test module starts on one thread: a CLI call in an earlier module may have chosen more
    (``--threads``, or the idle cores for a convolutional model)."""
    torch.set_num_threads(1)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    """What the suite runs on, in pytest's header (and so at the start of CI's test output)."""
    import platform

    import numpy

    try:
        import torchvision
        tv = torchvision.__version__
    except Exception as exc:  # e.g. PyPI's torchvision beside a torch it was not built for
        tv = f"not importable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return [f"continual suite on: python {platform.python_version()}, torch {torch.__version__} "
            f"(CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}), numpy {numpy.__version__}, "
            f"torchvision {tv}, {platform.machine()} {os.cpu_count()} cores"]


def importable(name):
    """The module ``name``, or a skip that says why it cannot be imported here.

    Not only ``ImportError``: PyPI's torchvision raises ``RuntimeError: operator torchvision::nms
    does not exist`` beside a torch build it was not made for (the CPU-only torch 2.13.0 wheel),
    and avalanche imports torchvision. Those tests cannot run in such an environment; the rest
    of the suite must.
    """
    try:
        return importlib.import_module(name)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        pytest.skip(f"{name} cannot be imported here ({type(exc).__name__}: {first})")


@pytest.fixture(scope="module")
def torchvision():
    return importable("torchvision")


@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving ``tmp_path / "served"``; yields (folder, base URL)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
