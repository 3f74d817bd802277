// What the native executor (libsandbox_exec.so), sandbox-init (PID 1) and the C# side
// (Runtime/SandboxProcess.cs) say to each other. Keep the three in step.
#ifndef SANDBOX_PROTOCOL_H
#define SANDBOX_PROTOCOL_H
#include <stdint.h>

// PID 1's fds, from arrange_fds() on.
#define SBX_FD_SYNC 3        // read: one byte once the parent has written the id maps and cgroup
#define SBX_FD_REPORT 4      // write: struct sbx_report records to the parent
#define SBX_FD_LIFE 5        // read: EOF when the parent died (it holds the only write end)
#define SBX_FD_INIT_EXE 6    // the sandbox-init executable, exec'd by fd (close-on-exec)
#define SBX_FD_INIT_GO 7     // sandbox-init writes one byte here to release the payload
#define SBX_FD_INIT_STATUS 8 // sandbox-init reads the payload's exec failure here (EOF: exec'd)

enum sbx_report_kind {
    SBX_REPORT_SETUP_FAILED = 1,  // step = op index (op_count: the payload clone; op_count+1: exec of sandbox-init;
                                  // op_count+2: the network namespace, before the release; op_count+3: moving
                                  // the sandbox's descriptors to their numbers), error = errno;
                                  // error 0 at a run step: the program failed, value = its wait status;
                                  // at SBX_OP_BUILD_DEV, value = the part it was making (sandbox_kernel.h, sbx_dev_part)
    SBX_REPORT_EXEC_FAILED = 2,   // step = stage (1 chdir, 2 exec, 3 capabilities, 4 seccomp), error = errno
    SBX_REPORT_STARTED = 3,       // value = payload pid inside the namespace
    SBX_REPORT_EXITED = 4,        // value = wait status of the payload; sent once every other process of the
                                  // sandbox is killed and reaped too, with their CPU times (user_usec, system_usec)
};

struct sbx_report {
    int32_t kind;
    int32_t step;
    int32_t error;
    int32_t value;
    int64_t user_usec;   // SBX_REPORT_EXITED: CPU time of every process PID 1 reaped (getrusage RUSAGE_CHILDREN)
    int64_t system_usec;
};

#endif
