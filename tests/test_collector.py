"""Tests for digest.collector: the collector paused for a block and restored after it, even when the block raises."""

from __future__ import annotations

import gc

import pytest

from digest.collector import paused_collector


def test_paused_collector_pauses_and_restores() -> None:
    assert gc.isenabled()
    with paused_collector():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_paused_collector_restores_after_an_error() -> None:
    with pytest.raises(ZeroDivisionError), paused_collector():
        1 / 0  # noqa: B018
    assert gc.isenabled()


def test_paused_collector_leaves_a_paused_collector_paused() -> None:
    gc.disable()
    try:
        with paused_collector():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the caller paused it: still the caller's to restart
    finally:
        gc.enable()
