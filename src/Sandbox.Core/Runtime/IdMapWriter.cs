using System.Globalization;
using Sandbox.Linux;

namespace Sandbox.Runtime;

/// <summary>Parent-side: writes a new user namespace's id maps before the child is released.</summary>
internal static class IdMapWriter
{
    public static void Write(int pid, IdMapPlan plan)
    {
        try
        {
            switch (plan.Kind)
            {
                case IdMapKind.SingleId:
                    // An unprivileged process may map only its own ids, and only after denying
                    // setgroups (user_namespaces(7); CVE-2014-8989).
                    Syscalls.WriteFileOnce($"/proc/{pid}/setgroups", "deny");
                    Syscalls.WriteFileOnce($"/proc/{pid}/uid_map", $"0 {plan.HostUid} 1\n");
                    Syscalls.WriteFileOnce($"/proc/{pid}/gid_map", $"0 {plan.HostGid} 1\n");
                    break;
                case IdMapKind.SubordinateRange:
                    // The two helpers are independent: run them side by side.
                    string uidHelper = plan.NewUidMapPath ?? "newuidmap", gidHelper = plan.NewGidMapPath ?? "newgidmap";
                    var results = NativeExecutor.RunHelpers(
                    [
                        (uidHelper, HelperArguments(pid, plan.HostUid, plan.SubordinateUids!)),
                        (gidHelper, HelperArguments(pid, plan.HostGid, plan.SubordinateGids!)),
                    ]);
                    Check(uidHelper, results[0]);
                    Check(gidHelper, results[1]);
                    break;
            }
        }
        catch (LinuxException e)
        {
            throw new SandboxException(SandboxErrorCode.IdMappingFailed, $"could not write the sandbox's id maps: {e.Message}", e);
        }
    }

    // newuidmap PID 0 HOSTID 1  1 START COUNT: 0 is the caller, 1..COUNT the subordinate range.
    private static string[] HelperArguments(int pid, uint hostId, IdRange range) =>
    [
        pid.ToString(CultureInfo.InvariantCulture), "0", hostId.ToString(CultureInfo.InvariantCulture), "1",
        "1", range.Start.ToString(CultureInfo.InvariantCulture), range.Count.ToString(CultureInfo.InvariantCulture),
    ];

    private static void Check(string helper, (int Status, string Stderr) result)
    {
        const string Fix = "Check that {0} is setuid root (package uidmap) and that /etc/subuid and /etc/subgid give your user a range, or use --userns=single.";
        if (result.Status < 0)
        {
            throw new SandboxException(SandboxErrorCode.IdMappingFailed,
                $"could not start {helper}: {Errno.Describe(-result.Status)}. " + string.Format(CultureInfo.InvariantCulture, Fix, helper));
        }
        var exit = ExitStatus.FromWaitStatus(result.Status);
        if (exit.Code != 0)
        {
            throw new SandboxException(SandboxErrorCode.IdMappingFailed,
                $"{helper} failed ({exit}): {result.Stderr.Trim()}. " + string.Format(CultureInfo.InvariantCulture, Fix, helper));
        }
    }
}
