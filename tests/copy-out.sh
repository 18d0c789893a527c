# tests/copy-out.sh - sourced by suites that run a built program as another
# user (httpd as nobody, the non-dumpable check): that user may not reach
# the build tree (CI's clone may sit under /root, mode 0700).
#
# copy_out FILE DIR: FILE (a real binary or module, not a libtool wrapper:
# see unwrapped_hsmwrap in tests/lib.sh) and the uninstalled libhsmwrap
# beside it into DIR, made readable. Prints the copy's path. Run it with
# LD_LIBRARY_PATH=DIR.
copy_out() {
	cp -L "$1" "$2/" || return 1
	if [ -e "$(dirname "$1")/libhsmwrap.so.0" ]; then
		cp -L "$(dirname "$1")/libhsmwrap.so.0" "$2/" || return 1
	fi
	chmod a+rX "$2" "$2"/* || return 1
	echo "$2/$(basename "$1")"
}
