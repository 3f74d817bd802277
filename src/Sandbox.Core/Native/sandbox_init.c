// sandbox-init: PID 1 of every sandbox, after the native executor has set the sandbox up.
//
// The executor's child shares the supervisor's address space (CLONE_VM, see sandbox_exec.c); it
// execs this small static program so that PID 1 has an address space of its own, which it makes
// non-dumpable: then nothing in the sandbox can ptrace PID 1 or open /proc/1/mem or /proc/1/exe
// (ptrace(2), "Ptrace access mode checking"; CVE-2019-5736). Static, because it runs inside any root
// file system, with or without a libc.
//
// Its job is what an init does in a container (tini, docker-init): release the payload, reap every
// orphan, forward SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2/SIGWINCH to the payload, report the
// payload's exact wait status, and exit when the payload does (the kernel then kills the rest of
// the PID namespace) or when the parent dies (die-with-parent).
//
// usage (by the executor only): sandbox-init PAYLOAD_PID, with fds 4, 5, 7, 8 as in sandbox_protocol.h
// and every signal blocked.
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox_protocol.h"

static void report(int32_t kind, int32_t step, int32_t error, int32_t value)
{
    struct sbx_report r = {kind, step, error, value};
    // 16 bytes < PIPE_BUF: one atomic write (pipe(7)).
    (void)!write(SBX_FD_REPORT, &r, sizeof r);
}

int main(int argc, char **argv)
{
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (argc != 2)
        return 125;
    pid_t payload = (pid_t)strtol(argv[1], NULL, 10);

    sigset_t forwarded;
    sigemptyset(&forwarded);
    const int forward[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD, SIGWINCH};
    for (size_t i = 0; i < sizeof forward / sizeof forward[0]; i++)
        sigaddset(&forwarded, forward[i]);
    // Every signal is still blocked (inherited through exec); blocked signals are queued even for a
    // namespace's init (kernel/signal.c, sig_ignored()), so the parent's SIGTERM reaches us here.
    int sfd = signalfd(-1, &forwarded, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        report(SBX_REPORT_SETUP_FAILED, -1, errno, 0);
        return 125;
    }

    // Release the payload, then learn whether its exec worked: EOF on the status pipe means it did
    // (the payload's write end is close-on-exec); a record means it failed before or at exec.
    if (write(SBX_FD_INIT_GO, "g", 1) != 1) {
        report(SBX_REPORT_SETUP_FAILED, -1, errno, 0);
        return 125;
    }
    close(SBX_FD_INIT_GO);
    int32_t failure[2];
    ssize_t n;
    do
        n = read(SBX_FD_INIT_STATUS, failure, sizeof failure);
    while (n < 0 && errno == EINTR);
    close(SBX_FD_INIT_STATUS);
    if (n < 0) {
        report(SBX_REPORT_SETUP_FAILED, -1, errno, 0);
        return 125;
    }
    if (n == (ssize_t)sizeof failure) {
        int status;
        waitpid(payload, &status, 0);
        report(SBX_REPORT_EXEC_FAILED, failure[0], failure[1], 0);
        return 127;
    }
    report(SBX_REPORT_STARTED, 0, 0, payload);

    struct pollfd fds[2] = {{sfd, POLLIN, 0}, {SBX_FD_LIFE, POLLIN, 0}};
    for (;;) {
        if (poll(fds, 2, -1) < 0)
            continue;
        if (fds[1].revents) {
            // The parent is gone (its write end closed): our exit kills every process in the PID
            // namespace (pid_namespaces(7)).
            return 137;
        }
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
            if (si.ssi_signo != SIGCHLD)
                kill(payload, (int)si.ssi_signo);
        }
        for (;;) {
            int status = 0;
            pid_t pid = waitpid(-1, &status, WNOHANG);
            if (pid <= 0)
                break;
            if (pid == payload) {
                report(SBX_REPORT_EXITED, 0, 0, status);
                return 0;
            }
        }
    }
}
