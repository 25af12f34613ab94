#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Runs the DHT simulation matrix of bench/dht/README.md: 1 000 and 10 000 nodes, 0 %, 10 % and 30 %
# of the nodes killed after the network formed. Usage: bench/dht/run.sh BUILD_DIR [SIZES]
# (a release build without sanitizers: meson setup build-bench --buildtype=release).
set -e
build=${1:?usage: $0 BUILD_DIR [SIZES]}
sizes=${2:-"1000 10000"}
ninja -C "$build" bench/dht/dht-sim >/dev/null
for n in $sizes; do
        for churn in 0 10 30; do
                "$build/bench/dht/dht-sim" --nodes "$n" --churn "$churn" --lookups 1000 --announces 100
                echo
        done
done
