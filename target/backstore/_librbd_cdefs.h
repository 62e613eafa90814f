/* cffi declarations for target.backstore._librbd: the librados/librbd calls rbd.py makes, plus the helpers in
 * _librbd_src.c that put a completion's creation and its op, or a whole batch of completions, in one call. */

#define EVENT_TYPE_EVENTFD ...
#define RBD_FEATURE_EXCLUSIVE_LOCK ...
#define RBD_FEATURE_LAYERING ...
#define RBD_FEATURE_DEEP_FLATTEN ...

typedef void *rados_t;
typedef void *rados_ioctx_t;
typedef void *rbd_image_t;
typedef void *rbd_completion_t;

int rados_create2(rados_t *cluster, const char *cluster_name, const char *name, uint64_t flags);
int rados_conf_read_file(rados_t cluster, const char *path);
int rados_conf_set(rados_t cluster, const char *option, const char *value);
int rados_connect(rados_t cluster);
void rados_shutdown(rados_t cluster);
int rados_getaddrs(rados_t cluster, char **addrs);
void rados_buffer_free(char *buf);
int rados_ioctx_create(rados_t cluster, const char *pool_name, rados_ioctx_t *ioctx);
void rados_ioctx_destroy(rados_ioctx_t io);
int rados_mon_command(rados_t cluster, const char **cmd, size_t cmdlen, const char *inbuf, size_t inbuflen,
                      char **outbuf, size_t *outbuflen, char **outs, size_t *outslen);
int rados_wait_for_latest_osdmap(rados_t cluster);     /* a takeover's writes after the blocklist (fencing.py) */

/* compound operations on one object: the omap of the fencing records (fencing.py), versioned objects
   (rados_objects.py: one write op compares an xattr, sets it and replaces the data atomically) */
#define LIBRADOS_CREATE_EXCLUSIVE ...
#define LIBRADOS_CREATE_IDEMPOTENT ...
#define LIBRADOS_CMPXATTR_OP_EQ ...
typedef int... time_t;
typedef void *rados_write_op_t;
typedef void *rados_read_op_t;
typedef void *rados_omap_iter_t;
rados_write_op_t rados_create_write_op(void);
void rados_release_write_op(rados_write_op_t write_op);
int rados_write_op_operate(rados_write_op_t write_op, rados_ioctx_t io, const char *oid, time_t *mtime, int flags);
void rados_write_op_omap_set(rados_write_op_t write_op, char const *const *keys, char const *const *vals,
                             const size_t *lens, size_t num);
void rados_write_op_omap_rm_keys(rados_write_op_t write_op, char const *const *keys, size_t keys_len);
void rados_write_op_omap_cmp(rados_write_op_t write_op, const char *key, uint8_t comparison_operator,
                             const char *val, size_t val_len, int *prval);
rados_read_op_t rados_create_read_op(void);
void rados_release_read_op(rados_read_op_t read_op);
void rados_read_op_omap_get_vals2(rados_read_op_t read_op, const char *start_after, const char *filter_prefix,
                                  uint64_t max_return, rados_omap_iter_t *iter, unsigned char *pmore, int *prval);
int rados_read_op_operate(rados_read_op_t read_op, rados_ioctx_t io, const char *oid, int flags);
int rados_omap_get_next(rados_omap_iter_t iter, char **key, char **val, size_t *len);
void rados_omap_get_end(rados_omap_iter_t iter);

void rados_write_op_create(rados_write_op_t write_op, int exclusive, const char *category);
void rados_write_op_cmpxattr(rados_write_op_t write_op, const char *name, uint8_t comparison_operator,
                             const char *value, size_t value_len);
void rados_write_op_setxattr(rados_write_op_t write_op, const char *name, const char *value, size_t value_len);
void rados_write_op_write_full(rados_write_op_t write_op, const char *buffer, size_t len);
int rados_read(rados_ioctx_t io, const char *oid, char *buf, size_t len, uint64_t off);

int rbd_create2(rados_ioctx_t io, const char *name, uint64_t size, uint64_t features, int *order);
int rbd_open(rados_ioctx_t io, const char *name, rbd_image_t *image, const char *snap_name);
int rbd_close(rbd_image_t image);
int rbd_resize(rbd_image_t image, uint64_t size);
int rbd_get_size(rbd_image_t image, uint64_t *size);
int rbd_get_features(rbd_image_t image, uint64_t *features);
int rbd_set_image_notification(rbd_image_t image, int fd, int type);
int rbd_update_unwatch(rbd_image_t image, uint64_t handle);

/* each queues one librbd op whose completion carries `token`; 0 or -errno (nothing queued) */
int rt_rbd_read(rbd_image_t image, int64_t token, uint64_t offset, size_t length, char *buf);
int rt_rbd_write(rbd_image_t image, int64_t token, uint64_t offset, size_t length, const char *buf);
int rt_rbd_flush(rbd_image_t image, int64_t token);
int rt_rbd_discard(rbd_image_t image, int64_t token, uint64_t offset, uint64_t length);
int rt_rbd_write_zeroes(rbd_image_t image, int64_t token, uint64_t offset, size_t length);

/* a compare-and-write, whose completion librbd 16.2 does not queue for rbd_poll_io_events: its callback fills the
 * waiter (fd: the eventfd to signal) and marks it done; the caller then releases w->completion */
struct rt_rbd_waiter {
    int fd, done;
    int64_t result;
    rbd_completion_t completion;
};
int rt_rbd_compare_and_write(rbd_image_t image, struct rt_rbd_waiter *w, uint64_t offset, size_t length,
                             const char *compare, const char *data, uint64_t *mismatch);
int rt_rbd_waiter_done(struct rt_rbd_waiter *w);
void rbd_aio_release(rbd_completion_t c);

/* the completions ready on the image's eventfd as (token, result) pairs into out (at most max), released; the
 * count (-EAGAIN: completions were taken, none of them a token's) */
int rt_rbd_reap(rbd_image_t image, rbd_completion_t *scratch, int64_t *out, int max);

/* a write of 1 to eventfd `fd` whenever the image's header changes (a resize); 0 or -errno */
int rt_rbd_update_watch(rbd_image_t image, uint64_t *handle, int fd);

/* the allocated extents of [offset, offset + length) as (offset, length) pairs into out (at most max); the count,
 * max + 1 when there were more, or -errno */
int rt_rbd_extents(rbd_image_t image, uint64_t offset, uint64_t length, int64_t *out, int max);
