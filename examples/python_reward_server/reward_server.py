#!/usr/bin/python3
"""A reward function in Python, served as rlhf.v1.RewardService.

The extension point for reward functions without C++: any server that answers
RewardService.Score can be one term of the job's reward (reward_server.scorers entry
{type: remote, address: "host:port", weight: w}); rlhf-reward-server forwards each batch
here and adds w * your score to the weighted sum. Edit `reward()` below.

    /usr/bin/python3 examples/python_reward_server/reward_server.py --port=50070

Needs Debian's python3-grpcio and python3-protobuf, plus protoc and grpc_python_plugin
(protobuf-compiler, protobuf-compiler-grpc): the Python stubs are generated from
proto/rlhf/v1 into --stubs_dir at start-up (nothing generated is checked in).

Token ids: requests carry token ids of the job's tokenizer. With the built-in byte
tokenizer, ids 0..255 are the UTF-8 bytes and ids >= 256 are BOS/EOS/PAD (decode_bytes
below). With another tokenizer, decode with that tokenizer's files.

Prints "listening on HOST:PORT" once serving (and writes --port_file); SIGTERM/SIGINT
stop it cleanly.
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "..", "..", "proto")


def generate_stubs(stubs_dir):
    """protoc + grpc_python_plugin -> stubs_dir/rlhf/v1/*_pb2*.py (once)."""
    if not os.path.exists(os.path.join(stubs_dir, "rlhf", "v1", "reward_pb2_grpc.py")):
        os.makedirs(stubs_dir, exist_ok=True)
        files = [os.path.join(PROTO_DIR, "rlhf", "v1", f) for f in ("common.proto", "reward.proto")]
        subprocess.run(["protoc", f"-I{PROTO_DIR}", f"--python_out={stubs_dir}",
                        f"--grpc_python_out={stubs_dir}",
                        "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin", *files],
                       check=True)
    sys.path.insert(0, stubs_dir)


def decode_bytes(ids):
    """The byte tokenizer's decode: ids < 256 are bytes; specials are dropped."""
    return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


# ---- the reward function: edit me -------------------------------------------------------
def reward(prompt, response, args):
    """Score one response (text) to its prompt (text, as rendered by prompt_template).

    This example prefers answers that end with a period and are close to
    --target_length bytes; --offset is added to every score (handy to see a scorer's
    contribution in the learner's reward).
    """
    text = response.strip()
    period = 1.0 if text.endswith(".") else 0.0
    length = -abs(len(text) - args.target_length) / args.target_length
    return args.offset + period + length
# -----------------------------------------------------------------------------------------


def make_servicer(args):
    import grpc
    from rlhf.v1 import reward_pb2, reward_pb2_grpc

    class Servicer(reward_pb2_grpc.RewardServiceServicer):
        def Score(self, request, context):
            if not request.sequences:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "sequences: empty")
            rewards = []
            for i, seq in enumerate(request.sequences):
                if not seq.response:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"sequences[{i}].response: empty")
                rewards.append(reward(decode_bytes(seq.prompt), decode_bytes(seq.response), args))
            response = reward_pb2.RewardScoreResponse(rewards=rewards)
            response.components["python"].values.extend(rewards)
            return response

    return Servicer()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    parser.add_argument("--port_file", default="", help="write the bound port here once serving")
    parser.add_argument("--stubs_dir", default="", help="where to generate the Python stubs")
    parser.add_argument("--target_length", type=float, default=40.0)
    parser.add_argument("--offset", type=float, default=0.0)
    args = parser.parse_args()
    generate_stubs(args.stubs_dir or tempfile.mkdtemp(prefix="rlhf_reward_stubs_"))

    import grpc
    from rlhf.v1 import reward_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    reward_pb2_grpc.add_RewardServiceServicer_to_server(make_servicer(args), server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    if port == 0:
        sys.exit(f"cannot listen on {args.host}:{args.port}")
    server.start()
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    print(f"listening on {args.host}:{port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=5).wait()


if __name__ == "__main__":
    main()
