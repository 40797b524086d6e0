"""The machine description benchmark tables and the starter's metrics.json carry."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from annotator import machine


def test_cpu_model_is_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel\t\t: 17\n"
        "model name\t: AMD EPYC 9B14\nflags\t\t: fpu avx512_bf16\n\nprocessor\t: 1\n"
        "model name\t: AMD EPYC 9B14\n"
    )
    assert machine.cpu_model(cpuinfo) == "AMD EPYC 9B14"
    # ARM kernels name it "Model" (after the per-core blocks).
    cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 108.00\n\nModel\t\t: Raspberry Pi 4\n")
    assert machine.cpu_model(cpuinfo) == "Raspberry Pi 4"


def test_cpu_model_falls_back_without_cpuinfo(tmp_path: Path) -> None:
    expected = platform.processor() or platform.machine() or "unknown"
    assert machine.cpu_model(tmp_path / "missing") == expected
    (tmp_path / "empty").write_text("processor\t: 0\nmodel name\t:\n")
    assert machine.cpu_model(tmp_path / "empty") == expected


def test_describe_names_architecture_model_and_cores() -> None:
    text = machine.describe()
    assert text == f"{platform.machine()} ({machine.cpu_model()}), {os.cpu_count()} cores"
