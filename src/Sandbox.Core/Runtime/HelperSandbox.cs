using System.Collections.Immutable;
using System.Text;
using Microsoft.Win32.SafeHandles;
using Sandbox.Linux;

namespace Sandbox.Runtime;

/// <summary>
/// A throwaway sandbox for the runtime's own chores (storage probes, removing a tree that holds files
/// of subordinate ids, copying layers that keep their owners): user, mount and PID namespaces on the
/// host's root, the given set-up steps, then one host program with /dev/null as stdin. Returns null
/// when the steps worked and the program exited 0, else why not.
/// </summary>
internal static class HelperSandbox
{
    /// <summary>How much of the program's output a failure message quotes.</summary>
    private const int OutputKept = 4096;

    /// <param name="environment">The program's whole environment (empty by default: nothing of the caller's leaks in).</param>
    /// <param name="captureOutput">Quote the program's stdout and stderr (its first <see cref="OutputKept"/> bytes) when it fails; otherwise they are /dev/null.</param>
    public static string? Run(IdMapPlan maps, ImmutableArray<SetupStep> steps, string program, ImmutableArray<string> arguments,
        ImmutableArray<string> environment = default, bool captureOutput = false)
    {
        SafeFileHandle? outputRead = null, outputWrite = null;
        Thread? reader = null;
        var output = new MemoryStream();
        try
        {
            var plan = new RuntimePlan(new ProcessPlan(program, arguments, environment.IsDefault ? [] : environment, null, "/"),
                NamespaceSet.User | NamespaceSet.Mount | NamespaceSet.Pid, maps, steps);
            using SafeFileHandle devNull = Syscalls.OpenReadOnly("/dev/null");
            if (captureOutput)
            {
                (outputRead, outputWrite) = Syscalls.CreatePipe();
                // Drained while the program runs (a full pipe would stall it), keeping only the start.
                SafeFileHandle read = outputRead;
                reader = new Thread(() => Drain(read, output)) { IsBackground = true, Name = "helper sandbox output" };
            }
            SandboxProcess process;
            using (outputWrite)
                process = Launcher.Start(plan, new StdioPlan(devNull, outputWrite ?? devNull, outputWrite ?? devNull));
            using (process)
            {
                reader?.Start();
                InitReport report = process.ReadReports();
                process.WaitForExit();
                reader?.Join();
                if (report.Failure is SandboxException failure)
                    return failure.Message;
                ExitStatus status = report.PayloadWaitStatus is int ws ? ExitStatus.FromWaitStatus(ws) : ExitStatus.Exited(0);
                if (status.Code == 0)
                    return null;
                string said = Encoding.UTF8.GetString(output.GetBuffer(), 0, (int)output.Length).Trim();
                return $"{program} ended with {status}" + (said.Length > 0 ? $": {said}" : "");
            }
        }
        catch (SandboxException e)
        {
            return e.Message;
        }
        catch (LinuxException e)
        {
            return e.Message;
        }
        finally
        {
            outputRead?.Dispose();
        }
    }

    private static void Drain(SafeFileHandle read, MemoryStream kept)
    {
        using var stream = new FileStream(new SafeFileHandle(read.DangerousGetHandle(), ownsHandle: false), FileAccess.Read, 1);
        byte[] buffer = new byte[4096];
        int n;
        while ((n = stream.Read(buffer)) > 0)
            kept.Write(buffer, 0, Math.Min(n, Math.Max(0, OutputKept - (int)kept.Length)));
    }

    /// <summary>/bin/true or /usr/bin/true, for a helper whose steps are the point.</summary>
    public static string TrueProgram => File.Exists("/bin/true") ? "/bin/true" : "/usr/bin/true";
}
