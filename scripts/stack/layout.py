"""How the stack lays itself out over GPUs, in this one place: TENSOR_PARALLEL_SIZE GPUs per
replica, GPU_COUNT / TENSOR_PARALLEL_SIZE replicas, which GPUs each replica gets, and the names the
router reaches them by. One server runs the replicas as vLLM's own data parallelism
(`--data-parallel-size`); the `router` profile (scripts/replicas.py) runs each as a container of
its own behind vllm-router. On CPU one server is one replica.

Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

TP_SIZES = (1, 2, 4, 8)  # tensor-parallel sizes Qwen3-8B's 8 KV heads split evenly over
REPLICA_SERVICE = "vllm-{}"  # the router profile's replica services, vllm-0, vllm-1, ...
REPLICA_PORT = 8000  # vLLM's port in each replica container (SERVE_PORT's default)


class LayoutError(ValueError):
    """GPU_COUNT and TENSOR_PARALLEL_SIZE do not go together; str() names the fix."""


@dataclass(frozen=True)
class Layout:
    gpu_count: int  # GPUs the stack uses
    tp: int  # GPUs per replica
    device: str = "cuda"

    def check(self) -> None:
        """LayoutError when GPU_COUNT is not a whole number of replicas (on GPUs)."""
        if self.device == "cuda" and self.gpu_count % self.tp:
            tp, n = self.tp, self.gpu_count
            raise LayoutError(
                f"GPU_COUNT={n} is not a multiple of TENSOR_PARALLEL_SIZE={tp}: each data-parallel "
                f"replica takes {tp} GPUs; fix: GPU_COUNT={max(tp, whole_replicas(n, tp))} in .env "
                f"(or TENSOR_PARALLEL_SIZE=1)"
            )

    @property
    def replicas(self) -> int:
        """Engine groups of TP GPUs each, every GPU used (on CPU, GPU_COUNT counts the router
        profile's replicas)."""
        return self.gpu_count // self.tp

    @property
    def data_parallel_size(self) -> int:
        """vLLM's `--data-parallel-size` in one server: the replicas on GPUs, one on CPU."""
        return self.replicas if self.device == "cuda" else 1

    def device_ids(self) -> list[list[str]]:
        """The GPU indexes of each replica: replica i takes GPUs i*TP .. i*TP + TP - 1."""
        return [[str(i * self.tp + j) for j in range(self.tp)] for i in range(self.replicas)]

    def services(self) -> list[str]:
        """The router profile's replica services."""
        return [REPLICA_SERVICE.format(i) for i in range(self.replicas)]

    def local_workers(self) -> list[str]:
        """The router's URLs of those replicas on the Compose network."""
        return [f"http://{name}:{REPLICA_PORT}" for name in self.services()]


def largest_tp(n: int, kv_heads: int = 8) -> int:
    """The largest tensor-parallel size that n GPUs and kv_heads allow."""
    return max(t for t in TP_SIZES if t <= max(1, n) and kv_heads % t == 0)


def whole_replicas(n: int, tp: int) -> int:
    """The most of n GPUs that make whole replicas of tp GPUs each (a GPU_COUNT that fits)."""
    return Layout(n, tp).replicas * tp
