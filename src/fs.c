/*
 * fs.c - files on libuv's thread pool: the functions of lunio.fs and the
 * File type ("lunio.File").
 *
 * Every operation is one or more uv_fs requests awaited through req.c, so
 * only the calling task waits. A request owns what it holds: a descriptor
 * it must close, a buffer, a string being written (anchored in the
 * registry), a reference to a File. Its cleanup releases all of it,
 * whichever of the task or the libuv callback finishes last; so a task
 * cancelled mid-call leaves nothing behind (an open that completes after
 * its task left closes the new descriptor in its cleanup). Operations of
 * several steps (read_file: open, fstat, reads) run them all in one
 * request, readied again between the steps (lunio__req_again).
 *
 * Results are built in protected mode (fs_finish) before the request is
 * freed, so running out of memory while making a big string leaks nothing.
 *
 * A File's C state (fs_file) is malloc'd apart from its userdata and
 * counted: the userdata holds one reference, each request in flight on it
 * another, so a request may finish after the userdata was collected. The
 * descriptor is closed by close(), __close, __gc or the loop closing (a
 * File is a resource of its loop); while requests still use it, closing
 * is put off until the last one is done, so the pool never reads a
 * descriptor that was closed (and perhaps reused) under it.
 *
 * Positions: a File keeps its own position and always reads and writes
 * at explicit offsets (pread/pwrite). A read without an offset moves the
 * position when its data is delivered, so a cancelled read consumes
 * nothing; a write moves it when it starts, so a cancelled write (which
 * may still reach the file) is never overwritten by the next one. One
 * task at a time may use the position. Descriptors that cannot seek
 * (pipes, terminals) are read and written where they are, and a read
 * cancelled there loses what it read, as it would anywhere.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define FILE_MT "lunio.File"

/* read_file reads at most this much per request: each chunk is one trip
 * through the pool, and the task resumes (briefly) between chunks. */
#define READ_CHUNK ((size_t)4 << 20)
/* File:read() without a size. */
#define DEFAULT_READ 65536

typedef struct fs_file fs_file;

typedef struct fs_req {
  lunio_req r;
  fs_file *file;   /* a counted reference; the request uses file->fd */
  uv_file fd;      /* a descriptor this request must close, or -1 */
  int take_fd;     /* an open: the callback hands the new fd to `fd` */
  uv_file closing; /* a close: the fd it closes (see on_fs) */
  int step;        /* which step of a multi-step operation ran */
  char *buf;       /* owned: data read, or NULL */
  size_t len;      /* bytes in buf (read) or written so far (write) */
  size_t cap;      /* size of buf */
  size_t asked;    /* bytes the last read asked for */
  int64_t start;   /* offset of the operation, -1 for "where the fd is" */
  int data_ref;    /* registry reference to the string being written */
  const char *data;
  size_t data_len;
  int64_t size; /* read_file: the size fstat reported, -1 if unknown */
} fs_req;

struct fs_file {
  lunio_resource res; /* registered while the descriptor is open */
  lunio_loop *loop;
  char *path;      /* for error messages and tostring */
  uv_file fd;      /* -1 once closed */
  int refs;        /* the userdata, plus each request on this file */
  int inflight;    /* requests using fd */
  int64_t pos;     /* the position reads and writes without offset use */
  fs_req *pos_req; /* the request using pos, while a task waits on it */
  unsigned closed : 1, append : 1;
  unsigned stream : 1; /* not seekable (a pipe, a terminal): no offsets */
};

typedef struct file_ud {
  fs_file *f; /* NULL until the open completed */
} file_ud;

/* ---- requests ----------------------------------------------------------- */

static void file_close_fd(fs_file *f);
static void file_unref(fs_file *f);

/* Closes fd at once, on the loop's thread. Used where nobody can wait for a
 * close (cleanup of an abandoned request, __gc, loop teardown) and for
 * descriptors opened only for reading, whose close flushes nothing. */
static void close_now(uv_file fd) {
  uv_fs_t req;
  uv_fs_close(NULL, &req, fd, NULL);
  uv_fs_req_cleanup(&req);
}

/* The one place a request's belongings are released (req.c calls it once,
 * from lunio__req_free). It may run inside a libuv callback: nothing here
 * allocates or can raise, and the registry write of luaL_unref only
 * stores into existing slots. */
static void fs_cleanup(lunio_req *r) {
  fs_req *fr = (fs_req *)r;
  uv_fs_req_cleanup(&r->u.fs);
  if (fr->fd >= 0)
    close_now(fr->fd);
  fr->fd = -1;
  free(fr->buf);
  fr->buf = NULL;
  if (fr->data_ref != LUA_NOREF) {
    lua_State *L = lunio__loop_state(r->loop);
    luaL_unref(L, LUA_REGISTRYINDEX, fr->data_ref);
    fr->data_ref = LUA_NOREF;
  }
  if (fr->file != NULL) {
    fs_file *f = fr->file;
    fr->file = NULL;
    if (f->pos_req == fr)
      f->pos_req = NULL;
    if (--f->inflight == 0 && f->closed)
      file_close_fd(f);
    file_unref(f);
  }
}

static fs_req *fs_req_new(lua_State *L, lunio_loop *loop) {
  fs_req *fr = (fs_req *)lunio__req_new(L, loop, sizeof *fr);
  fr->r.cleanup = fs_cleanup;
  fr->fd = -1;
  fr->data_ref = LUA_NOREF;
  fr->size = -1;
  return fr;
}

/* Readies fr for the next step of its operation: it keeps everything it
 * holds (and its place as the File's position holder). Nothing is
 * allocated between the steps, so nothing can fail there. */
static fs_req *fs_req_next(fs_req *fr) {
  uv_fs_req_cleanup(&fr->r.u.fs);
  lunio__req_again(&fr->r);
  fr->take_fd = 0; /* only an open hands over a descriptor */
  return fr;
}

static void on_fs(uv_fs_t *req) {
  fs_req *fr = req->data;
  /* Take the new descriptor before anything else: if the task left, the
   * request is freed below and its cleanup closes it. */
  if (fr->take_fd && req->result >= 0)
    fr->fd = (uv_file)req->result;
  /* A close that uv_cancel took back from the queue never ran: the
   * cleanup closes the descriptor instead. */
  if (req->fs_type == UV_FS_CLOSE && req->result == UV_ECANCELED)
    fr->fd = fr->closing;
  lunio__req_done(&fr->r, req->result < 0 ? (int)req->result : 0);
}

/* Raises the libuv error rc of operation `op` on path (and dest) with
 * .path (and .dest). */
static int fs_raise(lua_State *L, int rc, const char *op, const char *path,
                    const char *dest) {
  if (dest != NULL)
    lua_pushfstring(L, "%s '%s' -> '%s'", op, path, dest);
  else
    lua_pushfstring(L, "%s '%s'", op, path);
  lunio__uv_error_new(L, rc, lua_tostring(L, -1));
  lua_pushstring(L, path);
  lua_setfield(L, -2, "path");
  if (dest != NULL) {
    lua_pushstring(L, dest);
    lua_setfield(L, -2, "dest");
  }
  return lua_error(L);
}

/* What fs_finish hands to the function that builds the results. */
typedef struct fs_result {
  int (*push)(lua_State *L, struct fs_result *res);
  fs_req *fr;
  int status;       /* the request's status (< 0: a libuv error) */
  const char *op;   /* for errors */
  const char *path; /* for errors (a string of the caller's frame) */
  const char *dest;
} fs_result;

static int fs_push_protected(lua_State *L) {
  fs_result *res = lua_touserdata(L, 1);
  lua_settop(L, 0);
  if (res->status < 0)
    return fs_raise(L, res->status, res->op, res->path, res->dest);
  return res->push(L, res);
}

/* Ends an operation: builds its results (or its error) with res->push in
 * protected mode, frees the request, then returns them or raises. */
static int fs_finish(lua_State *L, fs_result *res) {
  int base = lua_gettop(L), status;
  if (!lua_checkstack(L, LUA_MINSTACK)) {
    lunio__req_free(&res->fr->r);
    return luaL_error(L, "stack overflow");
  }
  lua_pushcfunction(L, fs_push_protected);
  lua_pushlightuserdata(L, res);
  status = lua_pcall(L, 1, LUA_MULTRET, 0);
  lunio__req_free(&res->fr->r);
  if (status != LUA_OK)
    return lua_error(L);
  return lua_gettop(L) - base;
}

static int push_nothing(lua_State *L, fs_result *res) {
  (void)L;
  (void)res;
  return 0;
}

/* ---- arguments ---------------------------------------------------------- */

static const char *check_path(lua_State *L, int arg) {
  size_t len;
  const char *p = luaL_checklstring(L, arg, &len);
  luaL_argcheck(L, strlen(p) == len, arg, "path contains a NUL byte");
  return p;
}

/* Starts fr (submitted with rc) and parks the task, or raises the
 * submission's error. */
static int fs_await(lua_State *L, fs_req *fr, lunio_task *t, int rc,
                    const char *op, const char *path, lua_KFunction k) {
  if (rc < 0) {
    lunio__req_free(&fr->r);
    return fs_raise(L, rc, op, path, NULL);
  }
  return lunio__req_await(L, &fr->r, t, (lua_KContext)fr, k);
}

/* ---- stat --------------------------------------------------------------- */

static const char *type_of_mode(uint64_t mode) {
  switch (mode & S_IFMT) {
  case S_IFREG:
    return "file";
  case S_IFDIR:
    return "directory";
  case S_IFLNK:
    return "link";
  case S_IFIFO:
    return "fifo";
  case S_IFSOCK:
    return "socket";
  case S_IFCHR:
    return "char";
  case S_IFBLK:
    return "block";
  default:
    return "unknown";
  }
}

static void set_int(lua_State *L, const char *k, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

static void set_time(lua_State *L, const char *k, uv_timespec_t ts) {
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  lua_setfield(L, -2, k);
}

/* Pushes {type=, size=, mode=, uid=, gid=, ino=, dev=, nlink=, atime=,
 * mtime=, ctime=}; mode holds the permission bits (type is apart). */
static void push_stat(lua_State *L, const uv_stat_t *st) {
  lua_createtable(L, 0, 11);
  lua_pushstring(L, type_of_mode(st->st_mode));
  lua_setfield(L, -2, "type");
  set_int(L, "size", st->st_size);
  set_int(L, "mode", st->st_mode & 07777);
  set_int(L, "uid", st->st_uid);
  set_int(L, "gid", st->st_gid);
  set_int(L, "ino", st->st_ino);
  set_int(L, "dev", st->st_dev);
  set_int(L, "nlink", st->st_nlink);
  set_time(L, "atime", st->st_atim);
  set_time(L, "mtime", st->st_mtim);
  set_time(L, "ctime", st->st_ctim);
}

static int push_statbuf(lua_State *L, fs_result *res) {
  push_stat(L, &res->fr->r.u.fs.statbuf);
  return 1;
}

/* The frame is [path]; ctx is the request. */
static int stat_k(lua_State *L, int status, lua_KContext ctx) {
  fs_result res = {push_statbuf, (fs_req *)ctx, 0, "stat", NULL, NULL};
  (void)status;
  res.status = lunio__req_resumed(L, &res.fr->r);
  res.path = lua_tostring(L, 1);
  if (res.fr->r.u.fs.fs_type == UV_FS_LSTAT)
    res.op = "lstat";
  return fs_finish(L, &res);
}

static int fs_stat_common(lua_State *L, int link, const char *name) {
  const char *path = check_path(L, 1);
  lunio_task *t = lunio__check_in_task(L, name);
  fs_req *fr;
  int rc;
  lua_settop(L, 1);
  fr = fs_req_new(L, t->loop);
  rc = link ? uv_fs_lstat(lunio__uv(t->loop), &fr->r.u.fs, path, on_fs)
            : uv_fs_stat(lunio__uv(t->loop), &fr->r.u.fs, path, on_fs);
  return fs_await(L, fr, t, rc, name, path, stat_k);
}

/* stat(path) -> table */
static int fs_stat(lua_State *L) { return fs_stat_common(L, 0, "stat"); }

/* lstat(path) -> table (of the link itself) */
static int fs_lstat(lua_State *L) { return fs_stat_common(L, 1, "lstat"); }

/* The frame is [path]; ctx is the request. */
static int exists_k(lua_State *L, int status, lua_KContext ctx) {
  fs_req *fr = (fs_req *)ctx;
  int rc;
  (void)status;
  rc = lunio__req_resumed(L, &fr->r);
  if (rc == UV_ENOENT || rc == UV_ENOTDIR || rc == 0) {
    lunio__req_free(&fr->r);
    lua_pushboolean(L, rc == 0);
    return 1;
  } else {
    fs_result res = {push_nothing, fr, rc, "stat", NULL, NULL};
    res.path = lua_tostring(L, 1);
    return fs_finish(L, &res);
  }
}

/* exists(path) -> boolean: false when stat says ENOENT or ENOTDIR (a
 * dangling symbolic link does not exist); other failures raise. */
static int fs_exists(lua_State *L) {
  const char *path = check_path(L, 1);
  lunio_task *t = lunio__check_in_task(L, "exists");
  fs_req *fr;
  lua_settop(L, 1);
  fr = fs_req_new(L, t->loop);
  return fs_await(L, fr, t,
                  uv_fs_stat(lunio__uv(t->loop), &fr->r.u.fs, path, on_fs),
                  "stat", path, exists_k);
}

/* ---- operations without results ---------------------------------------- */

static const char *fs_op_name(uv_fs_type type) {
  switch (type) {
  case UV_FS_MKDIR:
    return "mkdir";
  case UV_FS_RMDIR:
    return "rmdir";
  case UV_FS_UNLINK:
    return "remove";
  case UV_FS_RENAME:
    return "rename";
  case UV_FS_COPYFILE:
    return "copyfile";
  case UV_FS_FSTAT:
    return "stat";
  case UV_FS_FSYNC:
    return "sync";
  default:
    return "fs";
  }
}

/* The frame is [path, (dest | mode), ...]; ctx is the request. */
static int simple_k(lua_State *L, int status, lua_KContext ctx) {
  fs_result res = {push_nothing, (fs_req *)ctx, 0, NULL, NULL, NULL};
  uv_fs_type type;
  (void)status;
  res.status = lunio__req_resumed(L, &res.fr->r);
  type = res.fr->r.u.fs.fs_type;
  res.op = fs_op_name(type);
  res.path = lua_tostring(L, 1);
  if (type == UV_FS_RENAME || type == UV_FS_COPYFILE)
    res.dest = lua_tostring(L, 2);
  return fs_finish(L, &res);
}

/* mkdir(path [, mode]) */
static int fs_mkdir(lua_State *L) {
  const char *path = check_path(L, 1);
  lua_Integer mode = luaL_optinteger(L, 2, 0777);
  lunio_task *t;
  fs_req *fr;
  luaL_argcheck(L, mode >= 0 && mode <= 07777, 2, "mode out of range");
  t = lunio__check_in_task(L, "mkdir");
  lua_settop(L, 2);
  fr = fs_req_new(L, t->loop);
  return fs_await(
      L, fr, t,
      uv_fs_mkdir(lunio__uv(t->loop), &fr->r.u.fs, path, (int)mode, on_fs),
      "mkdir", path, simple_k);
}

/* rmdir(path) */
static int fs_rmdir(lua_State *L) {
  const char *path = check_path(L, 1);
  lunio_task *t = lunio__check_in_task(L, "rmdir");
  fs_req *fr;
  lua_settop(L, 1);
  fr = fs_req_new(L, t->loop);
  return fs_await(L, fr, t,
                  uv_fs_rmdir(lunio__uv(t->loop), &fr->r.u.fs, path, on_fs),
                  "rmdir", path, simple_k);
}

/* remove(path): unlinks a file (directories: rmdir) */
static int fs_remove(lua_State *L) {
  const char *path = check_path(L, 1);
  lunio_task *t = lunio__check_in_task(L, "remove");
  fs_req *fr;
  lua_settop(L, 1);
  fr = fs_req_new(L, t->loop);
  return fs_await(L, fr, t,
                  uv_fs_unlink(lunio__uv(t->loop), &fr->r.u.fs, path, on_fs),
                  "remove", path, simple_k);
}

/* rename(path, dest) */
static int fs_rename(lua_State *L) {
  const char *path = check_path(L, 1);
  const char *dest = check_path(L, 2);
  lunio_task *t = lunio__check_in_task(L, "rename");
  fs_req *fr;
  int rc;
  lua_settop(L, 2);
  fr = fs_req_new(L, t->loop);
  rc = uv_fs_rename(lunio__uv(t->loop), &fr->r.u.fs, path, dest, on_fs);
  if (rc < 0) {
    lunio__req_free(&fr->r);
    return fs_raise(L, rc, "rename", path, dest);
  }
  return lunio__req_await(L, &fr->r, t, (lua_KContext)fr, simple_k);
}

/* copyfile(path, dest [, exclusive]): exclusive fails when dest exists */
static int fs_copyfile(lua_State *L) {
  const char *path = check_path(L, 1);
  const char *dest = check_path(L, 2);
  int flags = lua_toboolean(L, 3) ? UV_FS_COPYFILE_EXCL : 0;
  lunio_task *t = lunio__check_in_task(L, "copyfile");
  fs_req *fr;
  int rc;
  lua_settop(L, 2);
  fr = fs_req_new(L, t->loop);
  rc =
      uv_fs_copyfile(lunio__uv(t->loop), &fr->r.u.fs, path, dest, flags, on_fs);
  if (rc < 0) {
    lunio__req_free(&fr->r);
    return fs_raise(L, rc, "copyfile", path, dest);
  }
  return lunio__req_await(L, &fr->r, t, (lua_KContext)fr, simple_k);
}

/* ---- operations with a path or a listing as result ----------------------- */

static int push_ptr_string(lua_State *L, fs_result *res) {
  lua_pushstring(L, res->fr->r.u.fs.ptr);
  return 1;
}

/* The frame is [path]; ctx is the request. */
static int realpath_k(lua_State *L, int status, lua_KContext ctx) {
  fs_result res = {push_ptr_string, (fs_req *)ctx, 0, "realpath", NULL, NULL};
  (void)status;
  res.status = lunio__req_resumed(L, &res.fr->r);
  res.path = lua_tostring(L, 1);
  return fs_finish(L, &res);
}

/* realpath(path) -> the canonical absolute path */
static int fs_realpath(lua_State *L) {
  const char *path = check_path(L, 1);
  lunio_task *t = lunio__check_in_task(L, "realpath");
  fs_req *fr;
  lua_settop(L, 1);
  fr = fs_req_new(L, t->loop);
  return fs_await(L, fr, t,
                  uv_fs_realpath(lunio__uv(t->loop), &fr->r.u.fs, path, on_fs),
                  "realpath", path, realpath_k);
}

static int push_req_path(lua_State *L, fs_result *res) {
  lua_pushstring(L, res->fr->r.u.fs.path); /* the template, filled in */
  return 1;
}

/* The frame is [prefix, template]; ctx is the request. */
static int mkdtemp_k(lua_State *L, int status, lua_KContext ctx) {
  fs_result res = {push_req_path, (fs_req *)ctx, 0, "mkdtemp", NULL, NULL};
  (void)status;
  res.status = lunio__req_resumed(L, &res.fr->r);
  res.path = lua_tostring(L, 2);
  return fs_finish(L, &res);
}

/* mkdtemp(prefix) -> path of a new directory: prefix and six random
 * characters */
static int fs_mkdtemp(lua_State *L) {
  const char *tpl;
  lunio_task *t;
  fs_req *fr;
  check_path(L, 1);
  t = lunio__check_in_task(L, "mkdtemp");
  lua_settop(L, 1);
  tpl = lua_pushfstring(L, "%sXXXXXX", lua_tostring(L, 1));
  fr = fs_req_new(L, t->loop);
  return fs_await(L, fr, t,
                  uv_fs_mkdtemp(lunio__uv(t->loop), &fr->r.u.fs, tpl, on_fs),
                  "mkdtemp", tpl, mkdtemp_k);
}

static const char *dirent_type(uv_dirent_type_t type) {
  switch (type) {
  case UV_DIRENT_FILE:
    return "file";
  case UV_DIRENT_DIR:
    return "directory";
  case UV_DIRENT_LINK:
    return "link";
  case UV_DIRENT_FIFO:
    return "fifo";
  case UV_DIRENT_SOCKET:
    return "socket";
  case UV_DIRENT_CHAR:
    return "char";
  case UV_DIRENT_BLOCK:
    return "block";
  default:
    return "unknown";
  }
}

/* The iterator scandir returns: upvalues names, types, next index. */
static int scandir_iter(lua_State *L) {
  lua_Integer i = lua_tointeger(L, lua_upvalueindex(3));
  if (lua_rawgeti(L, lua_upvalueindex(1), i) == LUA_TNIL)
    return 1;
  lua_rawgeti(L, lua_upvalueindex(2), i);
  lua_pushinteger(L, i + 1);
  lua_replace(L, lua_upvalueindex(3));
  return 2;
}

static int push_listing(lua_State *L, fs_result *res) {
  uv_dirent_t ent;
  int n = 0;
  lua_newtable(L);
  lua_newtable(L);
  while (uv_fs_scandir_next(&res->fr->r.u.fs, &ent) != UV_EOF) {
    n++;
    lua_pushstring(L, ent.name);
    lua_rawseti(L, -3, n);
    lua_pushstring(L, dirent_type(ent.type));
    lua_rawseti(L, -2, n);
  }
  lua_pushinteger(L, 1);
  lua_pushcclosure(L, scandir_iter, 3);
  return 1;
}

/* The frame is [path]; ctx is the request. */
static int scandir_k(lua_State *L, int status, lua_KContext ctx) {
  fs_result res = {push_listing, (fs_req *)ctx, 0, "scandir", NULL, NULL};
  (void)status;
  res.status = lunio__req_resumed(L, &res.fr->r);
  res.path = lua_tostring(L, 1);
  return fs_finish(L, &res);
}

/* scandir(path) -> iterator of name, type (sorted by name; no . or ..) */
static int fs_scandir(lua_State *L) {
  const char *path = check_path(L, 1);
  lunio_task *t = lunio__check_in_task(L, "scandir");
  fs_req *fr;
  lua_settop(L, 1);
  fr = fs_req_new(L, t->loop);
  return fs_await(
      L, fr, t, uv_fs_scandir(lunio__uv(t->loop), &fr->r.u.fs, path, 0, on_fs),
      "scandir", path, scandir_k);
}

/* ---- read_file ----------------------------------------------------------- */

enum { RF_OPEN, RF_FSTAT, RF_READ };

static int push_buffer(lua_State *L, fs_result *res) {
  lua_pushlstring(L, res->fr->buf ? res->fr->buf : "", res->fr->len);
  return 1;
}

/* Makes room in fr's buffer for the next read; 0 or UV_ENOMEM. A file of
 * known size gets one exact buffer (a byte more, to see the end); past
 * that size (it grew) or when the size is unknown, the buffer doubles
 * (realloc of big blocks remaps pages rather than copying them). */
static int rf_reserve(fs_req *fr) {
  size_t want;
  char *p;
  if (fr->cap > fr->len)
    return 0;
  if (fr->size >= 0 && fr->len <= (size_t)fr->size)
    want = (size_t)fr->size + 1;
  else if (fr->cap < 65536)
    want = 65536;
  else if (fr->cap > SIZE_MAX / 2)
    return UV_ENOMEM;
  else
    want = fr->cap * 2;
  p = realloc(fr->buf, want);
  if (p == NULL)
    return UV_ENOMEM;
  fr->buf = p;
  fr->cap = want;
  return 0;
}

static int rf_read(lua_State *L, fs_req *fr, lunio_task *t);

/* The frame is [path]; ctx is the request of the step that ended. */
static int read_file_k(lua_State *L, int status, lua_KContext ctx) {
  fs_req *fr = (fs_req *)ctx;
  fs_result res = {push_buffer, fr, 0, "read", NULL, NULL};
  lunio_task *t = lunio__task_of(L);
  int rc;
  (void)status;
  rc = lunio__req_resumed(L, &fr->r);
  res.path = lua_tostring(L, 1);
  if (rc < 0) {
    res.status = rc;
    res.op = fr->step == RF_OPEN ? "open" : "read";
    return fs_finish(L, &res);
  }
  switch (fr->step) {
  case RF_OPEN:
    fr = fs_req_next(fr);
    fr->step = RF_FSTAT;
    rc = uv_fs_fstat(lunio__uv(t->loop), &fr->r.u.fs, fr->fd, on_fs);
    break;
  case RF_FSTAT: {
    const uv_stat_t *st = &fr->r.u.fs.statbuf;
    if ((st->st_mode & S_IFMT) == S_IFDIR) {
      res.status = UV_EISDIR;
      return fs_finish(L, &res);
    }
    /* A regular file's size is known: read it into one exact buffer (one
     * byte more to see the end). Others (procfs, pipes) say 0: grow. */
    if ((st->st_mode & S_IFMT) == S_IFREG && st->st_size > 0)
      fr->size = (int64_t)st->st_size;
    fr = fs_req_next(fr);
    return rf_read(L, fr, t);
  }
  default: {
    size_t got = (size_t)fr->r.u.fs.result;
    fr->len += got;
    /* The end: nothing more, or a short read of a regular file (a regular
     * file reads short only at its end). */
    if (got == 0 || (fr->size >= 0 && got < fr->asked)) {
      close_now(fr->fd); /* opened for reading: closing flushes nothing */
      fr->fd = -1;
      return fs_finish(L, &res);
    }
    fr = fs_req_next(fr);
    return rf_read(L, fr, t);
  }
  }
  if (rc < 0) {
    res.fr = fr;
    res.status = rc;
    return fs_finish(L, &res);
  }
  return lunio__req_await(L, &fr->r, t, (lua_KContext)fr, read_file_k);
}

/* Reads the next chunk of fr's file at the end of what it has. */
static int rf_read(lua_State *L, fs_req *fr, lunio_task *t) {
  uv_buf_t b;
  size_t room;
  int rc = rf_reserve(fr);
  if (rc == 0) {
    room = fr->cap - fr->len;
    fr->asked = room < READ_CHUNK ? room : READ_CHUNK;
    b = uv_buf_init(fr->buf + fr->len, (unsigned)fr->asked);
    fr->step = RF_READ;
    /* Where the descriptor is: it is ours, and pipes cannot seek. */
    rc = uv_fs_read(lunio__uv(t->loop), &fr->r.u.fs, fr->fd, &b, 1, -1, on_fs);
  }
  if (rc < 0) {
    fs_result res = {push_nothing, fr, rc, "read", NULL, NULL};
    res.path = lua_tostring(L, 1);
    return fs_finish(L, &res);
  }
  return lunio__req_await(L, &fr->r, t, (lua_KContext)fr, read_file_k);
}

/* read_file(path) -> the file's contents */
static int fs_read_file(lua_State *L) {
  const char *path = check_path(L, 1);
  lunio_task *t = lunio__check_in_task(L, "read_file");
  fs_req *fr;
  lua_settop(L, 1);
  fr = fs_req_new(L, t->loop);
  fr->take_fd = 1;
  fr->step = RF_OPEN;
  return fs_await(
      L, fr, t,
      uv_fs_open(lunio__uv(t->loop), &fr->r.u.fs, path, O_RDONLY, 0, on_fs),
      "open", path, read_file_k);
}

/* ---- write_file, append_file --------------------------------------------- */

enum { WF_OPEN, WF_WRITE, WF_CLOSE };

/* Anchors the string at idx in the registry (the pool reads it while the
 * task may be gone); done before the request exists, so that a failure
 * here leaves nothing to undo. */
static int fs_anchor(lua_State *L, int idx) {
  lua_pushvalue(L, idx);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Hands the anchored string at idx (reference ref) to fr. */
static void fs_hold_data(lua_State *L, fs_req *fr, int idx, int ref) {
  fr->data = lua_tolstring(L, idx, &fr->data_len);
  fr->data_ref = ref;
}

/* Writes what is left of fr's data at fr->start + fr->len (or at the
 * descriptor's position when start < 0). */
static int fs_write_rest(lunio_loop *loop, fs_req *fr, uv_file fd) {
  size_t left = fr->data_len - fr->len;
  uv_buf_t b = uv_buf_init((char *)fr->data + fr->len,
                           (unsigned)(left < 0x40000000 ? left : 0x40000000));
  return uv_fs_write(lunio__uv(loop), &fr->r.u.fs, fd, &b, 1,
                     fr->start < 0 ? -1 : fr->start + (int64_t)fr->len, on_fs);
}

/* The frame is [path, data]; ctx is the request of the step that ended. */
static int write_file_k(lua_State *L, int status, lua_KContext ctx) {
  fs_req *fr = (fs_req *)ctx;
  fs_result res = {push_nothing, fr, 0, "write", NULL, NULL};
  lunio_task *t = lunio__task_of(L);
  int rc;
  (void)status;
  rc = lunio__req_resumed(L, &fr->r);
  res.path = lua_tostring(L, 1);
  if (rc < 0) {
    res.status = rc;
    res.op = fr->step == WF_OPEN    ? "open"
             : fr->step == WF_CLOSE ? "close"
                                    : "write";
    return fs_finish(L, &res);
  }
  if (fr->step == WF_WRITE)
    fr->len += (size_t)fr->r.u.fs.result;
  if (fr->step == WF_CLOSE)
    return fs_finish(L, &res);
  fr = fs_req_next(fr);
  if (fr->len < fr->data_len) {
    fr->step = WF_WRITE;
    rc = fs_write_rest(t->loop, fr, fr->fd);
  } else {
    /* Closing may report a failed write-back (NFS, quotas): wait for it.
     * The descriptor now belongs to the close request. */
    uv_file fd = fr->fd;
    fr->fd = -1;
    fr->closing = fd;
    fr->step = WF_CLOSE;
    rc = uv_fs_close(lunio__uv(t->loop), &fr->r.u.fs, fd, on_fs);
    if (rc < 0)
      close_now(fd);
  }
  if (rc < 0) {
    res.fr = fr;
    res.status = rc;
    return fs_finish(L, &res);
  }
  return lunio__req_await(L, &fr->r, t, (lua_KContext)fr, write_file_k);
}

static int write_file_common(lua_State *L, int flags, const char *name) {
  const char *path = check_path(L, 1);
  lunio_task *t;
  fs_req *fr;
  int ref;
  luaL_checkstring(L, 2);
  t = lunio__check_in_task(L, name);
  lua_settop(L, 2);
  ref = fs_anchor(L, 2);
  fr = fs_req_new(L, t->loop);
  fs_hold_data(L, fr, 2, ref);
  fr->take_fd = 1;
  fr->step = WF_OPEN;
  fr->start = -1;
  return fs_await(L, fr, t,
                  uv_fs_open(lunio__uv(t->loop), &fr->r.u.fs, path,
                             O_WRONLY | O_CREAT | flags, 0666, on_fs),
                  "open", path, write_file_k);
}

/* write_file(path, data): creates or truncates */
static int fs_write_file(lua_State *L) {
  return write_file_common(L, O_TRUNC, "write_file");
}

/* append_file(path, data): creates or appends */
static int fs_append_file(lua_State *L) {
  return write_file_common(L, O_APPEND, "append_file");
}

/* ---- File --------------------------------------------------------------- */

static void file_unref(fs_file *f) {
  if (--f->refs > 0)
    return;
  free(f->path);
  free(f);
}

static void file_close_fd(fs_file *f) {
  if (f->fd >= 0)
    close_now(f->fd);
  f->fd = -1;
}

/* Marks f closed (no new operations) and unregisters it. The descriptor
 * is the caller's business: it is closed by whoever sees inflight == 0. */
static void file_mark_closed(fs_file *f) {
  f->closed = 1;
  lunio__resource_remove(&f->res);
}

/* The loop closes (teardown): requests still in flight finish during the
 * teardown's last libuv run; the last one closes the descriptor. */
static void file_resource_close(lunio_resource *r) {
  fs_file *f = (fs_file *)r;
  file_mark_closed(f);
  if (f->inflight == 0)
    file_close_fd(f);
}

static const lunio_resource_ops file_resource = {"File", file_resource_close};

static fs_file *check_file_ud(lua_State *L, int idx) {
  file_ud *u = luaL_checkudata(L, idx, FILE_MT);
  if (u->f == NULL)
    luaL_argerror(L, idx, "not an open File");
  return u->f;
}

/* The File at idx, open and on the running task's loop; raises otherwise
 * (kind "closed" for a closed one). */
static fs_file *check_file(lua_State *L, int idx, const char *fname,
                           lunio_task **t) {
  fs_file *f = check_file_ud(L, idx);
  if (f->closed)
    lunio__error_raise(L, "closed", "the file is closed");
  *t = lunio__check_in_task(L, fname);
  if ((*t)->loop != f->loop)
    lunio__error_raise(L, "invalid_state", "the file belongs to another loop");
  return f;
}

/* Takes the position for fr, or raises when another task holds it. */
static void take_position(lua_State *L, fs_file *f, fs_req *fr) {
  if (f->pos_req != NULL && f->pos_req->r.task != NULL) {
    lunio__req_free(&fr->r);
    lunio__error_raise(L, "invalid_state",
                       "another task is reading or writing at this file's "
                       "position; pass an offset for concurrent access");
  }
  f->pos_req = fr;
}

/* A new request on f's descriptor. */
static fs_req *file_req_new(lua_State *L, fs_file *f) {
  fs_req *fr = fs_req_new(L, f->loop);
  fr->file = f;
  f->refs++;
  f->inflight++;
  return fr;
}

static int push_read(lua_State *L, fs_result *res) {
  fs_req *fr = res->fr;
  size_t got = (size_t)fr->r.u.fs.result;
  if (got == 0)
    lua_pushnil(L); /* end of file */
  else
    lua_pushlstring(L, fr->buf, got);
  return 1;
}

/* The frame is [file, n, offset]; ctx is the request. */
static int file_read_k(lua_State *L, int status, lua_KContext ctx) {
  fs_result res = {push_read, (fs_req *)ctx, 0, "read", NULL, NULL};
  fs_req *fr = res.fr;
  (void)status;
  res.status = lunio__req_resumed(L, &fr->r);
  res.path = fr->file->path;
  /* The data reaches the task: only now does the position move. */
  if (res.status == 0 && fr->file->pos_req == fr)
    fr->file->pos += fr->r.u.fs.result;
  return fs_finish(L, &res);
}

/* file:read([n [, offset]]) -> up to n bytes (default 64 KiB), or nil at
 * the end. Without an offset, reads at the file's position and moves it. */
static int file_read(lua_State *L) {
  lua_Integer n = luaL_optinteger(L, 2, DEFAULT_READ);
  int positional = lua_isnoneornil(L, 3);
  lua_Integer offset = positional ? 0 : luaL_checkinteger(L, 3);
  lunio_task *t;
  fs_file *f;
  fs_req *fr;
  uv_buf_t b;
  int rc;
  luaL_argcheck(L, n >= 0 && n <= 0x7fffffff, 2, "size out of range");
  luaL_argcheck(L, offset >= 0, 3, "negative offset");
  f = check_file(L, 1, "read", &t);
  lua_settop(L, 3);
  if (n == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  fr = file_req_new(L, f);
  if (positional && f->stream)
    offset = -1;
  else if (positional) {
    take_position(L, f, fr);
    offset = f->pos;
  }
  fr->buf = malloc((size_t)n);
  if (fr->buf == NULL) {
    lunio__req_free(&fr->r);
    return luaL_error(L, "not enough memory");
  }
  b = uv_buf_init(fr->buf, (unsigned)n);
  rc = uv_fs_read(lunio__uv(t->loop), &fr->r.u.fs, f->fd, &b, 1, offset, on_fs);
  return fs_await(L, fr, t, rc, "read", f->path, file_read_k);
}

/* The frame is [file, data, offset]; ctx is the request. */
static int file_write_k(lua_State *L, int status, lua_KContext ctx) {
  fs_result res = {push_nothing, (fs_req *)ctx, 0, "write", NULL, NULL};
  fs_req *fr = res.fr;
  fs_file *f = fr->file;
  lunio_task *t = lunio__task_of(L);
  (void)status;
  res.status = lunio__req_resumed(L, &fr->r);
  res.path = f->path;
  if (res.status == 0) {
    fr->len += (size_t)fr->r.u.fs.result;
    if (fr->len < fr->data_len) { /* a short write: go on */
      fr = fs_req_next(fr);
      res.fr = fr;
      res.status = fs_write_rest(t->loop, fr, f->fd);
      if (res.status == 0)
        return lunio__req_await(L, &fr->r, t, (lua_KContext)fr, file_write_k);
    }
  }
  if (res.status < 0 && f->pos_req == fr) /* the rest is not there */
    f->pos = fr->start + (int64_t)fr->len;
  if (res.status == 0) {
    lunio__req_free(&fr->r);
    lua_settop(L, 1);
    return 1;
  }
  return fs_finish(L, &res);
}

/* file:write(data [, offset]) -> file. Writes all of data; without an
 * offset at the file's position (moving it), in append mode at the end. */
static int file_write(lua_State *L) {
  int positional = lua_isnoneornil(L, 3);
  lua_Integer offset = positional ? 0 : luaL_checkinteger(L, 3);
  lunio_task *t;
  fs_file *f;
  fs_req *fr;
  int rc, ref;
  luaL_checkstring(L, 2);
  luaL_argcheck(L, offset >= 0, 3, "negative offset");
  f = check_file(L, 1, "write", &t);
  lua_settop(L, 3);
  if (lua_rawlen(L, 2) == 0) {
    lua_settop(L, 1);
    return 1;
  }
  ref = fs_anchor(L, 2);
  fr = file_req_new(L, f);
  fs_hold_data(L, fr, 2, ref);
  if (f->append || (positional && f->stream)) {
    fr->start = -1; /* O_APPEND: the kernel writes at the end */
  } else if (positional) {
    take_position(L, f, fr);
    fr->start = f->pos;
    f->pos += (int64_t)fr->data_len; /* see the top of this file */
  } else
    fr->start = offset;
  rc = fs_write_rest(t->loop, fr, f->fd);
  if (rc < 0 && f->pos_req == fr)
    f->pos = fr->start;
  return fs_await(L, fr, t, rc, "write", f->path, file_write_k);
}

/* The end of file:stat() and file:sync(), told apart by the request's
 * type. The frame is [file]; ctx is the request. */
static int file_simple_k(lua_State *L, int status, lua_KContext ctx) {
  fs_result res = {push_nothing, (fs_req *)ctx, 0, NULL, NULL, NULL};
  uv_fs_type type;
  (void)status;
  res.status = lunio__req_resumed(L, &res.fr->r);
  type = res.fr->r.u.fs.fs_type;
  res.path = res.fr->file->path;
  res.op = fs_op_name(type);
  if (type == UV_FS_FSTAT)
    res.push = push_statbuf;
  return fs_finish(L, &res);
}

/* file:stat() -> table, as fs.stat */
static int file_stat(lua_State *L) {
  lunio_task *t;
  fs_file *f = check_file(L, 1, "stat", &t);
  fs_req *fr;
  lua_settop(L, 1);
  fr = file_req_new(L, f);
  return fs_await(L, fr, t,
                  uv_fs_fstat(lunio__uv(t->loop), &fr->r.u.fs, f->fd, on_fs),
                  "stat", f->path, file_simple_k);
}

/* file:sync(): flushes the file's data and metadata to its device */
static int file_sync(lua_State *L) {
  lunio_task *t;
  fs_file *f = check_file(L, 1, "sync", &t);
  fs_req *fr;
  lua_settop(L, 1);
  fr = file_req_new(L, f);
  return fs_await(L, fr, t,
                  uv_fs_fsync(lunio__uv(t->loop), &fr->r.u.fs, f->fd, on_fs),
                  "sync", f->path, file_simple_k);
}

/* The frame is [file]; ctx is the close request. */
static int file_close_k(lua_State *L, int status, lua_KContext ctx) {
  fs_req *fr = (fs_req *)ctx;
  file_ud *u = lua_touserdata(L, 1);
  fs_result res = {push_nothing, fr, 0, "close", NULL, NULL};
  (void)status;
  res.status = lunio__req_resumed(L, &fr->r);
  res.path = u->f->path;
  return fs_finish(L, &res);
}

/* file:close(). In a task, waits for the close (which may report a failed
 * write-back); elsewhere, or while other requests still use the
 * descriptor, closes it without waiting. Closing twice does nothing. */
static int file_close(lua_State *L) {
  fs_file *f = check_file_ud(L, 1);
  lunio_task *t = lunio__task_of(L);
  uv_file fd = f->fd;
  fs_req *fr;
  int rc;
  if (f->closed)
    return 0;
  file_mark_closed(f);
  if (f->inflight > 0)
    return 0; /* the last request closes it */
  f->fd = -1;
  if (!LUNIO_CAN_WAIT(L, t) || t->loop != f->loop) {
    close_now(fd);
    return 0;
  }
  lua_settop(L, 1);
  /* The descriptor goes to the close in the pool, which completes even if
   * the task is cancelled (or, taken back from the queue, to the
   * request's cleanup: see on_fs). */
  fr = fs_req_new(L, f->loop);
  fr->closing = fd;
  rc = uv_fs_close(lunio__uv(t->loop), &fr->r.u.fs, fd, on_fs);
  if (rc < 0)
    close_now(fd);
  return fs_await(L, fr, t, rc, "close", f->path, file_close_k);
}

static int file_gc(lua_State *L) {
  file_ud *u = luaL_checkudata(L, 1, FILE_MT);
  fs_file *f = u->f;
  if (f == NULL)
    return 0;
  u->f = NULL;
  if (!f->closed) {
    file_mark_closed(f);
    if (f->inflight == 0)
      file_close_fd(f);
  }
  file_unref(f);
  return 0;
}

static int file_tostring(lua_State *L) {
  file_ud *u = luaL_checkudata(L, 1, FILE_MT);
  if (u->f == NULL)
    lua_pushliteral(L, "lunio.File<closed>");
  else
    lua_pushfstring(L, "lunio.File<%s%s>", u->f->path,
                    u->f->closed ? ", closed" : "");
  return 1;
}

/* ---- open --------------------------------------------------------------- */

/* Parses a mode of io.open ("r", "w", "a", "r+", "w+", "a+", each with any
 * number of "b" after it) into open(2) flags; -1 when invalid. */
static int parse_mode(const char *mode, int *append) {
  int flags;
  switch (*mode++) {
  case 'r':
    flags = O_RDONLY;
    break;
  case 'w':
    flags = O_WRONLY | O_CREAT | O_TRUNC;
    break;
  case 'a':
    flags = O_WRONLY | O_CREAT | O_APPEND;
    break;
  default:
    return -1;
  }
  if (*mode == '+') {
    mode++;
    flags = (flags & ~O_WRONLY) | O_RDWR;
  }
  if (strspn(mode, "b") != strlen(mode))
    return -1;
  *append = (flags & O_APPEND) != 0;
  return flags;
}

/* The frame is [path, mode, file userdata]; ctx is the request. */
static int open_k(lua_State *L, int status, lua_KContext ctx) {
  fs_req *fr = (fs_req *)ctx;
  fs_result res = {push_nothing, fr, 0, "open", NULL, NULL};
  file_ud *u = lua_touserdata(L, 3);
  fs_file *f;
  int append = 0;
  (void)status;
  res.status = lunio__req_resumed(L, &fr->r);
  res.path = lua_tostring(L, 1);
  if (res.status < 0)
    return fs_finish(L, &res);
  /* Allocate before taking the descriptor: on failure the request's
   * cleanup closes it. */
  f = calloc(1, sizeof *f);
  if (f != NULL)
    f->path = strdup(res.path);
  if (f == NULL || f->path == NULL) {
    free(f);
    lunio__req_free(&fr->r);
    return luaL_error(L, "not enough memory");
  }
  parse_mode(lua_tostring(L, 2), &append);
  f->loop = fr->r.loop;
  f->fd = fr->fd;
  fr->fd = -1;
  f->refs = 1;
  f->append = append;
  /* lseek does no I/O: fine on the loop's thread. */
  f->stream = lseek(f->fd, 0, SEEK_CUR) < 0 && errno == ESPIPE;
  lunio__resource_add(f->loop, &f->res, &file_resource);
  u->f = f;
  lunio__req_free(&fr->r);
  return 1;
}

/* open(path [, mode]) -> File; mode as io.open (default "r") */
static int fs_open(lua_State *L) {
  const char *path = check_path(L, 1);
  const char *mode = luaL_optstring(L, 2, "r");
  int append, flags = parse_mode(mode, &append);
  lunio_task *t;
  fs_req *fr;
  file_ud *u;
  luaL_argcheck(L, flags >= 0, 2,
                lua_pushfstring(L, "invalid mode '%s'", mode));
  t = lunio__check_in_task(L, "open");
  lua_settop(L, 1);
  lua_pushstring(L, mode);
  /* The File exists before the descriptor does, so that nothing the
   * continuation makes can fail after the open succeeded. */
  u = lua_newuserdatauv(L, sizeof *u, 0);
  u->f = NULL;
  luaL_setmetatable(L, FILE_MT);
  fr = fs_req_new(L, t->loop);
  fr->take_fd = 1;
  return fs_await(
      L, fr, t,
      uv_fs_open(lunio__uv(t->loop), &fr->r.u.fs, path, flags, 0666, on_fs),
      "open", path, open_k);
}

void lunio__open_fs(lua_State *L) {
  static const luaL_Reg funcs[] = {{"read_file", fs_read_file},
                                   {"write_file", fs_write_file},
                                   {"append_file", fs_append_file},
                                   {"open", fs_open},
                                   {"stat", fs_stat},
                                   {"lstat", fs_lstat},
                                   {"exists", fs_exists},
                                   {"mkdir", fs_mkdir},
                                   {"rmdir", fs_rmdir},
                                   {"remove", fs_remove},
                                   {"rename", fs_rename},
                                   {"copyfile", fs_copyfile},
                                   {"scandir", fs_scandir},
                                   {"realpath", fs_realpath},
                                   {"mkdtemp", fs_mkdtemp},
                                   {NULL, NULL}};
  static const luaL_Reg methods[] = {
      {"read", file_read}, {"write", file_write}, {"stat", file_stat},
      {"sync", file_sync}, {"close", file_close}, {NULL, NULL}};
  lua_newtable(L);
  luaL_setfuncs(L, funcs, 0);
  if (luaL_newmetatable(L, FILE_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, file_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, file_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, file_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  /* The methods table, for lunio.fs to add lines() in Lua. */
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "File");
  lua_pop(L, 1);
}
