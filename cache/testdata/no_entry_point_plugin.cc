// A shared library without the cache plugin entry points.

extern "C" int not_a_cache_plugin(void) { return 42; }
