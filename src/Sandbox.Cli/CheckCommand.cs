using Sandbox.Cli.CommandLine;
using Sandbox.Diagnostics;

namespace Sandbox.Cli;

/// <summary><c>sandbox check</c>: what this host lets a rootless sandbox do, and how to fix what is missing.</summary>
internal sealed class CheckCommand : Command
{
    public CheckCommand() : base("check", "Report what this host supports (user namespaces, id maps, overlayfs, cgroups) and how to fix what is missing")
    {
        SetAction(_ =>
        {
            // Probed afresh, and the answers stored for `sandbox run`'s --storage-driver auto.
            var storage = new StorageProbe(StorageProbe.CacheFileFor(Storage.StoreLocation.Resolve(null)), refresh: true);
            IReadOnlyList<CheckItem> items = HostCheck.Run(HostFacts.Default, ProbeUserNamespace, storage.KernelOverlayProblem,
                () => Rootfs.StorageDriverSelector.Choose(StorageDriver.Auto, storage));
            Console.Out.Write(HostCheck.Render(items));
            return HostCheck.CanRunSandboxes(items) ? 0 : 1;
        });
    }

    /// <summary>Really creates a sandbox: the only way to know that nothing (sysctl, LSM, seccomp) stops it.</summary>
    private static string? ProbeUserNamespace() =>
        Probe(new SandboxSpec(["/bin/true"]) { UserNamespace = UserNamespaceMode.Single });

    private static string? Probe(SandboxSpec spec)
    {
        try
        {
            var stderr = new System.Text.StringBuilder();
            SandboxResult result = SandboxRunner.RunAsync(spec with { Timeout = TimeSpan.FromSeconds(20) }, e =>
            {
                if (e is OutputEvent { Stream: OutputStream.Stderr } o)
                    stderr.Append(System.Text.Encoding.UTF8.GetString(o.Data.Span));
            }).GetAwaiter().GetResult();
            return result.ExitCode == 0 ? null : $"{result.Status}: {stderr.ToString().Trim()}";
        }
        catch (SandboxException e)
        {
            return e.Message;
        }
    }
}
