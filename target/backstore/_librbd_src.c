/* C side of target.backstore._librbd: librbd's asynchronous calls with their completion made in the same call,
 * completions carrying an integer token instead of a callback (they are reaped through the image's eventfd,
 * rbd_set_image_notification, so no Python runs on librbd's threads), and the C callbacks of the header watch
 * and of diff iteration. */
#include <errno.h>
#include <stdint.h>
#include <unistd.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

struct rt_rbd_waiter {
    int fd, done;
    int64_t result;
    rbd_completion_t completion;
};

/* Body of every rt_rbd_* op: a completion for token, OP (which uses c), released again if OP refused. A token is
 * stored shifted, its low bit set: a waiter's (below) is an aligned pointer, so rt_rbd_reap tells the two apart. */
#define RT_RBD_OP(OP)                                                         \
    do {                                                                      \
        rbd_completion_t c;                                                   \
        int rc = rbd_aio_create_completion((void *)(intptr_t)(token << 1 | 1), NULL, &c); \
        if (rc < 0)                                                           \
            return rc;                                                        \
        rc = (int)(OP);                                                       \
        if (rc < 0) {                                                         \
            rbd_aio_release(c);                                               \
            return rc;                                                        \
        }                                                                     \
        return 0;                                                             \
    } while (0)

static int rt_rbd_read(rbd_image_t image, int64_t token, uint64_t offset, size_t length, char *buf)
{
    RT_RBD_OP(rbd_aio_read2(image, offset, length, buf, c, 0));
}

static int rt_rbd_write(rbd_image_t image, int64_t token, uint64_t offset, size_t length, const char *buf)
{
    RT_RBD_OP(rbd_aio_write2(image, offset, length, buf, c, 0));
}

static int rt_rbd_flush(rbd_image_t image, int64_t token)
{
    RT_RBD_OP(rbd_aio_flush(image, c));
}

static int rt_rbd_discard(rbd_image_t image, int64_t token, uint64_t offset, uint64_t length)
{
    RT_RBD_OP(rbd_aio_discard(image, offset, length, c));
}

static int rt_rbd_write_zeroes(rbd_image_t image, int64_t token, uint64_t offset, size_t length)
{
    RT_RBD_OP(rbd_aio_write_zeroes(image, offset, length, c, 0, 0));
}

/* librbd 16.2 does not queue a compare-and-write's completion for rbd_poll_io_events: its callback (on librbd's
 * thread, C only) records the result in the waiter, marks it done and signals the waiter's eventfd. */
static void rt_rbd_wake(rbd_completion_t c, void *arg)
{
    struct rt_rbd_waiter *w = arg;
    uint64_t one = 1;
    w->result = rbd_aio_get_return_value(c);
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    ssize_t ignored = write(w->fd, &one, sizeof one);
    (void)ignored;
}

static int rt_rbd_waiter_done(struct rt_rbd_waiter *w)
{
    return __atomic_load_n(&w->done, __ATOMIC_ACQUIRE);
}

static int rt_rbd_compare_and_write(rbd_image_t image, struct rt_rbd_waiter *w, uint64_t offset, size_t length,
                                    const char *compare, const char *data, uint64_t *mismatch)
{
    int rc = rbd_aio_create_completion(w, rt_rbd_wake, &w->completion);
    if (rc < 0)
        return rc;
    rc = (int)rbd_aio_compare_and_write(image, offset, length, compare, data, w->completion, mismatch, 0);
    if (rc < 0) {
        rbd_aio_release(w->completion);
        return rc;
    }
    return 0;
}

static int rt_rbd_reap(rbd_image_t image, rbd_completion_t *scratch, int64_t *out, int max)
{
    int n = rbd_poll_io_events(image, scratch, max), count = 0;
    for (int i = 0; i < n; i++) {
        intptr_t arg = (intptr_t)rbd_aio_get_arg(scratch[i]);
        if (!(arg & 1))
            continue;               /* a waiter's (should librbd queue those too): released by its owner */
        out[2 * count] = arg >> 1;
        out[2 * count + 1] = rbd_aio_get_return_value(scratch[i]);
        count++;
        rbd_aio_release(scratch[i]);
    }
    return n ? (count ? count : -EAGAIN) : 0;
}

static void rt_rbd_header_changed(void *arg)
{
    uint64_t one = 1;
    ssize_t ignored = write((int)(intptr_t)arg, &one, sizeof one);    /* a full eventfd is already readable */
    (void)ignored;
}

static int rt_rbd_update_watch(rbd_image_t image, uint64_t *handle, int fd)
{
    return rbd_update_watch(image, handle, rt_rbd_header_changed, (void *)(intptr_t)fd);
}

struct rt_extents {
    int64_t *out;
    int max, count;
};

static int rt_rbd_extent(uint64_t offset, size_t length, int exists, void *arg)
{
    struct rt_extents *e = arg;
    if (!exists)
        return 0;
    if (e->count == e->max) {
        e->count++;
        return -ERANGE;             /* stops the iteration */
    }
    e->out[2 * e->count] = (int64_t)offset;
    e->out[2 * e->count + 1] = (int64_t)length;
    e->count++;
    return 0;
}

static int rt_rbd_extents(rbd_image_t image, uint64_t offset, uint64_t length, int64_t *out, int max)
{
    struct rt_extents e = {out, max, 0};
    int rc = rbd_diff_iterate2(image, NULL, offset, length, 1, 0, rt_rbd_extent, &e);
    if (rc < 0 && !(rc == -ERANGE && e.count > max))
        return rc;
    return e.count;
}
