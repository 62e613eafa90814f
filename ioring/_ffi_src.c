/* C side of ioring._liburing: one call per op (SQE + prep + user_data) and a batch reap.
 * liburing's io_uring_prep_* helpers are static inline, so cffi cannot call them directly. */
#include <errno.h>
#include <sched.h>
#include <time.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <liburing.h>

/* cffi's wrapper of every function here drops the GIL before the call and takes it back after: a few hundred
 * instructions, against a few hundred for most of these calls themselves (4.6 % of a QD1 read's in the worker).
 * They keep it instead; the two that wait, rt_spin and rt_submit_and_wait, let it go themselves, so that the
 * worker's other threads (metrics, RADOS waits) run while the loop waits. A submission still runs with it held
 * (the kernel issues socket and file ops inline: work, not waits). So call these through `lib`, on CPython: a
 * call through cffi's backend (ffi.addressof, PyPy) has already dropped the GIL, and the waits would drop it twice. */
#undef Py_BEGIN_ALLOW_THREADS
#undef Py_END_ALLOW_THREADS
#define Py_BEGIN_ALLOW_THREADS {
#define Py_END_ALLOW_THREADS }

/* An SQE carrying user_data; when the SQ is full, submit once to make room. NULL with *rc = -errno if none. */
static inline struct io_uring_sqe *rt_sqe(struct io_uring *ring, uint64_t user_data, int *rc)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) {
        int ret = io_uring_submit(ring);
        if (ret < 0) {
            *rc = ret;
            return NULL;
        }
        sqe = io_uring_get_sqe(ring);
        if (!sqe) {
            *rc = -EBUSY;
            return NULL;
        }
    }
    io_uring_sqe_set_data64(sqe, user_data);
    return sqe;
}

/* Body of every rt_prep_*: get the SQE, run PREP on it, report 0 or -errno. user_data survives the prep
 * helpers (io_uring_prep_rw leaves it alone). */
#define RT_PREP(PREP)                                        \
    do {                                                     \
        int rc = 0;                                          \
        struct io_uring_sqe *sqe = rt_sqe(ring, user_data, &rc); \
        if (!sqe)                                            \
            return rc;                                       \
        PREP;                                                \
        return 0;                                            \
    } while (0)

static inline int rt_prep_nop(struct io_uring *ring, uint64_t user_data)
{
    RT_PREP(io_uring_prep_nop(sqe));
}

/* A read or write; fixed_file: fd is an index into the registered files; buf_index >= 0: buf lies in that
 * registered buffer (READ_FIXED/WRITE_FIXED: the kernel pins no pages per op). */
static inline void rt_rw(struct io_uring_sqe *sqe, int op, int fd, const void *buf, unsigned nbytes,
                         uint64_t offset, int rw_flags, int fixed_file, int buf_index)
{
    if (buf_index >= 0) {
        io_uring_prep_rw(op == IORING_OP_READ ? IORING_OP_READ_FIXED : IORING_OP_WRITE_FIXED, sqe, fd, buf,
                         nbytes, offset);
        sqe->buf_index = (unsigned short)buf_index;
    } else {
        io_uring_prep_rw(op, sqe, fd, buf, nbytes, offset);
    }
    sqe->rw_flags = rw_flags;
    if (fixed_file)
        sqe->flags |= IOSQE_FIXED_FILE;
}

static inline int rt_prep_read(struct io_uring *ring, uint64_t user_data, int fd, void *buf, unsigned nbytes,
                               uint64_t offset, int rw_flags, int fixed_file, int buf_index)
{
    RT_PREP(rt_rw(sqe, IORING_OP_READ, fd, buf, nbytes, offset, rw_flags, fixed_file, buf_index));
}

static inline int rt_prep_write(struct io_uring *ring, uint64_t user_data, int fd, const void *buf,
                                unsigned nbytes, uint64_t offset, int rw_flags, int fixed_file, int buf_index)
{
    RT_PREP(rt_rw(sqe, IORING_OP_WRITE, fd, buf, nbytes, offset, rw_flags, fixed_file, buf_index));
}

/* A read, then a send linked to it (IOSQE_IO_LINK): the send starts in the kernel once the read has read all
 * of buf, and completes with -ECANCELED if the read fails or stops short. Both SQEs go into one submission (a
 * submit between them would cut the link and let the send go with the buffer unread): when fewer than two are
 * free, what is queued is submitted first. 0 or -errno (nothing queued then). */
static inline int rt_prep_read_send(struct io_uring *ring, uint64_t user_data, int fd, void *buf, unsigned nbytes,
                                    uint64_t offset, int fixed_file, int buf_index, uint64_t send_user_data,
                                    int sock, const void *out, size_t out_len, int send_flags)
{
    struct io_uring_sqe *sqe;
    if (io_uring_sq_space_left(ring) < 2) {
        int ret = io_uring_submit(ring);
        if (ret < 0)
            return ret;
        if (io_uring_sq_space_left(ring) < 2)
            return -EBUSY;
    }
    sqe = io_uring_get_sqe(ring);
    io_uring_sqe_set_data64(sqe, user_data);
    rt_rw(sqe, IORING_OP_READ, fd, buf, nbytes, offset, 0, fixed_file, buf_index);
    sqe->flags |= IOSQE_IO_LINK;
    sqe = io_uring_get_sqe(ring);
    io_uring_sqe_set_data64(sqe, send_user_data);
    io_uring_prep_send(sqe, sock, out, out_len, send_flags);
    return 0;
}

/* Registered files and buffers, set in place: a sparse table of nr slots first, then one slot at a time
 * (fd -1, or a NULL buffer, empties it). 0 or -errno. */
static inline int rt_register_file(struct io_uring *ring, unsigned slot, int fd)
{
    int rc = io_uring_register_files_update(ring, slot, &fd, 1);
    return rc < 0 ? rc : 0;
}

static inline int rt_register_buffer(struct io_uring *ring, unsigned slot, void *buf, size_t len)
{
    struct iovec iov = {buf, len};
    __u64 tag = 0;
    int rc = io_uring_register_buffers_update_tag(ring, slot, &iov, &tag, 1);
    return rc < 0 ? rc : 0;
}

static inline int rt_prep_readv(struct io_uring *ring, uint64_t user_data, int fd, const struct iovec *iov,
                                unsigned nr, uint64_t offset, int rw_flags)
{
    RT_PREP(io_uring_prep_readv2(sqe, fd, iov, nr, offset, rw_flags));
}

static inline int rt_prep_writev(struct io_uring *ring, uint64_t user_data, int fd, const struct iovec *iov,
                                 unsigned nr, uint64_t offset, int rw_flags)
{
    RT_PREP(io_uring_prep_writev2(sqe, fd, iov, nr, offset, rw_flags));
}

static inline int rt_prep_fsync(struct io_uring *ring, uint64_t user_data, int fd, unsigned fsync_flags)
{
    RT_PREP(io_uring_prep_fsync(sqe, fd, fsync_flags));
}

static inline int rt_prep_fallocate(struct io_uring *ring, uint64_t user_data, int fd, int mode,
                                    int64_t offset, int64_t length)
{
    RT_PREP(io_uring_prep_fallocate(sqe, fd, mode, offset, length));
}

static inline int rt_prep_accept(struct io_uring *ring, uint64_t user_data, int fd)
{
    RT_PREP(io_uring_prep_accept(sqe, fd, NULL, NULL, 0));
}

static inline int rt_prep_recv(struct io_uring *ring, uint64_t user_data, int fd, void *buf, size_t len,
                               int flags)
{
    RT_PREP(io_uring_prep_recv(sqe, fd, buf, len, flags));
}

/* One receive into up to three buffers in turn (a PDU's header, its data segment, then whatever follows), as
 * one completion: recvmsg over `parts`, which the caller keeps, with the buffers, until it completes. A third
 * buffer of length 0 is left out. */
struct rt_recv_parts {
    struct msghdr msg;
    struct iovec iov[3];
};

static inline int rt_prep_recv_parts(struct io_uring *ring, uint64_t user_data, int fd, struct rt_recv_parts *parts,
                                     void *head, size_t head_len, void *body, size_t body_len, void *tail,
                                     size_t tail_len, int flags)
{
    parts->msg = (struct msghdr){.msg_iov = parts->iov, .msg_iovlen = tail_len ? 3 : 2};
    parts->iov[0] = (struct iovec){.iov_base = head, .iov_len = head_len};
    parts->iov[1] = (struct iovec){.iov_base = body, .iov_len = body_len};
    parts->iov[2] = (struct iovec){.iov_base = tail, .iov_len = tail_len};
    RT_PREP(io_uring_prep_recvmsg(sqe, fd, &parts->msg, flags));
}

static inline int rt_prep_send(struct io_uring *ring, uint64_t user_data, int fd, const void *buf, size_t len,
                               int flags)
{
    RT_PREP(io_uring_prep_send(sqe, fd, buf, len, flags));
}

static inline int rt_prep_sendmsg(struct io_uring *ring, uint64_t user_data, int fd, const struct msghdr *msg,
                                  unsigned flags)
{
    RT_PREP(io_uring_prep_sendmsg(sqe, fd, msg, flags));
}

static inline int rt_prep_cancel(struct io_uring *ring, uint64_t user_data, uint64_t target, int flags)
{
    RT_PREP(io_uring_prep_cancel64(sqe, target, flags));
}

static inline int rt_prep_timeout(struct io_uring *ring, uint64_t user_data, struct __kernel_timespec *ts)
{
    RT_PREP(io_uring_prep_timeout(sqe, ts, 0, 0));
}

static inline int rt_prep_poll_add(struct io_uring *ring, uint64_t user_data, int fd, unsigned events)
{
    RT_PREP(io_uring_prep_poll_add(sqe, fd, events));
}

static inline int rt_submit_and_wait(struct io_uring *ring, unsigned wait_nr, int64_t timeout_ns)
{
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts;
    PyThreadState *gil = PyEval_SaveThread();
    int rc;

    if (timeout_ns < 0) {
        rc = io_uring_submit_and_wait(ring, wait_nr);
    } else {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        rc = io_uring_submit_and_wait_timeout(ring, &cqe, wait_nr, &ts, NULL);
    }
    PyEval_RestoreThread(gil);
    return rc;
}

static inline unsigned rt_reap(struct io_uring *ring, struct io_uring_cqe **scratch, uint64_t *user_data,
                               int32_t *res, uint32_t *flags, unsigned max)
{
    unsigned n = io_uring_peek_batch_cqe(ring, scratch, max);
    for (unsigned i = 0; i < n; i++) {
        user_data[i] = scratch[i]->user_data;
        res[i] = scratch[i]->res;
        if (flags)
            flags[i] = scratch[i]->flags;
    }
    io_uring_cq_advance(ring, n);
    return n;
}

/* Submit, then busy-poll the CQ for up to spin_ns, yielding the CPU to anything runnable between looks.
 * Socket completions wait as task work until the task enters the kernel; the TASKRUN flag in the SQ ring
 * says some is pending and io_uring_get_events runs it without blocking. 1: a completion is ready; 0: none
 * came in time; -errno: submitting failed. */
static inline int rt_spin(struct io_uring *ring, int64_t spin_ns)
{
    struct timespec now;
    int64_t deadline;
    PyThreadState *gil;
    int rc = io_uring_submit(ring);
    if (rc < 0)
        return rc;
    gil = PyEval_SaveThread();
    clock_gettime(CLOCK_MONOTONIC, &now);
    deadline = now.tv_sec * 1000000000LL + now.tv_nsec + spin_ns;
    for (;;) {
        if (IO_URING_READ_ONCE(*ring->sq.kflags) & IORING_SQ_TASKRUN)
            io_uring_get_events(ring);
        if (io_uring_cq_ready(ring)) {
            rc = 1;
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec * 1000000000LL + now.tv_nsec >= deadline) {
            rc = 0;
            break;
        }
        sched_yield();
    }
    PyEval_RestoreThread(gil);
    return rc;
}

/* What every loop turn reaps with (ioring/_cdefs.h): one argument per turn rather than four. */
struct rt_reaper {
    struct io_uring *ring;
    struct io_uring_cqe **scratch;
    int64_t *out;
    unsigned capacity;
};

/* One call per loop turn. mode 0: reap only; 1: submit, then reap; 2: submit and wait for wait_nr
 * completions (at most timeout_ns, < 0: no limit), busy-polling for spin_ns first when it is > 0, then
 * reap. Reaping copies up to reaper->capacity ready completions into reaper->out as user_data, res pairs
 * (res sign-extended) and advances the CQ once. The count reaped, or -errno when submitting failed (a
 * timeout or a signal while waiting is not a failure). */
static inline int rt_turn(struct rt_reaper *reaper, int mode, unsigned wait_nr, int64_t timeout_ns, int64_t spin_ns)
{
    struct io_uring *ring = reaper->ring;
    struct io_uring_cqe **scratch = reaper->scratch;
    int64_t *out = reaper->out;
    unsigned n;
    int rc = 0;
    if (mode == 2 && spin_ns > 0 && (rc = rt_spin(ring, spin_ns)) < 0)
        return rc;
    if (mode == 2 && rc == 0) {
        rc = rt_submit_and_wait(ring, wait_nr, timeout_ns);
        if (rc < 0 && rc != -ETIME && rc != -EINTR)
            return rc;
    } else if (mode == 1) {
        rc = io_uring_submit(ring);
        if (rc < 0)
            return rc;
    }
    n = io_uring_peek_batch_cqe(ring, scratch, reaper->capacity);
    for (unsigned i = 0; i < n; i++) {
        out[2 * i] = (int64_t)scratch[i]->user_data;
        out[2 * i + 1] = scratch[i]->res;
    }
    io_uring_cq_advance(ring, n);
    return (int)n;
}
