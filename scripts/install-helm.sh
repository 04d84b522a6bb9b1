#!/usr/bin/env bash
# Installs helm (pinned) into bin/tools/ (about 3 min on two cores the
# first time; nothing after), so that deploy's tests render the chart with
# it instead of only reading its templates as text.
exec "$(dirname "$0")/install-gotool.sh" helm helm.sh/helm/v3/cmd/helm v3.22.0
