"""Building cache policy plugins (see cache/plugin_api.h)."""

def _cc_headers_only_impl(ctx):
    # The compilation context (headers, include paths, defines) of `deps`
    # without their linking context: code compiled against it leaves the
    # deps' symbols undefined, to be bound at load time.
    return [cc_common.merge_cc_infos(cc_infos = [
        CcInfo(compilation_context = dep[CcInfo].compilation_context)
        for dep in ctx.attr.deps
    ])]

cc_headers_only = rule(
    implementation = _cc_headers_only_impl,
    attrs = {"deps": attr.label_list(providers = [CcInfo])},
    provides = [CcInfo],
)

def cache_policy_plugin(name, srcs, deps = [], **kwargs):
    """A cache policy plugin: shared library `name` (e.g. "libmy_policy.so").

    Compiled against the engine's headers only (//cache:plugin_sdk); its
    references to the engine resolve against the executable that loads it.

    Args:
      name: the output file name, lib*.so.
      srcs: the plugin's sources; one defines the plugin_api.h entry points.
      deps: further deps; they are linked into the plugin, so never a
        library the engine also links (use their headers through
        cc_headers_only instead).
      **kwargs: passed to cc_binary.
    """
    native.cc_binary(
        name = name,
        srcs = srcs,
        linkshared = 1,
        deps = ["//cache:plugin_sdk"] + deps,
        **kwargs
    )
