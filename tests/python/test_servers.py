"""Calls rlhf-reward-server and rlhf-reference-server from Python (another language
than the servers): stubs are generated from our .proto files at test time with protoc
and Debian's grpc_python_plugin, both binaries are started on port 0 and read back.

Run by ctest; env RLHF_BIN_DIR (server binaries) and RLHF_SOURCE_DIR (protos).
"""
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import unittest

import grpc

SOURCE_DIR = os.environ.get("RLHF_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BIN_DIR = os.environ.get("RLHF_BIN_DIR", os.path.join(SOURCE_DIR, "build", "bin"))
GEN_DIR = tempfile.mkdtemp(prefix="rlhf_py_stubs_")


def generate_stubs():
    proto_dir = os.path.join(SOURCE_DIR, "proto")
    files = [os.path.join(proto_dir, "rlhf", "v1", f) for f in ("common.proto", "reward.proto", "reference.proto")]
    subprocess.run(
        ["protoc", f"-I{proto_dir}", f"--python_out={GEN_DIR}", f"--grpc_python_out={GEN_DIR}",
         "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin", *files],
        check=True)
    sys.path.insert(0, GEN_DIR)


generate_stubs()
from rlhf.v1 import common_pb2, reference_pb2, reference_pb2_grpc, reward_pb2, reward_pb2_grpc  # noqa: E402


class Server:
    """A server binary on port 0; the port is read from its 'listening on' line."""

    def __init__(self, binary, *flags):
        self.port_file = os.path.join(GEN_DIR, os.path.basename(binary) + ".port")
        self.proc = subprocess.Popen(
            [os.path.join(BIN_DIR, binary), "--preset=tiny", "--port=0",
             f"--port_file={self.port_file}", "--max_wait_ms=1", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        if not ready:
            self.proc.kill()
            raise RuntimeError(f"{binary} did not start: {self.proc.stderr.read()}")
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"{binary}: unexpected first line {line!r}: {self.proc.stderr.read()}")
        self.port = int(line.rsplit(":", 1)[1])
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")

    def stop(self):
        self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def seq(prompt, response):
    return common_pb2.TokenSequence(prompt=list(prompt.encode()), response=list(response.encode()))


class ServersFromPython(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.reward = Server("rlhf-reward-server", "--scorers=gold:0.5")
        cls.reference = Server("rlhf-reference-server")

    @classmethod
    def tearDownClass(cls):
        # Graceful shutdown on SIGTERM exits 0.
        assert cls.reward.stop() == 0
        assert cls.reference.stop() == 0

    def test_port_file_matches(self):
        with open(self.reward.port_file) as f:
            self.assertEqual(int(f.read().strip()), self.reward.port)

    def test_reward_score(self):
        stub = reward_pb2_grpc.RewardServiceStub(self.reward.channel)
        request = reward_pb2.RewardScoreRequest(sequences=[
            seq("Name two red fruits.", "Cherry and apple."),
            seq("Name two red fruits.", "apple apple apple")])
        response = stub.Score(request, timeout=30)
        self.assertEqual(len(response.rewards), 2)
        self.assertTrue(all(math.isfinite(r) for r in response.rewards))
        self.assertEqual(set(response.components.keys()), {"rm", "gold"})
        gold = response.components["gold"].values
        rm = response.components["rm"].values
        for i in range(2):
            self.assertAlmostEqual(response.rewards[i], rm[i] + 0.5 * gold[i], places=5)
        self.assertGreater(gold[0], gold[1])

    def test_reward_invalid_argument_names_field(self):
        stub = reward_pb2_grpc.RewardServiceStub(self.reward.channel)
        bad = common_pb2.TokenSequence(prompt=[1, 2], response=[3, 300])
        with self.assertRaises(grpc.RpcError) as ctx:
            stub.Score(reward_pb2.RewardScoreRequest(sequences=[seq("a", "b"), bad]), timeout=30)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("sequences[1].response[1]: token id 300 >= vocab size 259", ctx.exception.details())

    def test_reference_score_k1_and_k3(self):
        stub = reference_pb2_grpc.ReferenceServiceStub(self.reference.channel)
        tokens = seq("Name one fruit.", "Apple.")
        policy = [-5.0 - 0.1 * i for i in range(len(tokens.response))]
        results = {}
        for est in (reference_pb2.KL_ESTIMATOR_K1, reference_pb2.KL_ESTIMATOR_K3):
            request = reference_pb2.ReferenceScoreRequest(
                sequences=[reference_pb2.ReferenceSequence(tokens=tokens, policy_logprobs=policy)],
                kl_estimator=est)
            results[est] = stub.Score(request, timeout=30).results[0]
        k1 = results[reference_pb2.KL_ESTIMATOR_K1]
        k3 = results[reference_pb2.KL_ESTIMATOR_K3]
        self.assertEqual(len(k1.ref_logprobs), len(policy))
        for t in range(len(policy)):
            self.assertLess(k1.ref_logprobs[t], 0.0)
            d = policy[t] - k1.ref_logprobs[t]
            self.assertAlmostEqual(k1.kl[t], d, places=4)
            self.assertAlmostEqual(k3.kl[t], math.expm1(-d) + d, delta=1e-4 * max(1.0, abs(d)))

    def test_reference_length_mismatch(self):
        stub = reference_pb2_grpc.ReferenceServiceStub(self.reference.channel)
        request = reference_pb2.ReferenceScoreRequest(sequences=[
            reference_pb2.ReferenceSequence(tokens=seq("ab", "cd"), policy_logprobs=[-1.0])])
        with self.assertRaises(grpc.RpcError) as ctx:
            stub.Score(request, timeout=30)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("sequences[0].policy_logprobs: 1 values for 2 response tokens", ctx.exception.details())

    def test_health_and_reflection(self):
        identity = lambda b: b  # noqa: E731 hand-encoded grpc.health.v1 / reflection messages
        for server, service in ((self.reward, b"rlhf.v1.RewardService"),
                                (self.reference, b"rlhf.v1.ReferenceService")):
            check = server.channel.unary_unary("/grpc.health.v1.Health/Check",
                                               request_serializer=identity,
                                               response_deserializer=identity)
            self.assertEqual(check(b"", timeout=30), b"\x08\x01")  # status: SERVING
            request = b"\x0a" + bytes([len(service)]) + service  # HealthCheckRequest.service
            self.assertEqual(check(request, timeout=30), b"\x08\x01")
            reflect = server.channel.stream_stream(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                request_serializer=identity, response_deserializer=identity)
            # ServerReflectionRequest { list_services = 7: "*" }
            replies = list(reflect(iter([b"\x3a\x01*"]), timeout=30))
            self.assertEqual(len(replies), 1)
            self.assertIn(service, replies[0])


if __name__ == "__main__":
    unittest.main(verbosity=2)
