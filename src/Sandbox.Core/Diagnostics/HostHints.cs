namespace Sandbox.Diagnostics;

/// <summary>What to do about a host setting that stops rootless sandboxes, read from the host's sysctls.</summary>
public static class HostHints
{
    public static string UserNamespaceFix(string procSys = "/proc/sys")
    {
        string? Read(string relative)
        {
            try { return File.ReadAllText(Path.Combine(procSys, relative)).Trim(); }
            catch (IOException) { return null; }
            catch (UnauthorizedAccessException) { return null; }
        }

        if (Read("kernel/unprivileged_userns_clone") == "0")
            return "The sysctl kernel.unprivileged_userns_clone is 0 (Debian's switch); enable it with: sudo sysctl -w kernel.unprivileged_userns_clone=1";
        if (Read("kernel/apparmor_restrict_unprivileged_userns") == "1")
            return "AppArmor restricts unprivileged user namespaces (Ubuntu 23.10+); allow them with: sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or give the sandbox binary an AppArmor profile with the userns permission)";
        if (Read("user/max_user_namespaces") == "0")
            return "The sysctl user.max_user_namespaces is 0; raise it with: sudo sysctl -w user.max_user_namespaces=15000";
        return "User namespaces may be disabled by a security module or a seccomp filter of the surrounding container (docker's default profile refuses clone with CLONE_NEWUSER; run it with --security-opt seccomp=unconfined).";
    }
}
