/*
 * arca-runtime front end: decide in microseconds whether a call is plain runc's business.
 *
 * containerd's shim runs the OCI runtime 4-5 times per container (create, start, state, kill,
 * delete). A Python interpreter costs ~10-20 ms per start before Arca's code runs, so the calls
 * that have nothing Arca-specific to do are answered here by execvp'ing runc with the exact
 * argument vector (same stdio, fds, exit status); everything else is handed to the Python
 * implementation (arca.host.runtime.cli:main), which makes the same decisions again with
 * full validation. This file only ever *chooses the Python path* when in doubt, so it never
 * weakens a decision the Python code would make:
 *
 *   - no command, or a runtime config file exists (JSON: Python parses it)   -> Python
 *   - command not handled by Arca (start, state, kill, ps, features, ...)      -> runc
 *   - delete/checkpoint/restore of an id without Arca state (under this --root)  -> runc
 *   - delete [--force] of a TEE container whose create completed ("created"):
 *     runc delete, then hand Arca's part (lifecycle._undo: the backend's undo, Arca's
 *     files) to the daemon; with no daemon of these sources, unregister / drop the
 *     platform's registration file and remove Arca's files; half-created ones go to Python
 *   - create/run whose config.json has no "io.arca" text, no \u escape and joins no
 *     PID, mount or IPC namespace by path (Python refuses joining a TD's),
 *     with the default TEE "none" (ARCA_TEE unset/empty or "none")           -> runc
 *   - other creates, when the sim daemon answers and runs the same sources (code stamp):
 *     the daemon does Arca's part (fastcreate.py), runc create runs as our child, then runc
 *     start (the agent works until start releases it through the TD's "go" FIFO), then the
 *     "created" state is renamed into place (or runc delete --force + the daemon's undo)
 *   - start/state of an id without Arca state                                 -> runc
 *   - start of a created TEE container not yet released: write one byte to "go" once the
 *     agent holds it open, record "released" (a second start is runc's: already running)
 *   - state of one not yet released: runc's answer with "running" read as "created"; of a
 *     half-created one (or corrupt state): Python
 *   - delete without --force of one not yet released: runc delete --force (runc kills a
 *     created container on delete too)
 *   - anything else (TEE create/delete, exec, odd input)                      -> Python
 *
 * Its decisions are cli.decide's (split_globals, _has_arca_state, _obviously_plain,
 * lifecycle.arca_handles over the state files of machine.py) and config.py's (ARCA_RUNC,
 * ARCA_TEE, ARCA_RUNTIME_CONFIG): tests/unit/host/test_runtime_frontend_agreement.py fails,
 * case by case, when the two decide differently; test_runtime_frontend.py checks which calls
 * never start Python. Besides deciding, it only hands off (to Python or the daemon) and speaks
 * the runtime's go-FIFO protocol for start/state, which needs no Python (ADR 0012). Built by
 * scripts/setup.sh with the interpreter, source and site-packages paths compiled in
 * (ARCA_PYTHON, ARCA_SRC, ARCA_SITE). The Python path runs with -I -S: no site,
 * no .pth processing, no PYTHON* variables, no current directory on sys.path.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#ifndef ARCA_PYTHON
#error "build with -DARCA_PYTHON=... -DARCA_SRC=... -DARCA_SITE=... (scripts/setup.sh)"
#endif

#define MAX_CONFIG_BYTES (4 * 1024 * 1024)
/* lifecycle.AGENT_READY_TIMEOUT_S */
#define AGENT_READY_TIMEOUT_S 10
#define AGENT_READY_TIMEOUT "10"
/* sha256 of the sources the daemon's create runs (fastcreate.code_stamp); "" disables it. */
#ifndef ARCA_STAMP
#define ARCA_STAMP ""
#endif

static const char *const with_value[] = {"--root", "--log", "--log-format", "--criu",
                                         "--rootless", NULL};
static const char *const handled[] = {"create", "delete", "exec", "run", "checkpoint",
                                      "restore", "start", "state", NULL};

static int in(const char *s, const char *const *set) {
    for (; *set; set++)
        if (strcmp(s, *set) == 0) return 1;
    return 0;
}

static void run_python(char **argv) {
    static const char boot[] =
        "import sys;sys.path+=['" ARCA_SRC "','" ARCA_SITE "'];"
        "from arca.host.runtime.cli import main;sys.exit(main())";
    int argc = 0;
    while (argv[argc]) argc++;
    char **args = calloc((size_t)argc + 5, sizeof(char *));
    if (!args) { perror("arca-runtime"); exit(1); }
    args[0] = ARCA_PYTHON;
    args[1] = "-I";
    args[2] = "-S";
    args[3] = "-c";
    args[4] = (char *)boot;
    for (int i = 1; i < argc; i++) args[4 + i] = argv[i];
    execv(ARCA_PYTHON, args);
    fprintf(stderr, "arca-runtime: error: cannot execute %s: %s\n", ARCA_PYTHON, strerror(errno));
    exit(1);
}

static void run_runc(const char *runc, char **argv) {
    argv[0] = (char *)runc;
    execvp(runc, argv);
    fprintf(stderr, "arca-runtime: error: cannot execute runc binary '%s': %s\n", runc,
            strerror(errno));
    exit(1);
}

static const char *log_path, *log_format;  /* runc's --log / --log-format, for errors */

/* Index of the command after runc's global options (cli.split_globals); *root gets --root. */
static int command_index(int argc, char **argv, const char **root) {
    int i = 1;
    while (i < argc) {
        const char *arg = argv[i];
        if (arg[0] != '-' || strcmp(arg, "-") == 0) break;
        char name[64];
        size_t n = strcspn(arg, "=");
        int has_eq = arg[n] == '=';
        if (n >= sizeof(name) - 1) { i++; continue; }  /* not a known option either way */
        if (arg[1] != '-' && n > 2) {  /* Go's single-dash spelling of a long option */
            name[0] = '-';
            memcpy(name + 1, arg, n);
            name[n + 1] = '\0';
        } else {
            memcpy(name, arg, n);
            name[n] = '\0';
        }
        if (in(name, with_value)) {
            const char *value = has_eq ? arg + n + 1 : i + 1 < argc ? argv[i + 1] : "";
            if (!strcmp(name, "--root")) *root = value;
            if (!strcmp(name, "--log")) log_path = value;
            if (!strcmp(name, "--log-format")) log_format = value;
            if (!has_eq) i++;
        }
        i++;
    }
    return i < argc ? i : argc;
}

/* arca.host.paths.run_dir(): $ARCA_RUN ("" meaning the current directory, as in Python). */
static const char *run_dir(void) {
    const char *run = getenv("ARCA_RUN");
    return !run ? "/run/arca-host" : *run ? run : ".";
}

/* cli._has_arca_state: is there Arca state for this container id under this runc root (a
 * same id under another root is another container: runc's business)? */
static int has_arca_state(const char *id, const char *root) {
    if (!*id || strchr(id, '/') || strcmp(id, ".") == 0 || strcmp(id, "..") == 0) return 0;
    char path[4096], rec[4096];
    if (snprintf(path, sizeof(path), "%s/containers/%s/state.json", run_dir(), id) >=
        (int)sizeof(path))
        return 1;  /* cannot tell: let Python decide */
    if (access(path, F_OK) != 0 && errno == ENOENT) return 0;
    snprintf(path, sizeof(path), "%s/containers/%s/runc-root", run_dir(), id);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 1;  /* none recorded (a create in flight): ours */
    ssize_t n = read(fd, rec, sizeof(rec) - 1);
    close(fd);
    if (n < 0) return 1;
    rec[n] = '\0';
    return strcmp(rec, root && *root ? root : "/run/runc") == 0;
}

/* cli._obviously_plain, conservatively: no Arca annotation can hide in this config.json. */
static int obviously_plain(int argc, char **argv, int first) {
    const char *tee = getenv("ARCA_TEE");
    if (tee && *tee && strcmp(tee, "none") != 0) return 0;
    const char *bundle = ".";
    for (int j = first; j < argc; j++) {
        const char *a = argv[j];
        if ((!strcmp(a, "--bundle") || !strcmp(a, "-bundle") || !strcmp(a, "-b")) && j + 1 < argc)
            bundle = argv[j + 1];
        else if (!strncmp(a, "--bundle=", 9)) bundle = a + 9;
        else if (!strncmp(a, "-bundle=", 8)) bundle = a + 8;
        else if (!strncmp(a, "-b=", 3)) bundle = a + 3;
    }
    char path[4096];
    if (snprintf(path, sizeof(path), "%s/config.json", bundle) >= (int)sizeof(path)) return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat st;
    char *buf = NULL;
    int plain = 0;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
        st.st_size <= MAX_CONFIG_BYTES && (buf = malloc((size_t)st.st_size + 1))) {
        size_t len = 0;
        ssize_t r;
        while (len < (size_t)st.st_size &&
               (r = read(fd, buf + len, (size_t)st.st_size - len)) > 0)
            len += (size_t)r;
        buf[len] = '\0';
        plain = len == (size_t)st.st_size && memchr(buf, '\0', len) == NULL &&
                strstr(buf, "io.arca") == NULL && strstr(buf, "\\u") == NULL &&
                /* joining a PID, mount or IPC namespace: Python checks it is not a TD's */
                strstr(buf, "/ns/pid\"") == NULL && strstr(buf, "/ns/mnt\"") == NULL &&
                strstr(buf, "/ns/ipc\"") == NULL;
    }
    free(buf);
    close(fd);
    return plain;
}


/* ---- create through the sim daemon (fastcreate.py): no Python start for a TEE create ---- */

struct buf { char *p; size_t len, cap; };

static void put(struct buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) { perror("arca-runtime"); exit(1); }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

/* A JSON string literal; bytes >= 0x80 pass as they are (the daemon refuses bad UTF-8). */
static void put_json(struct buf *b, const char *s) {
    put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') { esc[0] = '\\'; esc[1] = (char)c; put(b, esc, 2); }
        else if (c < 0x20) { snprintf(esc, sizeof(esc), "\\u%04x", c); put(b, esc, 6); }
        else put(b, s, 1);
    }
    put(b, "\"", 1);
}

/* One request/answer on the control socket; the answer (NUL-terminated) or NULL. */
static char *daemon_call(const char *run, const char *req, size_t n) {
    char path[4096];
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(path, sizeof(path), "%s/simtee/control.sock", run);
    if (strlen(path) >= sizeof(sa.sun_path)) return NULL;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return NULL;
    /* A first create may build the guest runtime and digest a large rootfs: be patient. */
    struct timeval snd = {.tv_sec = 10}, rcv = {.tv_sec = 300};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &snd, sizeof(snd));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &rcv, sizeof(rcv));
    static char ans[65536];
    size_t len = 0;
    ssize_t r;
    int ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
             send(fd, req, n, MSG_NOSIGNAL) == (ssize_t)n;
    while (ok && len < sizeof(ans) - 1 && (r = recv(fd, ans + len, sizeof(ans) - 1 - len, 0)) > 0)
        len += (size_t)r;
    close(fd);
    ans[len] = '\0';
    return ok && len > 0 ? ans : NULL;
}

/* UTF-8 of a \uXXXX code point (surrogate halves as U+FFFD: messages are ours, ASCII). */
static size_t utf8(unsigned cp, char *out) {
    if (cp >= 0xd800 && cp < 0xe000) cp = 0xfffd;
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    out[0] = (char)(0xe0 | cp >> 12);
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
}

/* cli.report_error for a message the daemon sent as a JSON string literal at lit. */
static void report_error(const char *lit) {
    struct buf raw = {0}, text = {0};
    const char *s = lit + 1;
    put(&raw, "\"", 1);
    for (; *s && *s != '"'; s++) {
        char out[4];
        size_t n = 1;
        out[0] = *s;
        if (*s == '\\' && s[1]) {
            size_t len = s[1] == 'u' && strlen(s) >= 6 ? 6 : 2;
            unsigned cp = 0;
            put(&raw, s, len);
            if (len == 6 && sscanf(s + 2, "%4x", &cp) == 1) n = utf8(cp, out);
            else out[0] = strchr("nrtbf", s[1]) ? ' ' : s[1];
            s += len - 1;
        } else {
            put(&raw, s, 1);
        }
        put(&text, out, n);
    }
    put(&raw, "\"", 1);
    if (!text.p) puts_(&text, "");
    if (log_path && *log_path) {
        char now[32];
        time_t t = time(NULL);
        strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
        struct buf line = {0};
        if (log_format && !strcmp(log_format, "json")) {
            puts_(&line, "{\"level\": \"error\", \"msg\": ");
            put(&line, raw.p, raw.len);
            puts_(&line, ", \"time\": \"");
            puts_(&line, now);
            puts_(&line, "\"}\n");
        } else {
            puts_(&line, "time=\"");
            puts_(&line, now);
            puts_(&line, "\" level=error msg=\"");
            put(&line, text.p, text.len);
            puts_(&line, "\"\n");
        }
        int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) {
            if (write(fd, line.p, line.len) < 0) { /* stderr below still says it */ }
            close(fd);
        }
    }
    fprintf(stderr, "arca-runtime: error: %s\n", text.p);
}

static int valid_id(const char *id);

/* runc with argv[1..i-1] (runc's global options) and then tail: a fresh vector. */
static char **with_globals(const char *runc, char **argv, int i, const char *const *tail) {
    int n = 0;
    while (tail[n]) n++;
    char **args = calloc((size_t)(i + n + 1), sizeof(char *));
    if (!args) { perror("arca-runtime"); exit(1); }
    args[0] = (char *)runc;
    for (int j = 1; j < i; j++) args[j] = argv[j];
    for (int j = 0; j < n; j++) args[i + j] = (char *)tail[j];
    return args;
}

/* lifecycle._run_runc: runc as a child, every fd inherited; its exit status. */
static int spawn_wait(const char *runc, char **args) {
    pid_t pid;
    int status;
    if (posix_spawnp(&pid, runc, NULL, NULL, args, environ) != 0) {
        fprintf(stderr, "arca-runtime: error: cannot execute runc binary '%s': %s\n", runc,
                strerror(errno));
        return 1;
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) exit(1);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* A hand-off request to the daemon (fastcreate.py): op, our argv, umask, cwd and ARCA_*
 * environment. 0 when the daemon cannot be asked (no code stamp, relative paths). */
static int request(struct buf *req, const char *op, int argc, char **argv) {
    /* fastcreate.ENV_KEYS: everything Arca's part of a create reads from the environment. */
    static const char *const keys[] = {"ARCA_ROOT", "ARCA_RUN", "ARCA_RUNTIME_CONFIG",
                                       "ARCA_RUNC", "ARCA_TEE", "ARCA_VM_DATA",
                                       "ARCA_VM_QEMU", "ARCA_VM_BOOT_TIMEOUT", NULL};
    const char *run = run_dir();
    char cwd[4096];
    if (!*ARCA_STAMP || run[0] != '/' || !getcwd(cwd, sizeof(cwd))) return 0;
    const char *root = getenv("ARCA_ROOT");
    if (root && root[0] != '/') return 0;
    puts_(req, "{\"op\": ");
    put_json(req, op);
    puts_(req, ", \"stamp\": \"" ARCA_STAMP "\", \"argv\": [");
    for (int j = 1; j < argc; j++) {
        if (j > 1) puts_(req, ", ");
        put_json(req, argv[j]);
    }
    mode_t mask = umask(0);
    umask(mask);
    char num[32];
    snprintf(num, sizeof(num), "], \"umask\": %u, \"cwd\": ", (unsigned)mask);
    puts_(req, num);
    put_json(req, cwd);
    puts_(req, ", \"env\": {");
    int first = 1;
    for (const char *const *k = keys; *k; k++) {
        const char *v = getenv(*k);
        if (!v) continue;
        if (!first) puts_(req, ", ");
        first = 0;
        put_json(req, *k);
        puts_(req, ": ");
        put_json(req, v);
    }
    puts_(req, "}}\n");
    return 1;
}

/* lifecycle.create with Arca's part done in the sim daemon; returns only to fall back to
 * Python (no daemon, other sources, anything unusual: Python decides again). */
static void fast_create(int argc, char **argv, int i, const char *runc) {
    const char *run = run_dir();
    struct buf req = {0};
    if (!request(&req, "create", argc, argv)) return;
    char *ans = daemon_call(run, req.p, req.len);
    if (!ans) return;
    if (strstr(ans, "\"create\": \"runc\"")) run_runc(runc, argv);
    if (strstr(ans, "\"create\": \"error\"")) {
        const char *msg = strstr(ans, "\"msg\": \"");
        report_error(msg ? msg + 7 : "\"the sim platform refused the create\"");
        exit(1);
    }
    const char *idp = strstr(ans, "\"id\": \"");
    if (!strstr(ans, "\"create\": \"ok\"") || !idp) return;
    char id[256];
    size_t n = strcspn(idp + 7, "\"");
    if (n >= sizeof(id)) return;
    memcpy(id, idp + 7, n);
    id[n] = '\0';
    if (!valid_id(id)) return;
    /* create + prestart in one runc process (lifecycle.create): `runc run --detach` with the
     * caller's create options, same cwd; runc destroys what it made if it fails. */
    char **run_args = calloc((size_t)argc + 2, sizeof(char *));
    if (!run_args) { perror("arca-runtime"); exit(1); }
    int k = 0;
    run_args[k++] = (char *)runc;
    for (int j = 1; j < i; j++) run_args[k++] = argv[j];
    run_args[k++] = "run";
    run_args[k++] = "--detach";
    for (int j = i + 1; j < argc; j++) run_args[k++] = argv[j];
    int rc = spawn_wait(runc, run_args);
    if (rc == 0) {
        char from[4096], to[4096];
        snprintf(from, sizeof(from), "%s/containers/%s/state.created.json", run, id);
        snprintf(to, sizeof(to), "%s/containers/%s/state.json", run, id);
        if (rename(from, to) == 0) exit(0);
        fprintf(stderr, "arca-runtime: error: cannot record the state of container %s: %s\n", id,
                strerror(errno));
        exit(1);
    }
    struct buf undo = {0};
    puts_(&undo, "{\"op\": \"create-undo\"");
    puts_(&undo, req.p + strlen("{\"op\": \"create\""));
    daemon_call(run, undo.p, undo.len);  /* without an answer, delete --force undoes it */
    exit(rc);
}

/* state.validate_id: ids become path components and JSON strings. */
static int valid_id(const char *id) {
    size_t n = strlen(id);
    if (n == 0 || n > 128 || !strcmp(id, ".") || !strcmp(id, "..")) return 0;
    return strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+-.") == n;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *f) {
    (void)sb; (void)flag; (void)f;
    remove(p);
    return 0;
}

/* simtee client.unregister: tell the daemon; without one, drop the registration file. */
static int unregister(const char *run, const char *id) {
    char path[4096], req[256], buf[4096];
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(path, sizeof(path), "%s/simtee/control.sock", run);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 10};
    size_t len = 0;
    int ok = fd >= 0 && strlen(path) < sizeof(sa.sun_path);
    if (ok) {
        strcpy(sa.sun_path, path);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        int n = snprintf(req, sizeof(req), "{\"op\": \"unregister\", \"td_id\": \"%s\"}\n", id);
        ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
             send(fd, req, (size_t)n, MSG_NOSIGNAL) == n;
        ssize_t r;
        while (ok && len < sizeof(buf) - 1 && (r = recv(fd, buf + len, sizeof(buf) - 1 - len, 0)) > 0)
            len += (size_t)r;
        buf[len] = '\0';
        ok = ok && len > 0;
    }
    if (fd >= 0) close(fd);
    if (!ok) {  /* no (answering) daemon */
        snprintf(path, sizeof(path), "%s/simtee/tds/%s.json", run, id);
        unlink(path);
        snprintf(path, sizeof(path), "%s/td/%s/sim.sock", run, id);
        unlink(path);
        return 0;
    }
    if (strstr(buf, "\"error\"")) {
        fprintf(stderr, "arca-runtime: error: sim platform refused to unregister %s: %s", id, buf);
        return -1;
    }
    return 0;
}

/* The first size-1 bytes of a small file, NUL-terminated; 0 when absent, empty or unreadable. */
static int read_small(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    return 1;
}

/* runc's state file of id under its --root. */
static void runc_state_path(char *path, size_t size, const char *root, const char *id) {
    snprintf(path, size, "%s/%s/state.json", root && *root ? root : "/run/runc", id);
}

/* Is the Arca state of id "created" (runc create and the prestart done)? */
static int created(const char *run, const char *id) {
    char path[4096], state[4096];
    if (!valid_id(id) || strlen(run) > 2048) return 0;
    snprintf(path, sizeof(path), "%s/containers/%s/state.json", run, id);
    /* json.dumps of our own ContainerState; in a JSON string value quotes are escaped, so
     * this text can only be the status field itself. Anything else: Python (it waits for an
     * in-flight create, reports corrupt state). */
    return read_small(path, state, sizeof(state)) &&
           strstr(state, "\"status\": \"created\"") != NULL;
}

/* state.unreleased: the agent was prestarted ("go" exists) and start has not come yet. */
static int unreleased(const char *run, const char *id) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/td/%s/go", run, id);
    if (access(path, F_OK) != 0) return 0;
    snprintf(path, sizeof(path), "%s/containers/%s/released", run, id);
    return access(path, F_OK) != 0 && errno == ENOENT;
}

/* lifecycle.delete for a fully created TEE container; returns only when it does not apply. */
static void delete_tee(int argc, char **argv, int i, const char *runc, const char *root) {
    const char *id = argv[argc - 1], *run = run_dir();
    char path[4096];
    int force = 0;
    for (int j = i + 1; j < argc - 1; j++) {  /* only "delete [--force|-f] <id>" */
        if (strcmp(argv[j], "--force") && strcmp(argv[j], "-force") && strcmp(argv[j], "-f"))
            return;
        force = 1;
    }
    if (i + 1 >= argc || !created(run, id)) return;
    argv[0] = (char *)runc;
    const char *forced[] = {"delete", "--force", id, NULL};
    /* Never started: runc sees it running and would refuse; kill it, as runc does a created
     * container on delete. */
    int rc = spawn_wait(runc, !force && unreleased(run, id) ? with_globals(runc, argv, i, forced)
                                                            : argv);
    runc_state_path(path, sizeof(path), root, id);
    if (rc != 0 && access(path, F_OK) == 0) exit(rc);  /* runc still has it: keep ours */
    /* Arca's part is Python's (lifecycle._undo: the backend's undo, Arca's files), run by the
     * daemon; without a daemon of our sources, what it amounts to on a daemon-less host. */
    struct buf req = {0};
    char *ans = request(&req, "delete-undo", argc, argv) ? daemon_call(run, req.p, req.len)
                                                         : NULL;
    if (ans && strstr(ans, "\"delete\": \"undone\"")) exit(0);
    if (ans && strstr(ans, "\"create\": \"error\"")) {
        const char *msg = strstr(ans, "\"msg\": \"");
        report_error(msg ? msg + 7 : "\"the sim platform refused the delete\"");
        exit(1);
    }
    /* A TD's uid range and id-mapped root (userns.release_td, ADR 0048) are Python's too:
     * its delete finds runc's part done and undoes Arca's. */
    snprintf(path, sizeof(path), "%s/containers/%s/userns-slot", run, id);
    if (access(path, F_OK) == 0) run_python(argv);
    if (unregister(run, id) != 0) exit(1);
    snprintf(path, sizeof(path), "%s/td/%s", run, id);
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    snprintf(path, sizeof(path), "%s/containers/%s", run, id);
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    exit(0);
}

/* One line as cli.report_error, exit 1. */
static void fail(const char *fmt, const char *id, const char *detail) {
    char msg[1024];
    struct buf lit = {0};
    snprintf(msg, sizeof(msg), fmt, id, detail);
    put_json(&lit, msg);
    report_error(lit.p);
    exit(1);
}

/* runc's init_process_pid of the container (the agent), 0 when unknown. */
static pid_t init_pid(const char *root, const char *id) {
    char path[4096], buf[4096];
    runc_state_path(path, sizeof(path), root, id);
    if (!read_small(path, buf, sizeof(buf))) return 0;
    const char *p = strstr(buf, "\"init_process_pid\":");
    return p ? (pid_t)atoi(p + strlen("\"init_process_pid\":")) : 0;
}

/* lifecycle._alive: running, not a zombie; unknown pids count as alive (timeout bounds). */
static int alive(pid_t pid) {
    char path[64], buf[512];
    if (pid <= 0) return 1;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (!read_small(path, buf, sizeof(buf))) return 0;
    const char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* lifecycle.start: release a prestarted agent; returns only to fall back to Python. */
static void start_tee(int argc, char **argv, int i, const char *runc, const char *root) {
    const char *id = argv[argc - 1], *run = run_dir();
    char go[4096], rel[4096];
    if (i + 2 != argc || !created(run, id)) return;  /* Python: odd arguments, half-created */
    if (!unreleased(run, id)) run_runc(runc, argv);  /* started before (or not prestarted) */
    snprintf(go, sizeof(go), "%s/td/%s/go", run, id);
    snprintf(rel, sizeof(rel), "%s/containers/%s/released", run, id);
    int m = open(rel, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (m < 0 && errno == EEXIST) run_runc(runc, argv);  /* a concurrent start won */
    if (m < 0) return;
    close(m);
    pid_t pid = init_pid(root, id);
    struct timespec t0, now, ms = {.tv_nsec = 1000000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {  /* the agent opens "go" read-write: a non-blocking open succeeds once it does */
        int fd = open(go, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t w = write(fd, "1", 1);
            close(fd);
            if (w == 1) exit(0);
            fail("cannot start container %s: cannot write to the agent: %s", id, strerror(errno));
        }
        if (errno != ENXIO) fail("cannot start container %s: %s", id, strerror(errno));
        if (!alive(pid))
            fail("cannot start a container that has stopped: the agent of TEE container %s "
                 "exited before start%s", id, "");
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > AGENT_READY_TIMEOUT_S)
            fail("cannot start container %s: its agent did not wait for start within %ss", id,
                 AGENT_READY_TIMEOUT);
        nanosleep(&ms, NULL);
    }
}

/* lifecycle.state: runc's answer, "created" for a prestarted agent not yet released. */
static void state_tee(int argc, char **argv, int i, const char *runc) {
    const char *id = argv[argc - 1], *run = run_dir();
    if (i + 2 != argc || !created(run, id)) return;  /* Python: odd arguments, half-created */
    if (!unreleased(run, id)) run_runc(runc, argv);
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    pid_t pid;
    argv[0] = (char *)runc;
    if (posix_spawnp(&pid, runc, &fa, NULL, argv, environ) != 0) return;
    close(p[1]);
    struct buf out = {0};
    char chunk[4096];
    ssize_t n;
    while ((n = read(p[0], chunk, sizeof(chunk))) > 0 || (n < 0 && errno == EINTR))
        if (n > 0) put(&out, chunk, (size_t)n);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) exit(1);
    int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    char *s = out.p ? strstr(out.p, "\"status\": \"running\"") : NULL;
    if (rc == 0 && s && unreleased(run, id))  /* again: start may have come meanwhile */
        memcpy(s + strlen("\"status\": \""), "created", 7);
    if (out.len && write(1, out.p, out.len) < 0) rc = rc ? rc : 1;
    exit(rc);
}

int main(int argc, char **argv) {
    const char *root = NULL;
    int i = command_index(argc, argv, &root);
    if (i >= argc) run_python(argv);  /* --version, --help, no command */
    /* A config file may set runc and default_tee and must be valid JSON: Python reads it. */
    const char *cfg = getenv("ARCA_RUNTIME_CONFIG");
    if (!cfg) cfg = "/etc/arca/runtime.json";
    if (*cfg && (access(cfg, F_OK) == 0 || errno != ENOENT)) run_python(argv);
    const char *runc = getenv("ARCA_RUNC");
    if (!runc || !*runc) runc = "runc";
    const char *cmd = argv[i];
    if (!in(cmd, handled)) run_runc(runc, argv);
    if (!strcmp(cmd, "delete") || !strcmp(cmd, "checkpoint") || !strcmp(cmd, "restore")) {
        if (!has_arca_state(argv[argc - 1], root)) run_runc(runc, argv);
        if (!strcmp(cmd, "delete")) delete_tee(argc, argv, i, runc, root);
    } else if (!strcmp(cmd, "create") || !strcmp(cmd, "run")) {
        if (obviously_plain(argc, argv, i + 1)) run_runc(runc, argv);
        if (!strcmp(cmd, "create")) fast_create(argc, argv, i, runc);
    } else if (!strcmp(cmd, "start") || !strcmp(cmd, "state")) {
        if (!has_arca_state(argv[argc - 1], root)) run_runc(runc, argv);
        if (!strcmp(cmd, "start")) start_tee(argc, argv, i, runc, root);
        else state_tee(argc, argv, i, runc);
    }
    run_python(argv);
    return 1;
}
