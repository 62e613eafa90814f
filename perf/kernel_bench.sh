# `make bench BENCH_ARGS="--suites kernel"` in the guest (perf/kernel_suite.py runs it through tests/guest.py, after
# lines setting RINGTGT, RINGTGT_REPO, RINGTGT_SERVER, FIO, SIZE_MIB, ROUNDS, RUNTIME and JOBS: "name fio-options"
# per line).  One prefilled image on a tmpfs is served by LIO through targetcli (fileio backstore, 127.0.0.1:3260),
# ringtgt (:3261) and tgtd (:3262); the kernel initiator logs in to all three and fio's libaio engine (direct=1)
# runs every job on each /dev/sdX in turn, round after round.  Each run prints "FIO <target> <job> <round> <json>".
set -eu
W=/run/ringtgt-bench
IQN=iqn.2026-11.org.ringtgt:bench
mkdir -p $W /etc/iscsi
mount -t tmpfs -o size=$((SIZE_MIB + 256))M tmpfs $W
echo "InitiatorName=iqn.2026-11.org.ringtgt:bench-guest" >/etc/iscsi/initiatorname.iscsi
modprobe iscsi_tcp
iscsid
dd if=/dev/urandom of=$W/disk.img bs=1M count="$SIZE_MIB" status=none

wait_for() {    # wait_for SECONDS WHAT COMMAND...
    local limit=$1 what=$2 end=$(($(date +%s) + $1))
    shift 2
    until "$@" >/dev/null 2>&1; do
        (($(date +%s) <= end)) || { echo "timed out after $limit s waiting for $what" >&2; return 1; }
        sleep 0.2
    done
}
session_disk() {    # session_disk IQN: the sdX of that target's session
    local s dev
    for s in /sys/class/iscsi_session/session*; do
        grep -qx "$1" "$s/targetname" || continue
        for dev in "$s"/device/target*/*/block/*; do
            [ -e "$dev" ] && { echo "/dev/${dev##*/}"; return 0; }
        done
    done
    return 1
}

modprobe target_core_file
modprobe iscsi_target_mod
mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
export TARGETCLI_HOME=$W/targetcli      # its preferences directory (the guest's $HOME is read-only)
mkdir -p /run/dbus     # targetcli asks the system bus for tcmu-runner's backstores and exits 255 without one
dbus-daemon --system --fork
targetcli /backstores/fileio create name=disk file_or_dev=$W/disk.img
targetcli /iscsi create $IQN:lio
targetcli /iscsi/$IQN:lio/tpg1/luns create /backstores/fileio/disk
targetcli /iscsi/$IQN:lio/tpg1/portals delete 0.0.0.0 3260   # the default portal, for loopback only
targetcli /iscsi/$IQN:lio/tpg1/portals create 127.0.0.1 3260
targetcli /iscsi/$IQN:lio/tpg1 set attribute authentication=0 demo_mode_write_protect=0 generate_node_acls=1 \
    cache_dynamic_acls=1

cat >$W/ringtgt.toml <<EOF
[server]
portals = ["127.0.0.1:3261"]
workers = 2
state_dir = "$W/state"
log_level = "warning"
nop_interval = 0
$RINGTGT_SERVER

[[target]]
iqn = "$IQN:ringtgt"

[[target.lun]]
id = 0
path = "$W/disk.img"
EOF
PYTHONPATH=$RINGTGT_REPO "$RINGTGT" serve --config $W/ringtgt.toml >$W/ringtgt.log 2>&1 &
wait_for 600 "ringtgt on :3261" bash -c 'echo >/dev/tcp/127.0.0.1/3261'

tgtd -f --iscsi portal=127.0.0.1:3262 >$W/tgtd.log 2>&1 &
wait_for 300 "tgtd" tgtadm --mode target --op show
tgtadm --mode target --op new --tid 1 -T $IQN:tgtd
tgtadm --mode logicalunit --op new --tid 1 --lun 1 -b $W/disk.img
tgtadm --mode target --op bind --tid 1 -I ALL

declare -A DEV
for pair in lio:3260 ringtgt:3261 tgtd:3262; do
    name=${pair%:*} port=${pair#*:}
    iscsiadm -m discovery -t sendtargets -p 127.0.0.1:$port >/dev/null
    iscsiadm -m node -T $IQN:$name -p 127.0.0.1:$port --login >/dev/null
    wait_for 300 "$name's disk" session_disk $IQN:$name
    DEV[$name]=$(session_disk $IQN:$name)
    echo "DEVICE $name ${DEV[$name]} $(cat /sys/block/${DEV[$name]#/dev/}/size) sectors"
done

for round in $(seq "$ROUNDS"); do
    while read -r job options; do
        [ -n "$job" ] || continue
        for name in ringtgt lio tgtd; do
            # shellcheck disable=SC2086 # options is a list of fio arguments
            "$FIO" --name="$job" --filename="${DEV[$name]}" --ioengine=libaio --direct=1 --time_based=1 \
                --runtime="$RUNTIME" --ramp_time=1 --group_reporting=1 $options --output-format=json \
                --output=$W/out.json
            echo "FIO $name $job $round $(tr -d '\n' <$W/out.json)"
        done
    done <<<"$JOBS"
done
iscsiadm -m node --logoutall=all >/dev/null
