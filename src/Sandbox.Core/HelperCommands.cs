using System.Collections.Immutable;
using System.Runtime.CompilerServices;

namespace Sandbox;

/// <summary>
/// Hidden commands of the sandbox program, which the runtime runs the program itself for inside a
/// helper sandbox (so that no managed code runs between clone and exec: DESIGN.md, "Process
/// creation"). The program's Main hands its arguments to <see cref="TryRun"/> first; a process that
/// never does (a library host, a test runner) is not re-executed, and what needs it says so.
/// </summary>
public static class HelperCommands
{
    /// <summary><c>sandbox __copy-layers TARGET LAYER...</c>: the copy storage driver's copy, keeping owners (<see cref="Rootfs.LayerCopyHelper"/>).</summary>
    internal const string CopyLayers = "__copy-layers";

    private static volatile bool s_dispatches;

    /// <summary>
    /// Runs <paramref name="args"/> when they name a helper command, setting <paramref name="exitCode"/>
    /// (0, or 125 with the error on stderr); false for any other command line. Also marks this process
    /// as one that can run helper commands.
    /// </summary>
    public static bool TryRun(string[] args, out int exitCode)
    {
        ArgumentNullException.ThrowIfNull(args);
        s_dispatches = true;
        exitCode = 0;
        if (args.Length == 0 || args[0] != CopyLayers)
            return false;
        if (args.Length < 3)
        {
            Console.Error.WriteLine($"sandbox {CopyLayers}: TARGET and at least one LAYER are needed (an internal command of the runtime)");
            exitCode = ExitCodes.SandboxFailed;
            return true;
        }
        try
        {
            Rootfs.LayerCopier.Copy(args[2..], args[1], keepOwners: true);
        }
        catch (Exception e) when (e is SandboxException or IOException or UnauthorizedAccessException or Linux.LinuxException)
        {
            Console.Error.WriteLine(e.Message);
            exitCode = ExitCodes.SandboxFailed;
        }
        return true;
    }

    /// <summary>
    /// How to run this program again: its path, the words before the command (the .dll under
    /// <c>dotnet sandbox.dll</c>) and the environment it needs; null when this process is not the
    /// sandbox program. A NativeAOT program needs no environment; an apphost or <c>dotnet</c> needs
    /// to find the runtime (DOTNET_ROOT, when it is not in a default place), as the caller found it.
    /// </summary>
    internal static (string Program, ImmutableArray<string> Prefix, ImmutableArray<string> Environment)? Self()
    {
        if (!s_dispatches || System.Environment.ProcessPath is not string program)
            return null;
        ImmutableArray<string> prefix = [];
        if (Path.GetFileNameWithoutExtension(program) == "dotnet")
            prefix = [System.Environment.GetCommandLineArgs()[0]];
        if (!RuntimeFeature.IsDynamicCodeSupported)
            return (program, prefix, []);
        string? root = System.Environment.GetEnvironmentVariable("DOTNET_ROOT");
        if (string.IsNullOrEmpty(root))
        {
            // shared/Microsoft.NETCore.App/VERSION/ under the installation.
            string runtime = Path.TrimEndingDirectorySeparator(System.Runtime.InteropServices.RuntimeEnvironment.GetRuntimeDirectory());
            root = Path.GetDirectoryName(Path.GetDirectoryName(Path.GetDirectoryName(runtime)));
        }
        return (program, prefix, root is null ? [] : ["DOTNET_ROOT=" + root]);
    }
}
