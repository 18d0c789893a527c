# `make demo`: a ceremony transcript on a throwaway SoftHSM token under the
# build tree. The script sits with the documentation because it is one: the
# README's first walkthrough, runnable.
EXTRA_DIST += doc/demo.sh

.PHONY: demo
# A demo ceremony on an embedded SoftHSM token in demo/ (see doc/demo.sh).
demo: hsmwrap$(EXEEXT)
	@HSMWRAP_BIN='$(abs_top_builddir)/hsmwrap$(EXEEXT)' \
	SOFTHSM_MODULE='$(SOFTHSM_MODULE)' \
	DEMO_DIR='$(abs_top_builddir)/demo' \
	$(SHELL) $(top_srcdir)/doc/demo.sh

clean-local: clean-demo
.PHONY: clean-demo
clean-demo:
	-rm -rf '$(abs_top_builddir)/demo'
