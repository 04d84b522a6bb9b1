#!/usr/bin/env bash
# Installs the test S3 server (versitygw, pinned) into bin/tools/ (about
# 2.5 min on two cores the first time; nothing after). Tests find it
# through internal/testutil (S3Server).
exec "$(dirname "$0")/install-gotool.sh" versitygw github.com/versity/versitygw/cmd/versitygw v1.8.0
