using System.Collections.Immutable;
using Microsoft.Win32.SafeHandles;
using Sandbox.Linux;

namespace Sandbox.Runtime;

/// <summary>
/// A throwaway sandbox for the runtime's own chores (storage probes, removing a tree that holds files
/// of subordinate ids): user, mount and PID namespaces on the host's root, the given set-up steps,
/// then one host program with /dev/null as stdio. Returns null when the steps worked and the program
/// exited 0, else why not.
/// </summary>
internal static class HelperSandbox
{
    public static string? Run(IdMapPlan maps, ImmutableArray<SetupStep> steps, string program, ImmutableArray<string> arguments)
    {
        try
        {
            var plan = new RuntimePlan(new ProcessPlan(program, arguments, [], null, "/"),
                NamespaceSet.User | NamespaceSet.Mount | NamespaceSet.Pid, maps, steps);
            using SafeFileHandle devNull = Syscalls.OpenReadOnly("/dev/null");
            using SandboxProcess process = Launcher.Start(plan, new StdioPlan(devNull, devNull, devNull));
            InitReport report = process.ReadReports();
            process.WaitForExit();
            if (report.Failure is SandboxException failure)
                return failure.Message;
            ExitStatus status = report.PayloadWaitStatus is int ws ? ExitStatus.FromWaitStatus(ws) : ExitStatus.Exited(0);
            return status.Code == 0 ? null : $"{program} ended with {status}";
        }
        catch (SandboxException e)
        {
            return e.Message;
        }
        catch (LinuxException e)
        {
            return e.Message;
        }
    }

    /// <summary>/bin/true or /usr/bin/true, for a helper whose steps are the point.</summary>
    public static string TrueProgram => File.Exists("/bin/true") ? "/bin/true" : "/usr/bin/true";
}
