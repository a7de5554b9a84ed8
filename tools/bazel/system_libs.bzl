"""A repository of link-only cc_library targets for system libraries.

Each target's link line comes from pkg-config when the workspace loads, so it
stays true to whatever Debian installed (gRPC alone pulls ~70 libraries in an
order no hand-written list keeps right)."""

def _system_libs_impl(ctx):
    lines = ['package(default_visibility = ["//visibility:public"])', ""]
    for name, modules in ctx.attr.pkg_config.items():
        result = ctx.execute(["pkg-config", "--libs"] + modules.split(" "))
        if result.return_code != 0:
            fail("pkg-config --libs %s failed (run tools/setup.sh): %s" % (modules, result.stderr))
        flags = [f for f in result.stdout.strip().split(" ") if f]
        flags += [f for f in ctx.attr.extra_linkopts.get(name, "").split(" ") if f]
        lines.append("cc_library(name = %r, linkopts = %r)" % (name, flags))
    for name, opts in ctx.attr.extra_linkopts.items():
        if name not in ctx.attr.pkg_config:
            lines.append("cc_library(name = %r, linkopts = %r)" % (name, opts.split(" ")))
    ctx.file("WORKSPACE", "workspace(name = %r)\n" % ctx.name)
    ctx.file("BUILD", "\n".join(lines) + "\n")

system_libs = repository_rule(
    implementation = _system_libs_impl,
    attrs = {
        "pkg_config": attr.string_dict(doc = "target name -> space-separated pkg-config modules"),
        "extra_linkopts": attr.string_dict(doc = "target name -> extra link flags (libraries with no .pc file)"),
    },
    environ = ["PKG_CONFIG_PATH"],
    local = True,
)
