"""The C library's memory settings for CPU training."""

from __future__ import annotations

import platform

import pytest

from gptiny_cli.hardware.memory import keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_keeps_freed_memory_for_the_next_step():
    assert keep_freed_memory() is True
