"""cc_grpc_proto: compiles .proto files with the system protoc and
grpc_cpp_plugin (the native proto rules need @com_google_protobuf, which
cannot be fetched offline)."""

def cc_grpc_proto(name, srcs, deps = [], grpc = False, visibility = None):
    """Makes cc_library `name` from `srcs` (.proto files of this package).

    Args:
      name: the cc_library.
      srcs: .proto files; imports resolve from the workspace root.
      deps: cc_grpc_proto targets whose protos these import.
      grpc: also generate gRPC service stubs.
      visibility: of the cc_library.
    """
    bases = [s[:-len(".proto")] for s in srcs]
    outs = [b + ".pb.h" for b in bases] + [b + ".pb.cc" for b in bases]
    cmd = "/usr/bin/protoc -I. --cpp_out=$(GENDIR)"
    if grpc:
        outs += [b + ".grpc.pb.h" for b in bases] + [b + ".grpc.pb.cc" for b in bases]
        cmd += " --grpc_out=$(GENDIR) --plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin"
    native.genrule(
        name = name + "_gen",
        srcs = srcs + [d + "_srcs" for d in deps],
        outs = outs,
        cmd = cmd + " " + " ".join(["$(location %s)" % s for s in srcs]),
    )
    native.filegroup(name = name + "_srcs", srcs = srcs + [d + "_srcs" for d in deps], visibility = visibility)
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        deps = deps + ["@system_libs//:protobuf"] + (["@system_libs//:grpc"] if grpc else []),
        visibility = visibility,
    )
