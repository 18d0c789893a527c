#!/bin/sh
# Stands in for the CUnit tests when configure did not find CUnit.
echo "CUnit was not found by configure: tests/test-lib and tests/test-threads skipped (install libcunit1-dev)"
exit 77
