# The layering of the sources (doc/ARCHITECTURE.md): tests/check-layers.py
# reads `nm` of the built objects and the one table tests/layers.txt, and
# fails on a call into a higher layer or a circle of files. It first
# checks itself on a tiny tree it compiles (--self-test), so the check is
# known to be able to fail.
TESTS += tests/check-layers.py
TEST_EXTENSIONS += .py
PY_LOG_COMPILER = $(PYTHON3)
EXTRA_DIST += tests/check-layers.py tests/layers.txt tests/layers.mk
