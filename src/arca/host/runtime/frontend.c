/*
 * arca-runtime front end: decide in microseconds whether a call is plain runc's business, and
 * hand everything else over (ADR 0046).
 *
 * containerd's shim runs the OCI runtime 4-5 times per container (create, start, state, kill,
 * delete). A Python interpreter costs ~10-20 ms per start before Arca's code runs, so:
 *
 *   1. Pass-through: the calls with nothing Arca-specific to do execvp runc with the exact
 *      argument vector (same stdio, fds, exit status). These are cli.decide's RUNC answers
 *      (split_globals, _has_arca_state, _obviously_plain, config.py's ARCA_RUNC/ARCA_TEE):
 *        - a command Arca does not handle (kill, ps, features, pause, ...)
 *        - delete/checkpoint/restore/start/state of an id without Arca state under this --root
 *        - create/run whose config.json has no "io.arca" text, no \u escape and joins no PID,
 *          mount or IPC namespace by path, with the default TEE "none" (ARCA_TEE unset/empty
 *          or "none")
 *   2. Hand-off, for everything else: to the long-lived sim daemon when one of the same
 *      sources (code stamp) answers on its control socket; it runs lifecycle.step, the
 *      function the Python path runs in-process, and this program carries out its answers
 *      (fastcreate.py has the protocol): exec runc, exit with a status and output, report a
 *      one-line error, or run runc as a child (every fd inherited) and send runc's status back
 *      as the next step. Otherwise (no daemon, other sources, no command, a runtime config
 *      file: JSON, which only Python reads) it execs the Python implementation
 *      (arca.host.runtime.cli:main), which decides everything again.
 *
 * No state logic lives here: which state a container is in, what start/state/delete/create do
 * about it, and every file of Arca's are Python's. This file only ever *chooses the hand-off*
 * when in doubt, so it never weakens a decision Python would make.
 * tests/unit/host/test_runtime_frontend_agreement.py fails, case by case, when its decision
 * and cli.decide differ, and when the daemon's answers differ from the in-process Python's;
 * test_runtime_frontend.py checks which calls never start Python. Built by scripts/setup.sh
 * with the interpreter, source and site-packages paths compiled in (ARCA_PYTHON, ARCA_SRC,
 * ARCA_SITE) and the code stamp (ARCA_STAMP). The Python path runs with -I -S: no site, no
 * .pth processing, no PYTHON* variables, no current directory on sys.path.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
/* sha256 of the sources the daemon runs for us (fastcreate.code_stamp); "" disables the
 * hand-off to the daemon (every handed-over call then goes to Python). */
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



/* ---- the hand-off (fastcreate.py): no Python start when the sim daemon runs ---- */

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
    struct buf ans = {0};
    char chunk[65536];
    ssize_t r;
    int ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
             send(fd, req, n, MSG_NOSIGNAL) == (ssize_t)n;
    while (ok && ans.len < MAX_CONFIG_BYTES && (r = recv(fd, chunk, sizeof(chunk), 0)) > 0)
        put(&ans, chunk, (size_t)r);
    close(fd);
    return ok && ans.len > 0 ? ans.p : NULL;
}

/* UTF-8 of a code point (lone surrogate halves as U+FFFD). */
static size_t utf8(unsigned cp, char *out) {
    if (cp >= 0xd800 && cp < 0xe000) cp = 0xfffd;
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Four hex digits at p, or -1. */
static long hex4(const char *p) {
    long v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p[k];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

static const char *skip_ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

/* The JSON string literal at p, decoded into out; the text after it, or NULL. */
static const char *json_string(const char *p, struct buf *out) {
    if (*p != '"') return NULL;
    put(out, "", 0);
    for (p++; *p != '"'; p++) {
        char o[4];
        size_t n = 1;
        if (*p == '\0') return NULL;
        if (*p != '\\') { put(out, p, 1); continue; }
        p++;
        const char *esc = strchr("\"\\/bfnrt", *p), *val = "\"\\/\b\f\n\r\t";
        if (*p && esc) {
            o[0] = val[esc - "\"\\/bfnrt"];
        } else if (*p == 'u') {
            long cp = hex4(p + 1), lo;
            if (cp < 0) return NULL;
            p += 4;
            if (cp >= 0xd800 && cp < 0xdc00 && p[1] == '\\' && p[2] == 'u' &&
                (lo = hex4(p + 3)) >= 0xdc00 && lo < 0xe000) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                p += 6;
            }
            n = utf8((unsigned)cp, o);
        } else {
            return NULL;
        }
        put(out, o, n);
    }
    return p + 1;
}

/* The daemon's answer (fastcreate.py): one flat JSON object of strings, integers and arrays
 * of strings. Unknown keys are skipped; anything else is not an answer. */
struct answer { struct buf do_, out, err, msg, then; long rc; char **args; int nargs; };

static int parse_answer(const char *p, struct answer *a) {
    p = skip_ws(p);
    if (*p++ != '{') return 0;
    for (p = skip_ws(p); *p != '}';) {
        struct buf key = {0}, scratch = {0};
        if (!(p = json_string(p, &key))) return 0;
        p = skip_ws(p);
        if (*p++ != ':') return 0;
        p = skip_ws(p);
        if (*p == '"') {
            struct buf *into = !strcmp(key.p, "do") ? &a->do_ : !strcmp(key.p, "stdout") ? &a->out
                             : !strcmp(key.p, "stderr") ? &a->err : !strcmp(key.p, "msg") ? &a->msg
                             : !strcmp(key.p, "then") ? &a->then : &scratch;
            into->len = 0;
            if (!(p = json_string(p, into))) return 0;
        } else if (*p == '[' && !strcmp(key.p, "args")) {
            for (p = skip_ws(p + 1); *p != ']';) {
                struct buf arg = {0};
                if (!(p = json_string(p, &arg)) || memchr(arg.p, '\0', arg.len)) return 0;
                char **args = realloc(a->args, (size_t)(a->nargs + 2) * sizeof(char *));
                if (!args) { perror("arca-runtime"); exit(1); }
                a->args = args;
                a->args[a->nargs++] = arg.p;
                a->args[a->nargs] = NULL;
                p = skip_ws(p);
                if (*p == ',') p = skip_ws(p + 1);
                else if (*p != ']') return 0;
            }
            p++;
        } else if ((*p == '-' || (*p >= '0' && *p <= '9')) && !strcmp(key.p, "rc")) {
            char *end;
            a->rc = strtol(p, &end, 10);
            p = end;
        } else {
            return 0;
        }
        free(key.p);
        free(scratch.p);
        p = skip_ws(p);
        if (*p == ',') p = skip_ws(p + 1);
        else if (*p != '}') return 0;
    }
    return a->do_.p != NULL;
}

/* cli.report_error: a line in runc's --log file (JSON or text), and one on stderr. */
static void report_error(const char *msg) {
    if (log_path && *log_path) {
        char now[32];
        time_t t = time(NULL);
        strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
        struct buf line = {0};
        if (log_format && !strcmp(log_format, "json")) {
            puts_(&line, "{\"level\": \"error\", \"msg\": ");
            put_json(&line, msg);
            puts_(&line, ", \"time\": \"");
            puts_(&line, now);
            puts_(&line, "\"}\n");
        } else {
            puts_(&line, "time=\"");
            puts_(&line, now);
            puts_(&line, "\" level=error msg=\"");
            puts_(&line, msg);
            puts_(&line, "\"\n");
        }
        int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) {
            if (write(fd, line.p, line.len) < 0) { /* stderr below still says it */ }
            close(fd);
        }
    }
    fprintf(stderr, "arca-runtime: error: %s\n", msg);
}

static int write_all(int fd, const struct buf *b) {
    for (size_t done = 0; done < b->len;) {
        ssize_t w = write(fd, b->p + done, b->len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        done += (size_t)w;
    }
    return 0;
}

/* lifecycle._run_runc: runc as a child, every fd inherited; its exit status. */
static int spawn_wait(const char *runc, char **args) {
    pid_t pid;
    int status;
    int err = posix_spawnp(&pid, runc, NULL, NULL, args, environ);
    if (err != 0) {
        char msg[512];
        snprintf(msg, sizeof(msg), "cannot execute runc binary '%s': %s", runc, strerror(err));
        report_error(msg);
        return 127;
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) exit(1);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* A hand-off request to the daemon (fastcreate.py): the step, our argv, umask, cwd, ARCA_*
 * environment and, after a spawn, runc's status. 0 when the daemon cannot be asked (no code
 * stamp, relative paths). */
static int request(struct buf *req, const char *op, const long *rc, int argc, char **argv) {
    /* fastcreate.ENV_KEYS: everything Arca's part of a call reads from the environment. */
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
    puts_(req, "}");
    if (rc) {
        snprintf(num, sizeof(num), ", \"rc\": %ld", *rc);
        puts_(req, num);
    }
    puts_(req, "}\n");
    return 1;
}

/* Hand the call to the sim daemon (lifecycle.step there) and carry out its answers, step by
 * step. Returns only to fall back to Python, and only before anything was done (no daemon of
 * our sources, or it says so); later a missing answer is an error that `delete --force`
 * cleans up after, as after a crash. */
static void hand_off(int argc, char **argv, int i, const char *runc) {
    const char *run = run_dir();
    char op[64];
    long rc = 0;
    int first = 1;
    snprintf(op, sizeof(op), "%s", argv[i]);
    for (;;) {
        struct buf req = {0};
        char *raw = request(&req, op, first ? NULL : &rc, argc, argv)
                        ? daemon_call(run, req.p, req.len) : NULL;
        struct answer a = {0};
        const char *what = raw && parse_answer(raw, &a) ? a.do_.p : "";
        if (!strcmp(what, "runc")) run_runc(runc, argv);
        if (!strcmp(what, "exit")) {
            int bad = write_all(1, &a.out) < 0;
            write_all(2, &a.err);
            exit(a.rc ? (int)a.rc : bad);
        }
        if (!strcmp(what, "error")) {
            report_error(a.msg.p ? a.msg.p : "the sim platform refused the call");
            exit(1);
        }
        if (!strcmp(what, "spawn") && a.then.p && a.then.len < sizeof(op)) {
            char **args = calloc((size_t)a.nargs + 2, sizeof(char *));
            if (!args) { perror("arca-runtime"); exit(1); }
            args[0] = (char *)runc;
            for (int j = 0; j < a.nargs; j++) args[j + 1] = a.args[j];
            rc = spawn_wait(runc, args);
            snprintf(op, sizeof(op), "%s", a.then.p);
            first = 0;
            continue;
        }
        if (first) return;  /* "python", no answer, or one this program does not know */
        char msg[256];
        snprintf(msg, sizeof(msg), "the sim platform did not answer step %s of this call", op);
        report_error(msg);
        exit(1);
    }
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
    if (!strcmp(cmd, "create") || !strcmp(cmd, "run")) {
        if (obviously_plain(argc, argv, i + 1)) run_runc(runc, argv);
    } else if (strcmp(cmd, "exec") != 0) {  /* exec: its id is not the last argument */
        if (!has_arca_state(argv[argc - 1], root)) run_runc(runc, argv);
    }
    hand_off(argc, argv, i, runc);
    run_python(argv);
    return 1;
}
