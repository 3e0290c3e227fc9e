"""The weight-gradient worker: staging overlapped with the forward, and the main thread taking
queued gradient GEMMs at the end of a backward, with the bits of a one-thread run."""

from __future__ import annotations

import threading

import numpy as np

from anetrain.model.config import ModelConfig
from anetrain.model.params import init_params
from anetrain.train.pipeline import DynamicPipeline, GradSink

CFG = ModelConfig(
    dim=32, n_layers=3, n_heads=4, n_kv_heads=2, hidden_dim=64, vocab_size=64, seq_len=16
)
SEQ = np.random.default_rng(5).integers(0, CFG.vocab_size, CFG.seq_len + 1)


class ThreadRecordingSink(GradSink):
    """A full-training sink that records which thread added each projection's gradient."""

    def __init__(self, grads) -> None:
        super().__init__(grads)
        self.threads: dict[tuple[str, int], str] = {}

    def matmul(self, layer, name, dout, x, g) -> None:
        self.threads[(name, layer)] = threading.current_thread().name
        super().matmul(layer, name, dout, x, g)


def one_window(pipe: DynamicPipeline, block_worker: bool, hook=None, windows: int = 1):
    params = init_params(CFG, seed=3)
    grads = params.zeros_like()
    sink = ThreadRecordingSink(grads)
    pipe.stage_weights(params)
    pipe.wait()
    release = threading.Event()
    if block_worker:  # everything deferred from here stays queued until the release
        pipe._pool.submit(release.wait)
    for _ in range(windows):
        pipe.forward_backward(params, sink, SEQ[:-1], SEQ[1:], 256.0, 1 / 256, hook)
    taker = threading.Thread(target=pipe.wait)
    taker.start()
    taker.join(timeout=3.0)  # the waiting thread takes what it may, then waits for the rest
    release.set()
    taker.join()
    pipe.wait()
    return grads.flat.copy(), sink.threads


def test_queued_gradients_taken_by_the_waiting_thread_give_the_same_bits() -> None:
    reference, _ = one_window(DynamicPipeline(CFG, backend="sim", overlap_blas=False), False)
    for windows in (1, 2):
        pipe = DynamicPipeline(CFG, backend="sim")
        got, threads = one_window(pipe, block_worker=True, windows=windows)
        pipe.close()
        ref = reference
        if windows == 2:
            ref, _ = one_window(
                DynamicPipeline(CFG, backend="sim", overlap_blas=False), False, windows=2
            )
        assert np.array_equal(got.view(np.uint32), ref.view(np.uint32))
        takers = set(threads.values())
        if windows == 1:  # every projection's gradient is written once: all may be taken
            assert all(not name.startswith("dw") for name in takers), takers
        else:  # the same gradients twice (two windows): left in order to the worker
            assert all(name.startswith("dw") for name in takers), takers


def test_nothing_is_taken_while_a_job_that_must_follow_the_others_is_queued() -> None:
    order: list[object] = []
    pipe = DynamicPipeline(CFG, backend="sim")
    _, threads = one_window(pipe, block_worker=True, hook=order.append)
    pipe.close()
    assert all(name.startswith("dw") for name in threads.values())
    assert order == [2, 1, 0, None]


def test_the_tied_classifier_and_the_embedding_share_one_gradient_key() -> None:
    for tied in (True, False):
        cfg = ModelConfig(**{**CFG.__dict__, "tied_embeddings": tied})
        sink = GradSink(init_params(cfg, seed=1).zeros_like())
        keys = {DynamicPipeline._tensor_key(sink, n) for n in ("classifier", "embed")}
        assert len(keys) == (1 if tied else 2)


def test_staging_runs_on_the_worker_and_each_layer_waits_for_its_own() -> None:
    pipe = DynamicPipeline(CFG, backend="sim")
    params = init_params(CFG, seed=3)
    release = threading.Event()
    pipe._pool.submit(release.wait)
    pipe.stage_weights(params)  # returns with every layer's staging still queued
    assert len(pipe._staging) == CFG.n_layers
    assert not any(job.done() for job in pipe._staging)
    release.set()
    grads = params.zeros_like()
    loss = pipe.forward_backward(params, grads, SEQ[:-1], SEQ[1:], 256.0, 1 / 256)
    pipe.wait()
    pipe.close()
    ref_pipe = DynamicPipeline(CFG, backend="sim", overlap_blas=False)
    ref_grads = params.zeros_like()
    ref_pipe.stage_weights(params)
    ref_loss = ref_pipe.forward_backward(params, ref_grads, SEQ[:-1], SEQ[1:], 256.0, 1 / 256)
    ref_pipe.close()
    assert loss == ref_loss
    assert np.array_equal(grads.flat.view(np.uint32), ref_grads.flat.view(np.uint32))


def test_closing_one_pipeline_keeps_the_blas_limit_of_another_open() -> None:
    from threadpoolctl import threadpool_info

    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    before = blas_threads()
    first, second = DynamicPipeline(CFG, backend="sim"), DynamicPipeline(CFG, backend="sim")
    assert blas_threads() == {1}
    first.close()
    assert blas_threads() == {1}  # the second one's worker still runs beside the main thread
    second.close()
    assert blas_threads() == before
