# Example configuration. Installed under another name so that `make install`
# never replaces an administrator's $(sysconfdir)/hsmwrap.conf.
hwconfexampledir = $(sysconfdir)
hwconfexample_DATA = conf/hsmwrap.conf.example
EXTRA_DIST += conf/hsmwrap.conf
CLEANFILES += conf/hsmwrap.conf.example
conf/hsmwrap.conf.example: $(srcdir)/conf/hsmwrap.conf
	$(AM_V_GEN)$(MKDIR_P) conf && cp -f $(srcdir)/conf/hsmwrap.conf $@
