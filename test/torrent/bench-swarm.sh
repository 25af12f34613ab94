#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Throughput of the peer-to-peer engine on loopback, against libtorrent's own (not a test; run by hand):
#   meson setup /tmp/build-rel --buildtype=release && ninja -C /tmp/build-rel test/torrent/mc-swarm-tool
#   test/torrent/bench-swarm.sh /tmp/build-rel [SIZE_MIB] [SINK]
# Prints the fetcher's line for 3 runs of ours -> ours, then libtorrent -> libtorrent (TCP, uTP and
# encryption off) for the same content. Needs python3-libtorrent; uses /tmp/mc-bench-swarm (SIZE_MIB of
# random bytes, kept between runs).
set -euo pipefail
build=${1:?usage: bench-swarm.sh BUILD_DIR [SIZE_MIB] [SINK]}
size=${2:-1024}
sink=${3:-default}
tool=$build/test/torrent/mc-swarm-tool
dir=/tmp/mc-bench-swarm
mkdir -p "$dir"
cd "$dir"
[ "$(stat -c %s data 2>/dev/null || echo 0)" = $((size << 20)) ] || head -c $((size << 20)) /dev/urandom > data

"$tool" seed data --port 0 --torrent data.torrent --sink "$sink" > seed.log 2>&1 &
seeder=$!
trap 'kill $seeder 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do grep -q '^ready' seed.log && break; sleep 0.1; done
port=$(sed -n 's/^ready port=//p' seed.log)
id=$(sed -n 's/^content id=\([0-9a-f]*\).*/\1/p' seed.log)
root=$(sed -n 's/^content .*root=\([0-9a-f]*\).*/\1/p' seed.log)
for run in 1 2 3; do
        rm -rf out && mkdir out
        /usr/bin/time -f "  fetcher cpu: user %U s, system %S s" "$tool" fetch "$id" --manifest data.torrent \
                --peer "127.0.0.1:$port" --out out 2>&1 | grep -v '^peer '
done
kill $seeder
rm -rf out lt && mkdir -p lt && ln -f data "lt/$root"
/usr/bin/python3 - data.torrent "$dir/lt" <<'PY'
import os, shutil, sys, time
import libtorrent as lt
def session():
    return lt.session({"listen_interfaces": "127.0.0.1:0", "enable_dht": False, "enable_lsd": False,
                       "enable_upnp": False, "enable_natpmp": False, "enable_outgoing_utp": False,
                       "enable_incoming_utp": False, "out_enc_policy": int(lt.enc_policy.disabled)})
seed, leech = session(), session()
atp = lt.add_torrent_params(); atp.ti = lt.torrent_info(sys.argv[1]); atp.save_path = sys.argv[2]
h = seed.add_torrent(atp)
while not h.status().is_seeding:
    time.sleep(0.05)
size = h.status().total_wanted
for run in range(3):
    dst = f"{sys.argv[2]}-out"; shutil.rmtree(dst, ignore_errors=True); os.makedirs(dst)
    atp = lt.add_torrent_params(); atp.ti = lt.torrent_info(sys.argv[1]); atp.save_path = dst
    t0 = time.monotonic()
    h2 = leech.add_torrent(atp); h2.connect_peer(("127.0.0.1", seed.listen_port()))
    while not h2.status().is_seeding:
        time.sleep(0.01)
    dt = time.monotonic() - t0
    print(f"libtorrent -> libtorrent: {size} bytes in {dt:.2f} s, {size / dt / 2**20:.1f} MiB/s", flush=True)
    leech.remove_torrent(h2, lt.session.delete_files); time.sleep(1)
PY
