using Sandbox.Linux;

namespace Sandbox.Runtime;

/// <summary>The CLI's tie to the process that started it, when that process asks for one.</summary>
public static class ParentWatch
{
    /// <summary>
    /// With SANDBOX_EXIT_WITH_PARENT=1 (the MSBuild task sets it): when the process that started this
    /// one goes away (a SIGTERM or SIGKILL to the build, a crashed node), this process kills itself,
    /// and its sandbox dies with it (PID 1's die-with-parent). The parent is watched by its pid
    /// (getppid(2) changes when it dies and this process is re-parented), twice a second, on a thread
    /// that exists only then. prctl(PR_SET_PDEATHSIG) would not do: it fires when the parent's forking
    /// thread ends, and MSBuild's task threads end while the node lives.
    /// </summary>
    public static void ExitWithParentIfAsked()
    {
        if (Environment.GetEnvironmentVariable("SANDBOX_EXIT_WITH_PARENT") != "1")
            return;
        int parent = Syscalls.ParentProcessId;
        new Thread(() =>
        {
            while (Syscalls.ParentProcessId == parent)
                Thread.Sleep(500);
            Syscalls.KillProcess(Environment.ProcessId, 9);
        }) { IsBackground = true, Name = "sandbox parent watch" }.Start();
    }
}
