"""cuda_library: compiles .cu files with the system nvcc (/usr/local/cuda).

Each .cu becomes one genrule running nvcc (-O3, C++17, Hopper sm_90a machine
code), and the objects are wrapped in a cc_library that links the CUDA
runtime and cuBLASLt. Bazel has no CUDA toolchain offline; this keeps .cu
code compiling and linking in CI (no GPU there) so it cannot rot.

Keep .cu files free of Abseil/glog/protobuf: nvcc compiles them with only the
headers listed in `hdrs`/`srcs` and the CUDA toolkit's own.
"""

CUDA_PATH = "/usr/local/cuda"

# -gencode instead of -arch=sm_90a: with CUDA 13.0 the shorthand also runs a
# plain sm_90 pass that rejects sm_90a-only instructions (wgmma, setmaxnreg).
NVCC_FLAGS = [
    "-O3",
    "-std=c++17",
    "-gencode=arch=compute_90a,code=sm_90a",
    "-Xcompiler",
    "-fPIC",
    "-I.",
]

# .cc files that include CUDA runtime / cuBLASLt headers depend on
# @cuda//:cuda_runtime (headers + -lcudart -lcublasLt, rpath to the toolkit);
# Bazel refuses `-isystem /usr/local/cuda/include` (outside the execroot).
CUDA_DEPS = ["@cuda//:cuda_runtime"]

def cuda_library(name, srcs, hdrs = [], nvcc_hdrs = [], deps = [], nvcc_flags = [], visibility = None, **kwargs):
    """A cc_library `name` from .cu `srcs` (plus .h `hdrs` they include).

    Args:
      name: the cc_library.
      srcs: .cu files of this package.
      hdrs: headers the .cu files include (given to the sandbox and exported).
      nvcc_hdrs: headers of other packages the .cu files include (exported
        files; their cc_library belongs in deps for the C++ side).
      deps: cc_library deps of the wrapper (headers only as far as nvcc goes).
      nvcc_flags: extra nvcc flags.
      visibility: of the cc_library.
      **kwargs: passed to the cc_library.
    """
    objs = []
    for src in srcs:
        if not src.endswith(".cu"):
            fail("cuda_library srcs must be .cu files, got " + src)
        stem = src[:-len(".cu")]
        obj = "_" + name + "_" + stem + ".o"
        native.genrule(
            name = "_" + name + "_" + stem + "_nvcc",
            srcs = [src] + hdrs + nvcc_hdrs,
            outs = [obj],
            cmd = " ".join([CUDA_PATH + "/bin/nvcc"] + NVCC_FLAGS + nvcc_flags + [
                "-I$(GENDIR)",
                "-c",
                "$(location " + src + ")",
                "-o",
                "$@",
            ]),
            message = "nvcc " + src,
        )
        objs.append(obj)
    native.cc_library(
        name = name,
        srcs = objs,
        hdrs = hdrs,
        deps = deps + CUDA_DEPS,
        visibility = visibility,
        **kwargs
    )
