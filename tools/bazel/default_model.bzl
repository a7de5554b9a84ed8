"""default_model: the embedded default model (fetched by tools/setup.sh into
<workspace>/.models, or $QUEST_MODEL_DIR) as an external repository, so tests
can name it as data: @default_model//:gguf.

The file is symlinked, never copied or downloaded. When it is missing the
filegroup is empty and tests that need it report how to fetch it, so the rest
of the workspace still builds."""

def _default_model_impl(ctx):
    model_dir = ctx.os.environ.get("QUEST_MODEL_DIR", "")
    if not model_dir:
        model_dir = str(ctx.path(Label("//:WORKSPACE")).dirname) + "/.models"
    src = ctx.path(model_dir + "/" + ctx.attr.filename)
    srcs = []
    if src.exists:
        ctx.symlink(src, ctx.attr.filename)
        srcs = [ctx.attr.filename]
    ctx.file("WORKSPACE", "workspace(name = %r)\n" % ctx.name)
    ctx.file("BUILD", "\n".join([
        'package(default_visibility = ["//visibility:public"])',
        "exports_files(%r)" % srcs,
        "# Empty when %s was missing at load time: run tools/setup.sh." % str(src),
        "filegroup(name = \"gguf\", srcs = %r)" % srcs,
        "",
    ]))

default_model = repository_rule(
    implementation = _default_model_impl,
    attrs = {
        "filename": attr.string(mandatory = True, doc = "the model file in the model directory"),
    },
    environ = ["QUEST_MODEL_DIR"],
    local = True,
)
