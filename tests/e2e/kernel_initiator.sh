# The Linux kernel initiator against ringtgt, in one guest (run by tests/e2e/test_kernel_initiator.py through
# tests/guest.py, after lines setting RINGTGT, RINGTGT_REPO and FIO).  Both ends run in the guest: ringtgt
# serves from a tmpfs on 127.0.0.1:3260, so SendTargets answers an address the guest reaches, and a worker kill
# or a restart of the target is one command here.  Each section runs in a subshell under `set -e` and ends with
# one line "SECTION <name> status=<rc> seconds=<s>"; what it measured is on "RESULT <name> key=value ..." lines.
# (No `a && b` steps in sections: set -e ignores a failure on the left of && or ||.)
set -u
W=/run/ringtgt-kernel
IQN=iqn.2026-11.org.ringtgt:kernel
IQN_CHAP=iqn.2026-11.org.ringtgt:kernel-chap
PORTAL=127.0.0.1:3260
NAA=6001405aa1b2c3d4e5f60718293a4b5c
CHAP_USER=kernel-user
CHAP_SECRET=twelve-chars-or-more
TIMEOUT=${TIMEOUT:-timeout --foreground}  # (in the section's process group, so a section's time limit ends it too)
SECTION_LIMIT=${SECTION_LIMIT:-300}     # seconds a section may take (its longest waits are ~100 s under TCG)
LONG_LIMIT=${LONG_LIMIT:-720}           # ... a section that starts ringtgt (its own wait: 600 s) or may restart iscsid
LONG_SECTIONS="setup chap target_restart"

result() { echo "RESULT $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# wait_for SECONDS WHAT COMMAND...: poll COMMAND until it succeeds
wait_for() {
    local limit=$1 what=$2 end
    shift 2
    end=$(($(date +%s) + limit))
    until "$@" >/dev/null 2>&1; do
        if (($(date +%s) > end)); then echo "timed out after ${limit} s waiting for $what" >&2; return 1; fi
        sleep 0.2
    done
}

# disk IQN LUN [IFACE]: the sdX of that LUN through that interface's session (default iface: "default")
disk() {
    local s sid dev
    for s in /sys/class/iscsi_session/session*; do
        [ -e "$s" ] || continue
        [ "$(cat "$s/targetname")" = "$1" ] || continue
        [ "$(cat "$s/ifacename")" = "${3:-default}" ] || continue
        sid=${s##*session}
        for dev in "$s"/device/target*/*:"$2"/block/*; do
            [ -e "$dev" ] && { echo "/dev/${dev##*/}"; return 0; }
        done
    done
    return 1
}
has_disk() { disk "$@" >/dev/null; }

login() {   # login IQN [IFACE]
    iscsiadm -m node -T "$1" -p "$PORTAL" -I "${2:-default}" --login >/dev/null
}
logout() {
    iscsiadm -m node -T "$1" -p "$PORTAL" -I "${2:-default}" --logout >/dev/null
}
node_set() {    # node_set IQN NAME VALUE [IFACE]
    iscsiadm -m node -T "$1" -p "$PORTAL" -I "${4:-default}" -o update -n "$2" -v "$3"
}

start_ringtgt() {   # start `ringtgt serve` (a session of its own: it outlives the section) and wait until ready
    local ready=$(grep -c "ready: serving" "$W/ringtgt.log" 2>/dev/null || true)
    PYTHONPATH=$RINGTGT_REPO setsid "$RINGTGT" serve --config "$W/ringtgt.toml" >>"$W/ringtgt.log" 2>&1 &
    echo $! >"$W/ringtgt.pid"
    wait_for 600 "ringtgt ready" eval '[ "$(grep -c "ready: serving" "$W/ringtgt.log")" -gt "${ready:-0}" ]'
}

# ringtgt's log says "worker N (pid P) started" / "coordinator (pid P) started" for every (re)start
coordinator_pid() { sed -n 's/.*coordinator (pid \([0-9]*\)) started.*/\1/p' "$W/ringtgt.log" | tail -1; }
connection_worker_pid() {   # the worker holding a session's TCP connection
    ss -Htnp state established "( sport = :${PORTAL##*:} )" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2
}

# fio_verify_start DEV SIZE NAME: a verified random write in the background, its terse output in $W/NAME.fio
fio_verify_start() {
    "$FIO" --name="$3" --filename="$1" --ioengine=libaio --direct=1 --rw=randwrite --bs=4k --iodepth=16 \
        --size="$2" --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 --output-format=terse >"$W/$3.fio" 2>&1 &
    echo $! >"$W/$3.pid"
}
# fio_progress NAME DEV COUNT: wait until COUNT more writes completed on DEV, or fail if fio ended first
fio_progress() {     # (wait_for's eval sees these locals, not our positional parameters)
    local pid=$(cat "$W/$1.pid") dev=$2 goal=$(($(writes_done "$2") + $3))
    wait_for 300 "$3 writes on $dev" eval '! kill -0 $pid || [ "$(writes_done $dev)" -ge $goal ]'
    kill -0 "$pid" || { cat "$W/$1.fio"; echo "fio ended before $3 writes" >&2; return 1; }
}
# fio_wait NAME: wait for it, leave "rc=R err=E write_iops=I" in $W/NAME.summary
fio_wait() {
    local rc=0
    wait "$(cat "$W/$1.pid")" || rc=$?
    cut -c1-200 "$W/$1.fio"
    awk -F';' -v rc=$rc '/^3;/ { printf "rc=%d err=%s write_iops=%s", rc, $5, $49; found = 1 }
                       END { if (!found) printf "rc=%d err=none", rc }' "$W/$1.fio" >"$W/$1.summary"
}
# patient DEV: a SCSI command timeout above the time ringtgt takes to come back under TCG (~30 s, the default
# timeout: a command timing out while the session is still up goes to the SCSI error handler, not to recovery), and
# the sessions' replacement_timeout back to 600 s: multipathd lowered it to its fast_io_fail_tmo (5 s)
patient() {
    echo 180 >"/sys/block/${1#/dev/}/device/timeout"
    local s
    for s in /sys/class/iscsi_session/session*/recovery_tmo; do echo 600 >"$s"; done
}
writes_done() { awk '{ print $5 }' "/sys/block/${1#/dev/}/stat"; }   # field 5: writes completed

start_iscsid() {
    setsid iscsid -f >>$W/iscsid.log 2>&1 &
    echo $! >$W/iscsid.pid
    wait_for 60 "iscsid's socket" eval 'ss -Hxl | grep -q ISCSIADM_ABSTRACT_NAMESPACE'
}
restart_iscsid() {
    pkill -x iscsiadm || true
    kill "$(cat $W/iscsid.pid)"
    wait_for 60 "iscsid's exit" eval '! kill -0 "$(cat $W/iscsid.pid)"'
    start_iscsid
}
# session_of IQN: a kernel iSCSI session of IQN exists (logged in, or a login's not torn down yet)
session_of() { grep -qx "$1" /sys/class/iscsi_session/session*/targetname 2>/dev/null; }

section_setup() {
    mkdir -p $W /etc/iscsi /etc/multipath
    mount -t tmpfs -o size=768M tmpfs $W
    echo "InitiatorName=iqn.2026-11.org.ringtgt:guest" >/etc/iscsi/initiatorname.iscsi
    modprobe iscsi_tcp
    modprobe dm_multipath
    /lib/systemd/systemd-udevd --daemon
    # in the foreground, its own session (no section's timeout kills it), its messages in a file: without a
    # syslog in the guest a daemonized iscsid's go nowhere
    start_iscsid
    # a read-only LUN needs a file system already on it: one file, made with mkfs.ext4 -d
    mkdir -p $W/rodata $W/mnt
    echo "read-only LUN content" >$W/rodata/hello
    dd if=/dev/urandom of=$W/pattern bs=1M count=4 status=none     # the data every round trip writes
    mkfs.ext4 -q -F -d $W/rodata $W/ro.img 16M
    cat >$W/ringtgt.toml <<EOF
[server]
portals = ["$PORTAL"]
workers = 2
state_dir = "$W/state"
nop_interval = 0

[[target]]
iqn = "$IQN"

[[target.lun]]
id = 0
path = "$W/lun0.img"
size = "64MiB"
naa = "$NAA"

[[target.lun]]
id = 1
path = "$W/lun1.img"
size = "32MiB"
block_size = 4096

[[target.lun]]
id = 2
path = "$W/ro.img"
readonly = true

[[target]]
iqn = "$IQN_CHAP"

[target.chap]
username = "$CHAP_USER"
secret = "$CHAP_SECRET"

[[target.lun]]
id = 0
path = "$W/chap.img"
size = "16MiB"
EOF
    local t=$(now)
    start_ringtgt
    result setup ringtgt_start_s=$(since "$t")
}

section_discovery_login() {
    local t=$(now) targets
    targets=$(iscsiadm -m discovery -t sendtargets -p $PORTAL | awk '{ print $2 }' | sort | tr '\n' ',')
    iscsiadm -m discovery -t sendtargets -p $PORTAL
    node_set $IQN node.session.timeo.replacement_timeout 600
    login $IQN
    wait_for 300 "LUN 0..2 disks" eval 'has_disk $IQN 0 && has_disk $IQN 1 && has_disk $IQN 2'
    result discovery_login targets="${targets%,}" luns=3 login_s=$(since "$t") \
        state=$(cat /sys/class/iscsi_session/session*/state | head -1)
}

section_vpd() {
    local dev=$(disk $IQN 0)
    sg_vpd -p 0x83 "$dev"
    result vpd naa=$(sg_vpd -p 0x83 "$dev" | awk '/designator type: NAA/ { getline; print $1; exit }') \
        vendor=$(sg_inq "$dev" | awk -F: '/Vendor identification/ { gsub(/ /, "", $2); print $2 }') \
        wwid=$(/lib/udev/scsi_id -g -u "$dev")
}

section_dd_direct() {
    local dev=$(disk $IQN 0) t
    t=$(now)
    dd if=$W/pattern of="$dev" bs=1M seek=4 oflag=direct status=none
    dd if="$dev" of=$W/readback bs=1M skip=4 count=4 iflag=direct status=none
    cmp $W/pattern $W/readback
    result dd_direct bytes=$((4 << 20)) identical=yes seconds=$(since "$t")
}

section_discard() {
    local dev=$(disk $IQN 0) name before after
    name=${dev#/dev/}
    dd if=/dev/urandom of="$dev" bs=1M seek=32 count=8 oflag=direct status=none
    before=$(du -k $W/lun0.img | cut -f1)
    blkdiscard -o $((32 << 20)) -l $((8 << 20)) "$dev"
    after=$(du -k $W/lun0.img | cut -f1)
    cmp -n $((8 << 20)) <(dd if="$dev" bs=1M skip=32 count=8 iflag=direct status=none) /dev/zero
    result discard provisioning_mode=$(cat /sys/block/$name/device/scsi_disk/*/provisioning_mode) \
        discard_max_bytes=$(cat /sys/block/$name/queue/discard_max_bytes) image_kib_before=$before \
        image_kib_after=$after reads_zero=yes
}

section_mkfs_fsck() {
    local dev=$(disk $IQN 0)
    mkfs.ext4 -q -F "$dev"
    mount "$dev" $W/mnt
    cp $W/pattern $W/mnt/pattern
    sync
    umount $W/mnt
    fsck.ext4 -fn "$dev"
    mount -o ro "$dev" $W/mnt
    cmp $W/pattern $W/mnt/pattern
    umount $W/mnt
    result mkfs_fsck fsck_rc=0 file_identical=yes
}

section_fio_verify() {
    fio_verify_start "$(disk $IQN 0)" 8M fio_verify
    fio_wait fio_verify
    result fio_verify $(cat $W/fio_verify.summary)
}

section_block_4096() {
    local dev=$(disk $IQN 1) name
    name=${dev#/dev/}
    dd if=$W/pattern of="$dev" bs=4096 count=256 oflag=direct status=none
    cmp -n $((1 << 20)) <(dd if="$dev" bs=4096 count=256 iflag=direct status=none) $W/pattern
    result block_4096 logical_block_size=$(cat /sys/block/$name/queue/logical_block_size) \
        size_bytes=$(($(cat /sys/block/$name/size) * 512)) identical=yes \
        write_512_direct=$(dd if=$W/pattern of="$dev" bs=512 count=1 oflag=direct status=none 2>/dev/null \
                           && echo accepted || echo refused)
}

section_readonly() {
    local dev=$(disk $IQN 2) name
    name=${dev#/dev/}
    local content
    mount -o ro "$dev" $W/mnt
    content=$(cat $W/mnt/hello)
    umount $W/mnt
    result readonly ro=$(cat /sys/block/$name/ro) content="${content// /_}" \
        write=$(dd if=/dev/zero of="$dev" bs=512 count=1 oflag=direct status=none 2>/dev/null \
                && echo accepted || echo refused)
}

section_logout_login() {
    local t=$(now)
    logout $IQN
    wait_for 300 "LUN 0 gone" eval '! has_disk $IQN 0'
    local sessions=$(iscsiadm -m session 2>/dev/null | wc -l)
    login $IQN
    wait_for 300 "LUN 0 back" has_disk $IQN 0
    # the file system written before the logout is still there
    fsck.ext4 -fn "$(disk $IQN 0)" >/dev/null
    result logout_login sessions_after_logout=$sessions relogin_s=$(since "$t") fsck_rc=0
}

section_digests() {
    logout $IQN
    node_set $IQN 'node.conn[0].iscsi.HeaderDigest' CRC32C
    node_set $IQN 'node.conn[0].iscsi.DataDigest' CRC32C
    login $IQN
    wait_for 300 "LUN 0 with digests" has_disk $IQN 0
    local dev=$(disk $IQN 0)
    local header=$(iscsiadm -m session -P2 | awk '/HeaderDigest/ { print $2; exit }')
    local data=$(iscsiadm -m session -P2 | awk '/DataDigest/ { print $2; exit }')
    dd if=$W/pattern of="$dev" bs=1M seek=48 oflag=direct status=none
    cmp <(dd if="$dev" bs=1M skip=48 count=4 iflag=direct status=none) $W/pattern
    logout $IQN
    node_set $IQN 'node.conn[0].iscsi.HeaderDigest' None
    node_set $IQN 'node.conn[0].iscsi.DataDigest' None
    login $IQN
    wait_for 300 "LUN 0 back" has_disk $IQN 0
    result digests header=$header data=$data identical=yes
}

# chap_login: a login to the CHAP target that must be refused; its status is iscsiadm's (24: authorization failure).
# iscsiadm waits for iscsid's answer without a deadline, and once in a CI run (never in ~230 tries since) it got
# none while the guest sat idle. If ringtgt logged its refusal of that login (the target's part done), the answer
# was lost between iscsid and iscsiadm: the diagnostics say where, iscsid is restarted and the login tried once
# more (counted in iscsid_restarts). A login ringtgt did not refuse fails the section here.
CHAP_RESTARTS=$W/chap-iscsid-restarts
chap_login() {
    local rc=0 refused=$(grep -c "login failed (0x0201)" $W/ringtgt.log)
    $TIMEOUT 120 iscsiadm -m node -T $IQN_CHAP -p $PORTAL --login >&2 || rc=$?    # (stdout: the status)
    if [ $rc -eq 124 ]; then
        echo "iscsiadm --login to $IQN_CHAP: no answer within 120 s" >&2
        diagnose >&2
        [ "$(grep -c "login failed (0x0201)" $W/ringtgt.log)" -gt "$refused" ] || return 1
        echo "ringtgt refused that login (logged): restarting iscsid, logging in once more" >&2
        echo x >>$CHAP_RESTARTS
        restart_iscsid >&2 || return 1
        rc=0
        $TIMEOUT 120 iscsiadm -m node -T $IQN_CHAP -p $PORTAL --login >&2 || rc=$?
        if [ $rc -eq 124 ]; then echo "no answer again" >&2; return 1; fi
    fi
    # the refused login's session torn down in the kernel before anything asks iscsid again
    wait_for 60 "the refused session of $IQN_CHAP gone" eval '! session_of $IQN_CHAP' || return 1
    echo $rc
}

section_chap() {
    local without rc
    # no credentials (iscsid offers CHAP whenever a username and password are set), also when the section runs again
    node_set $IQN_CHAP node.session.auth.authmethod None
    node_set $IQN_CHAP node.session.auth.username ""
    node_set $IQN_CHAP node.session.auth.password ""
    without=$(chap_login)
    node_set $IQN_CHAP node.session.auth.authmethod CHAP
    node_set $IQN_CHAP node.session.auth.username $CHAP_USER
    node_set $IQN_CHAP node.session.auth.password wrong-secret-wrong
    rc=$(chap_login)
    node_set $IQN_CHAP node.session.auth.password $CHAP_SECRET
    login $IQN_CHAP
    wait_for 300 "the CHAP target's LUN" has_disk $IQN_CHAP 0
    local dev=$(disk $IQN_CHAP 0)
    dd if=$W/pattern of="$dev" bs=1M oflag=direct status=none
    cmp <(dd if="$dev" bs=1M count=4 iflag=direct status=none) $W/pattern
    logout $IQN_CHAP
    result chap login_without_rc=$without login_wrong_secret_rc=$rc login_with_secret=ok identical=yes \
        iscsid_restarts=$(cat $CHAP_RESTARTS 2>/dev/null | wc -l)
}

section_second_path() {
    iscsiadm -m iface -I second -o new >/dev/null
    iscsiadm -m discovery -t sendtargets -p $PORTAL -I default -I second >/dev/null
    node_set $IQN node.session.timeo.replacement_timeout 600 second
    login $IQN second
    wait_for 300 "LUN 0 through the second session" has_disk $IQN 0 second
    result second_path sessions=$(iscsiadm -m session | grep -c " $IQN ") \
        wwid_a=$(/lib/udev/scsi_id -g -u "$(disk $IQN 0)") wwid_b=$(/lib/udev/scsi_id -g -u "$(disk $IQN 0 second)")
}

section_reservations() {
    local a=$(disk $IQN 0) b=$(disk $IQN 0 second) conflict holder keys
    sg_persist -n --out --register --param-sark=0xa1 "$a"
    sg_persist -n --out --register --param-sark=0xb2 "$b"
    sg_persist -n --out --reserve --param-rk=0xa1 --prout-type=1 "$a"
    keys=$(sg_persist -n --in --read-keys "$b" | awk '$1 ~ /^0x/ { print $1 }' | tr '\n' ',')
    holder=$(sg_persist -n --in --read-reservation "$b" | grep -o 'Key=0x[0-9a-f]*' | head -1)
    conflict=$(dd if=$W/pattern of="$b" bs=4096 count=1 oflag=direct status=none 2>/dev/null \
               && echo accepted || echo refused)
    dd if=$W/pattern of="$a" bs=4096 count=1 oflag=direct status=none
    sg_persist -n --out --release --param-rk=0xa1 --prout-type=1 "$a"
    sg_persist -n --out --clear --param-rk=0xa1 "$a"
    result reservations keys="${keys%,}" holder="${holder#Key=}" write_other_path=$conflict \
        write_holder=accepted after_clear=$(sg_persist -n --in --read-keys "$a" | awk '$1 ~ /^0x/' | wc -l)
}

section_multipath() {
    cat >/etc/multipath.conf <<'EOF'
defaults {
    user_friendly_names no
    find_multipaths no
}
devices {
    device {
        vendor "RINGTGT"
        product ".*"
        path_grouping_policy multibus
        path_checker tur
        no_path_retry queue
    }
}
blacklist {
    devnode "^(sr|vd|loop)[0-9]*"
}
EOF
    multipathd
    local wwid=$(/lib/udev/scsi_id -g -u "$(disk $IQN 0)")
    wait_for 300 "multipath map $wwid" test -b /dev/mapper/$wwid
    wait_for 300 "two active paths" eval '[ "$(multipath -ll $wwid | grep -c "active ready")" -ge 2 ]'
    multipath -ll $wwid
    dd if=$W/pattern of=/dev/mapper/$wwid bs=1M seek=40 oflag=direct status=none
    cmp <(dd if=/dev/mapper/$wwid bs=1M skip=40 count=4 iflag=direct status=none) $W/pattern
    result multipath map=$wwid paths=$(multipath -ll $wwid | grep -c "active ready") identical=yes
    # multipathd may close its socket before it answers a shutdown ("error -5 receiving packet"): its exit counts
    multipathd shutdown || echo "multipathd shutdown: no answer; waiting for its exit"
    wait_for 60 "multipathd to exit" eval '! pidof multipathd >/dev/null'
    # udev may still be probing the map after the writes ("map in use"): flush it once nothing holds it
    wait_for 60 "the multipath map to be flushed" multipath -F
}

section_worker_kill() {
    local dev=$(disk $IQN 0) victim t
    logout $IQN second
    patient "$dev"
    fio_verify_start "$dev" 16M worker_kill
    fio_progress worker_kill "$dev" 300
    victim=$(connection_worker_pid)
    t=$(now)
    kill -9 "$victim"
    fio_wait worker_kill
    result worker_kill killed_pid=$victim $(cat $W/worker_kill.summary) seconds_after_kill=$(since "$t")
}

section_coordinator_kill() {
    local dev=$(disk $IQN 0) victim=$(coordinator_pid)
    patient "$dev"
    fio_verify_start "$dev" 8M coordinator_kill
    fio_progress coordinator_kill "$dev" 300
    kill -9 "$victim"
    fio_wait coordinator_kill
    result coordinator_kill killed_pid=$victim $(cat $W/coordinator_kill.summary) \
        restarted=$([ "$(coordinator_pid)" != "$victim" ] && echo yes || echo no)
}

section_target_restart() {
    local dev=$(disk $IQN 0) t pid
    patient "$dev"
    fio_verify_start "$dev" 16M target_restart
    fio_progress target_restart "$dev" 300
    t=$(now)
    pid=$(cat $W/ringtgt.pid)
    kill -TERM "$pid"
    wait_for 300 "ringtgt to exit" eval '! kill -0 $pid'
    start_ringtgt
    local down=$(since "$t")
    fio_wait target_restart
    result target_restart down_s=$down $(cat $W/target_restart.summary) \
        state=$(cat /sys/class/iscsi_session/session*/state | head -1)
}

section_logout_all() {
    iscsiadm -m node --logoutall=all
    result logout_all sessions=$(iscsiadm -m session 2>/dev/null | wc -l)
}

# run_section NAME: run section_NAME in a subshell under `set -e`, in a process group of its own (job control on
# while it starts), stdin /dev/null; past its limit (SECTION_LIMIT; LONG_LIMIT for LONG_SECTIONS) the group (the
# section and what it started in the background) is killed and the status is 124. Daemons leave the group: ringtgt
# and iscsid run under setsid.
run_section() {
    local pid timer finished
    set -m
    (set -e; "section_$1") </dev/null &    # not `|| rc=$?`: on the left of || bash ignores set -e
    pid=$!
    local limit=$SECTION_LIMIT
    case " $LONG_SECTIONS " in *" $1 "*) limit=$LONG_LIMIT ;; esac
    sleep "$limit" &
    timer=$!
    set +m
    wait -n -p finished "$pid" "$timer"
    local rc=$?
    if [ "$finished" = "$pid" ]; then
        kill "$timer"
        wait "$timer"
        return $rc
    fi
    echo "section $1: not finished within ${limit} s; what it runs:"
    ps -eo pid,pgid,stat,etime,wchan:24,args | awk -v g="$pid" 'NR == 1 || $2 == g'
    kill -TERM -- -"$pid"
    local end=$(($(date +%s) + 10))
    while kill -0 "$pid" 2>/dev/null && (($(date +%s) < end)); do sleep 0.5; done
    kill -KILL -- -"$pid" 2>/dev/null
    wait "$pid"
    return 124
}

# diagnose: after a failed or timed-out section, the state of both ends (each look bounded: iscsiadm asks iscsid)
diagnose() {
    echo "-- diagnostics: ringtgt log (last 30 lines)"
    tail -30 $W/ringtgt.log
    echo "-- TCP connections on the portal"
    ss -tnpo "( sport = :${PORTAL##*:} or dport = :${PORTAL##*:} )"
    echo "-- iscsiadm -m session -P3"
    $TIMEOUT 30 iscsiadm -m session -P3 2>&1 | grep -vE "^\s*$|Attached scsi disk|^\s*(\*+|Interface:|Iface )"
    echo "-- iscsid and iscsiadm processes (with their kernel stacks)"
    ps -o pid,ppid,stat,etime,wchan:24,args -C iscsid,iscsiadm
    local p
    for p in $(pidof iscsid iscsiadm); do echo "pid $p:"; cat /proc/$p/stack 2>/dev/null | head -12; done
    echo "-- iscsid's messages (last 30 lines)"
    tail -30 $W/iscsid.log
    echo "-- kernel log (iSCSI, last 30 lines)"
    dmesg | grep -iE "iscsi|connection[0-9]+:" | tail -30
    echo "-- end of diagnostics"
}

SECTIONS=${SECTIONS:-"setup discovery_login vpd dd_direct discard fio_verify mkfs_fsck block_4096 readonly
    logout_login digests chap second_path reservations multipath worker_kill coordinator_kill target_restart
    logout_all"}
for name in $SECTIONS; do
    echo "== $name"
    start=$(now)
    run_section "$name"
    rc=$?
    echo "SECTION $name status=$rc seconds=$(since "$start")"
    if [ $rc -ne 0 ]; then diagnose; fi
    if [ "$name" = setup ] && [ $rc -ne 0 ]; then cat $W/ringtgt.log; exit 1; fi
done
echo "== ringtgt log (warnings and errors; the last lines)"
grep -E "WARNING|ERROR|CRITICAL" $W/ringtgt.log | tail -40
tail -25 $W/ringtgt.log
echo "== kernel log (iSCSI and SCSI disk messages)"
dmesg | grep -E "iscsi|connection|sd [0-9:]+|I/O error|blk_update" | tail -60
exit 0
