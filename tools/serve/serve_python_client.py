"""A Python client of the Generation service, its stubs generated from
proto/generation.proto alone, checking the server's answers.

  PYTHONPATH=bazel-bin/tools/serve/py python3 serve_python_client.py --target 127.0.0.1:50051

The model must be the tiny checkpoint tests/fixtures/hf_tiny/gqa (context 64,
vocabulary 128, no tokenizer). Exits non-zero on the first failed check.
"""

import argparse
import sys

import grpc

from proto import generation_pb2
from proto import generation_pb2_grpc


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--tls_root", help="PEM root certificate: connect with TLS")
    args = parser.parse_args()

    if args.tls_root:
        with open(args.tls_root, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(args.target, credentials,
                                      options=[("grpc.ssl_target_name_override", "localhost")])
    else:
        channel = grpc.insecure_channel(args.target)
    stub = generation_pb2_grpc.GenerationStub(channel)

    info = stub.GetModelInfo(generation_pb2.GetModelInfoRequest(), timeout=30)
    check(info.context_length == 64, f"context_length {info.context_length}")
    check("dense" in info.cache_policies, f"cache_policies {list(info.cache_policies)}")

    request = generation_pb2.GenerateRequest(
        token_ids=generation_pb2.TokenIds(ids=[5, 6, 7, 8, 9]),
        sampling=generation_pb2.SamplingParams(max_tokens=12))
    unary = stub.Generate(request, timeout=30)
    check(len(unary.token_ids) == 12, f"unary tokens {list(unary.token_ids)}")

    ids, final, after_final = [], None, 0
    for message in stub.GenerateStream(request, timeout=30):
        if final is not None:
            after_final += 1
        if message.WhichOneof("event") == "token":
            ids.append(message.token.id)
        else:
            final = message.final
    check(ids == list(unary.token_ids), f"stream {ids} != unary {list(unary.token_ids)}")
    check(final is not None and after_final == 0, "the stream ends with one final message")
    check(list(final.token_ids) == ids, "final token_ids")
    check(final.finish_reason == generation_pb2.LENGTH,
          f"finish_reason {generation_pb2.FinishReason.Name(final.finish_reason)}")
    check(final.usage.prompt_tokens == 5 and final.usage.generated_tokens == 12, f"usage {final.usage}")

    bad = generation_pb2.GenerateRequest(token_ids=generation_pb2.TokenIds(ids=[3]),
                                         sampling=generation_pb2.SamplingParams(max_tokens=0))
    try:
        stub.Generate(bad, timeout=30)
        check(False, "max_tokens 0 was accepted")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, f"max_tokens 0: {e.code()}")
        check("sampling.max_tokens" in e.details(), f"max_tokens 0: {e.details()}")

    print(f"serve_python_client: {args.target}: ok ({len(ids)} streamed tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
