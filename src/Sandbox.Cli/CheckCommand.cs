using System.CommandLine;

namespace Sandbox.Cli;

/// <summary><c>sandbox check</c>: what this host lets a rootless sandbox do, and how to fix what is missing.</summary>
internal sealed class CheckCommand : Command
{
    public CheckCommand() : base("check", "Report what this host supports (user namespaces, id maps, overlayfs, cgroups) and how to fix what is missing")
    {
        SetAction(_ =>
        {
            Console.Out.WriteLine("sandbox check: not wired yet");
            return 0;
        });
    }
}
