#!/usr/bin/env python3
"""Optional part (3) of scripts/gpu_check.sh: broadcast rate between two processes vs the
device-to-device copy rate measured in the same run.

Two ranks (torch.multiprocessing) join a process group through a TCPStore on 127.0.0.1 and
broadcast a flat uint8 buffer from rank 0 in --bucket_mb slices, as the project's
collective weight transport does (services/weights/collective_transport.cc). Backend
nccl on CUDA (ranks on cuda:0 and cuda:1: NCCL refuses two ranks on one GPU), gloo on the
CPU (--device cpu, the dry run that proves the plumbing). Rank 0 also times a
device-to-device copy of the same buffer (cudaMemcpy within the GPU; a host memcpy on
CPU). Prints one JSON line; the ratio is broadcast GB/s over copy GB/s.

This measures LibTorch's c10d broadcast, not our transport's bookkeeping around it; the
transport itself needs the full (gRPC) build, see docs/gpu.md.
"""
import argparse
import json
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def run(rank, args, queue):
    dev = torch.device(f"cuda:{rank}") if args.device == "cuda" else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                            init_method=f"tcp://127.0.0.1:{args.port}", rank=rank, world_size=2)
    total = args.mb << 20
    bucket = args.bucket_mb << 20
    buf = torch.zeros(total, dtype=torch.uint8, device=dev)
    if rank == 0:
        buf.random_(0, 255)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def broadcast_all():
        for off in range(0, total, bucket):
            dist.broadcast(buf[off:off + bucket], src=0)
        sync()

    broadcast_all()  # warm up (communicator setup)
    dist.barrier()
    best = 1e9
    for _ in range(args.reps):
        dist.barrier()
        t0 = time.perf_counter()
        broadcast_all()
        dist.barrier()
        best = min(best, time.perf_counter() - t0)
    ok = True
    if rank == 1:
        ok = bool(buf.sum().item() > 0)
    if rank == 0:
        dst = torch.empty_like(buf)
        copy_best = 1e9
        for _ in range(args.reps):
            sync()
            t0 = time.perf_counter()
            dst.copy_(buf)
            sync()
            copy_best = min(copy_best, time.perf_counter() - t0)
        queue.put({"backend": dist.get_backend(), "device": args.device, "bytes": total,
                   "bucket_bytes": bucket, "broadcast_gbs": total / best / 1e9,
                   "copy_gbs": total / copy_best / 1e9,
                   "ratio": (total / best) / (total / copy_best)})
    else:
        queue.put({"rank1_received": ok})
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--mb", type=int, default=512, help="buffer MiB (a 124M fp32 model is ~500)")
    ap.add_argument("--bucket_mb", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--port", type=int, default=29517)
    args = ap.parse_args()
    if args.device == "cuda" and torch.cuda.device_count() < 2:
        print(json.dumps({"skipped": "NCCL needs one GPU per rank; this machine has "
                          f"{torch.cuda.device_count()}"}))
        return
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=run, args=(r, args, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    out = {}
    for r in results:
        out.update(r)
    out["ok"] = all(p.exitcode == 0 for p in procs) and out.get("rank1_received", False)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
