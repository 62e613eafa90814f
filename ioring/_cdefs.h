/* cffi declarations for ioring._liburing: the exported liburing calls plus the helpers in _ffi_src.c. */

#define IORING_SETUP_COOP_TASKRUN ...
#define IORING_SETUP_TASKRUN_FLAG ...
#define IORING_SETUP_SINGLE_ISSUER ...
#define IORING_SETUP_DEFER_TASKRUN ...
#define IORING_FSYNC_DATASYNC ...
#define IORING_ASYNC_CANCEL_ANY ...

#define RWF_HIPRI ...
#define RWF_DSYNC ...
#define RWF_SYNC ...
#define RWF_NOWAIT ...
#define RWF_APPEND ...

#define FALLOC_FL_KEEP_SIZE ...
#define FALLOC_FL_PUNCH_HOLE ...
#define FALLOC_FL_ZERO_RANGE ...

struct io_uring { ...; };
struct io_uring_cqe;
struct iovec { void *iov_base; size_t iov_len; };
struct msghdr { struct iovec *msg_iov; size_t msg_iovlen; ...; };
struct __kernel_timespec { long long tv_sec; long long tv_nsec; };

int io_uring_queue_init(unsigned entries, struct io_uring *ring, unsigned flags);
void io_uring_queue_exit(struct io_uring *ring);
int io_uring_submit(struct io_uring *ring);

/* one call per op: an SQE (submitting first if the SQ is full), prepared, user_data set; 0 or -errno */
int rt_prep_nop(struct io_uring *ring, uint64_t user_data);
/* fixed_file: fd indexes the registered files; buf_index >= 0: buf lies in that registered buffer (-1: not) */
int rt_prep_read(struct io_uring *ring, uint64_t user_data, int fd, void *buf, unsigned nbytes, uint64_t offset, int rw_flags, int fixed_file, int buf_index);
int rt_prep_write(struct io_uring *ring, uint64_t user_data, int fd, const void *buf, unsigned nbytes, uint64_t offset, int rw_flags, int fixed_file, int buf_index);
int rt_prep_readv(struct io_uring *ring, uint64_t user_data, int fd, const struct iovec *iov, unsigned nr, uint64_t offset, int rw_flags);
int rt_prep_writev(struct io_uring *ring, uint64_t user_data, int fd, const struct iovec *iov, unsigned nr, uint64_t offset, int rw_flags);
int rt_prep_fsync(struct io_uring *ring, uint64_t user_data, int fd, unsigned fsync_flags);
int rt_prep_fallocate(struct io_uring *ring, uint64_t user_data, int fd, int mode, int64_t offset, int64_t length);
int rt_prep_accept(struct io_uring *ring, uint64_t user_data, int fd);
int rt_prep_recv(struct io_uring *ring, uint64_t user_data, int fd, void *buf, size_t len, int flags);
int rt_prep_read_send(struct io_uring *ring, uint64_t user_data, int fd, void *buf, unsigned nbytes, uint64_t offset, int fixed_file, int buf_index, uint64_t send_user_data, int sock, const void *out, size_t out_len, int send_flags);
/* recvmsg into head, then body, then tail (if tail_len): `parts` (and the buffers) must outlive the op */
struct rt_recv_parts { ...; };
int rt_prep_recv_parts(struct io_uring *ring, uint64_t user_data, int fd, struct rt_recv_parts *parts, void *head, size_t head_len, void *body, size_t body_len, void *tail, size_t tail_len, int flags);
int rt_prep_send(struct io_uring *ring, uint64_t user_data, int fd, const void *buf, size_t len, int flags);
int rt_prep_sendmsg(struct io_uring *ring, uint64_t user_data, int fd, const struct msghdr *msg, unsigned flags);
int rt_prep_cancel(struct io_uring *ring, uint64_t user_data, uint64_t target, int flags);
int rt_prep_timeout(struct io_uring *ring, uint64_t user_data, struct __kernel_timespec *ts);
/* one-shot poll: completes with the ready poll(2) events (res > 0) once fd has any of `events` */
int rt_prep_poll_add(struct io_uring *ring, uint64_t user_data, int fd, unsigned events);

/* registered files and buffers: a sparse table of nr slots, then one slot set at a time (fd -1 or buf NULL:
 * emptied); 0 or -errno */
int io_uring_register_files_sparse(struct io_uring *ring, unsigned nr);
int io_uring_register_buffers_sparse(struct io_uring *ring, unsigned nr);
int rt_register_file(struct io_uring *ring, unsigned slot, int fd);
int rt_register_buffer(struct io_uring *ring, unsigned slot, void *buf, size_t len);

/* submit and wait for wait_nr completions, at most timeout_ns (< 0: no limit); submitted count or -errno */
int rt_submit_and_wait(struct io_uring *ring, unsigned wait_nr, int64_t timeout_ns);

/* copy up to max ready completions into the arrays (flags may be NULL), advance the CQ once; the count */
unsigned rt_reap(struct io_uring *ring, struct io_uring_cqe **scratch, uint64_t *user_data, int32_t *res,
                 uint32_t *flags, unsigned max);

/* what every loop turn reaps with: the ring, scratch room for capacity CQE pointers, and out, where up to
 * capacity completions go as (user_data, res) pairs (one argument per turn rather than four) */
struct rt_reaper {
    struct io_uring *ring;
    struct io_uring_cqe **scratch;
    int64_t *out;
    unsigned capacity;
};

/* one loop turn in one call: mode 0 reap only, 1 submit + reap, 2 submit + wait + reap; the completions into
 * reaper->out; the count, or -errno if submitting failed */
int rt_turn(struct rt_reaper *reaper, int mode, unsigned wait_nr, int64_t timeout_ns, int64_t spin_ns);
