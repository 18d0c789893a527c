# tests/copy-out.sh - sourced by suites that run a built program as another
# user (httpd as nobody, the non-dumpable check): that user may not reach
# the build tree (CI's clone may sit under /root, mode 0700).
#
# copy_out FILE DIR: FILE (the binary behind a libtool wrapper, if FILE is
# one) and the uninstalled libhsmwrap beside it into DIR, made readable.
# Prints the copy's path. Run it with LD_LIBRARY_PATH=DIR.
copy_out() {
	co_src=$1
	if [ -f "$(dirname "$1")/.libs/$(basename "$1")" ]; then
		co_src=$(dirname "$1")/.libs/$(basename "$1")
	fi
	cp -L "$co_src" "$2/" || return 1
	if [ -e "$(dirname "$co_src")/libhsmwrap.so.0" ]; then
		cp -L "$(dirname "$co_src")/libhsmwrap.so.0" "$2/" || return 1
	fi
	chmod a+rX "$2" "$2"/* || return 1
	echo "$2/$(basename "$co_src")"
}
