# The MariaDB key-management plugin in a real mariadbd (issue 11). Skips
# when MariaDB is not installed, unless HSMWRAP_REQUIRE_MARIADB=1 (CI).
EXTRA_DIST += tests/test-mariadb.sh tests/mariadb.mk
TESTS += tests/test-mariadb.sh
