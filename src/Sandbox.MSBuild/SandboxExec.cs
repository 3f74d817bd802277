using System.Buffers;
using System.ComponentModel;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Runtime.InteropServices;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

namespace Sandbox.MSBuild;

/// <summary>
/// Runs <c>sandbox test</c> or <c>sandbox run</c> as a child process with <c>--events json</c> and
/// logs its event stream live (see <see cref="EventTranslator"/>). The sandbox runtime is never
/// loaded into MSBuild's process: MSBuild nodes are long-lived and share their assembly load
/// contexts, and a sandbox needs a process of its own anyway (signals, die-with-parent).
/// <para>
/// The command line is <c>CLI Command --events json [--timeout T] [--memory M] [--cpus C]
/// [--pids-limit N] [--network none|host] [--image I] [--workspace W] [-e NAME=VALUE]... [Options...]
/// Arguments... [-- PayloadArguments...]</c>; each sandbox option only when its parameter is set.
/// </para>
/// <para>
/// Cancelling the build (Ctrl+C) sends SIGTERM to the CLI, which forwards it into the sandbox, whose
/// PID 1 ends everything; after <see cref="CancelGracePeriod"/> milliseconds the CLI and its
/// descendants get SIGKILL (a SIGKILLed CLI takes its sandbox with it: die-with-parent).
/// </para>
/// </summary>
public sealed class SandboxExec : Microsoft.Build.Utilities.Task, ICancelableTask
{
    /// <summary>Asks the CLI to exit when its parent (this node) does; the CLI reads the same name (Sandbox.Core's ParentWatch).</summary>
    internal const string ExitWithParentVariable = "SANDBOX_EXIT_WITH_PARENT";

    private const int SIGTERM = 15;

    private readonly object _gate = new();
    private Process? _process;
    private bool _cancelled;
    private Timer? _killTimer;

    /// <summary>The CLI's command: <c>test</c> or <c>run</c>.</summary>
    [Required]
    public string Command { get; set; } = "";

    /// <summary>Arguments after the sandbox options, one per item, verbatim: for <c>test</c> the project or solution; for <c>run</c> the command and its arguments (or use <see cref="PayloadArguments"/>).</summary>
    public ITaskItem[] Arguments { get; set; } = [];

    /// <summary>A command line, split as a shell splits words (quotes, no expansion), passed after <c>--</c>: for <c>test</c> to <c>dotnet test</c>, for <c>run</c> the command.</summary>
    public string? PayloadArguments { get; set; }

    /// <summary>More CLI options, split as a shell splits words, e.g. <c>-v /data:/data:ro --limits best-effort</c>.</summary>
    public string? Options { get; set; }

    /// <summary>The CLI: a <c>.dll</c> (run with the <c>dotnet</c> that runs MSBuild) or an executable. Default: the one in this package (<see cref="DefaultCliPath"/>).</summary>
    public string? CliPath { get; set; }

    /// <summary><c>--timeout</c>, e.g. <c>10m</c>: kill the whole sandbox after this long.</summary>
    public string? Timeout { get; set; }

    /// <summary><c>--memory</c>, e.g. <c>2g</c>.</summary>
    public string? Memory { get; set; }

    /// <summary><c>--cpus</c>, e.g. <c>1.5</c>.</summary>
    public string? Cpus { get; set; }

    /// <summary><c>--pids-limit</c>.</summary>
    public string? PidsLimit { get; set; }

    /// <summary><c>--network</c>: <c>none</c> (the CLI's default) or <c>host</c>.</summary>
    public string? Network { get; set; }

    /// <summary><c>--image</c>: run in an image instead of the host's file system (when the CLI supports it).</summary>
    public string? Image { get; set; }

    /// <summary><c>--workspace</c> (<c>test</c> only): the directory bound read-write.</summary>
    public string? Workspace { get; set; }

    /// <summary>Variables set inside the sandbox: <c>NAME=VALUE</c>, or <c>NAME</c> to pass this build's value (the CLI's <c>-e</c>).</summary>
    public string[] SandboxEnvironment { get; set; } = [];

    /// <summary>Variables for the CLI process itself, <c>NAME=VALUE</c> (as ToolTask's): e.g. <c>NUGET_PACKAGES</c>. They do not reach the sandbox; see <see cref="SandboxEnvironment"/>.</summary>
    public string[] EnvironmentVariables { get; set; } = [];

    /// <summary>The CLI's working directory (default: MSBuild's current directory). For <c>test</c> it is also the directory inside, when within the workspace.</summary>
    public string? WorkingDirectory { get; set; }

    /// <summary>Milliseconds between SIGTERM and SIGKILL when the build is cancelled.</summary>
    public int CancelGracePeriod { get; set; } = 5000;

    /// <summary>The CLI's exit code: the command's (<c>dotnet test</c>: 0 passed, 1 failures), or 124 timeout, 125 the sandbox failed, 128+N signal N.</summary>
    [Output]
    public int ExitCode { get; private set; } = -1;

    /// <summary>From the <c>summary</c> event of <c>sandbox test</c> (-1 when no test summary was seen).</summary>
    [Output]
    public int TestsPassed { get; private set; } = -1;

    [Output]
    public int TestsFailed { get; private set; } = -1;

    [Output]
    public int TestsSkipped { get; private set; } = -1;

    public override bool Execute()
    {
        if (Command is not ("test" or "run"))
        {
            Log.LogError(null, EventTranslator.CliNotStartedCode, null, null, 0, 0, 0, 0, "SandboxExec: Command must be test or run, not '{0}'", Command);
            return false;
        }
        ProcessStartInfo startInfo;
        try
        {
            startInfo = BuildStartInfo();
        }
        catch (Exception e) when (e is FormatException or ArgumentException or IOException)
        {
            Log.LogError(null, EventTranslator.CliNotStartedCode, null, null, 0, 0, 0, 0, "SandboxExec: {0}", e.Message);
            return false;
        }
        Log.LogMessage(MessageImportance.Normal, "sandbox: {0} {1}", startInfo.FileName, string.Join(" ", startInfo.ArgumentList.Select(Quote)));

        var translator = new EventTranslator(Log, Command);
        using var process = new Process { StartInfo = startInfo };
        lock (_gate)
        {
            if (_cancelled)
                return false;
            try
            {
                process.Start();
            }
            catch (Exception e) when (e is Win32Exception or InvalidOperationException)
            {
                // An executable CLI (the package's NativeAOT build) may not run where the package was
                // unpacked (no execute permission, another architecture); the package's sandbox.dll
                // runs with the dotnet that runs the build.
                string fix = startInfo.FileName == DotnetHost()
                    ? ""
                    : " (to run the framework-dependent CLI with dotnet instead, set SandboxCliPath to its sandbox.dll: in this package, tools/sandbox/sandbox.dll)";
                Log.LogError(null, EventTranslator.CliNotStartedCode, null, null, 0, 0, 0, 0,
                    "could not start the sandbox CLI {0}: {1}{2}", startInfo.FileName, e.Message, fix);
                return false;
            }
            _process = process;
        }
        try
        {
            // No stdin for the sandbox: an empty pipe (not the build's terminal).
            process.StandardInput.Close();
            System.Threading.Tasks.Task events = PumpLinesAsync(process.StandardOutput.BaseStream, translator.HandleEventLine);
            System.Threading.Tasks.Task errors = PumpLinesAsync(process.StandardError.BaseStream,
                line => translator.HandleCliStderrLine(System.Text.Encoding.UTF8.GetString(line)));
            try
            {
                System.Threading.Tasks.Task.WaitAll(events, errors);
            }
            catch (AggregateException e)
            {
                // Not a failure of the tests: of reading them. Say so, and leave nothing running.
                Log.LogError(null, EventTranslator.ProtocolCode, null, null, 0, 0, 0, 0,
                    "reading the sandbox CLI's output failed: {0}", e.InnerException?.Message ?? e.Message);
                KillNow(process);
            }
            process.WaitForExit();
            ExitCode = process.ExitCode;
        }
        finally
        {
            lock (_gate)
            {
                _process = null;
                _killTimer?.Dispose();
                _killTimer = null;
            }
        }

        bool cancelled;
        lock (_gate)
            cancelled = _cancelled;
        translator.Complete(ExitCode, cancelled);
        TestsPassed = translator.Passed ?? -1;
        TestsFailed = translator.Failed ?? -1;
        TestsSkipped = translator.Skipped ?? -1;
        return !Log.HasLoggedErrors && !cancelled;
    }

    /// <summary>MSBuild calls this on another thread when the build is cancelled.</summary>
    public void Cancel()
    {
        lock (_gate)
        {
            if (_cancelled)
                return;
            _cancelled = true;
            if (_process is not Process process)
                return;
            try
            {
                if (kill(process.Id, SIGTERM) != 0)
                    return; // already gone
            }
            catch (Exception e) when (e is InvalidOperationException or DllNotFoundException or EntryPointNotFoundException)
            {
                KillNow(process);
                return;
            }
            _killTimer = new Timer(_ =>
            {
                lock (_gate)
                {
                    if (_process is Process p)
                        KillNow(p);
                }
            }, null, Math.Max(0, CancelGracePeriod), System.Threading.Timeout.Infinite);
        }
    }

    private static void KillNow(Process process)
    {
        try
        {
            process.Kill(entireProcessTree: true);
        }
        catch (Exception e) when (e is InvalidOperationException or Win32Exception or NotSupportedException)
        {
        }
    }

    /// <summary>The CLI's command line and environment (pure, for tests).</summary>
    internal ProcessStartInfo BuildStartInfo()
    {
        string cli = string.IsNullOrEmpty(CliPath) ? DefaultCliPath() : Path.GetFullPath(CliPath);
        if (!File.Exists(cli))
            throw new FileNotFoundException($"the sandbox CLI {cli} does not exist (set SandboxCliPath / CliPath, or reference the Sandbox.MSBuild package that ships it)");

        var psi = new ProcessStartInfo
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            CreateNoWindow = true,
        };
        if (cli.EndsWith(".dll", StringComparison.OrdinalIgnoreCase))
        {
            psi.FileName = DotnetHost();
            psi.ArgumentList.Add(cli);
        }
        else
        {
            psi.FileName = cli;
        }
        foreach (string argument in CommandLine())
            psi.ArgumentList.Add(argument);
        // The CLI ends itself, and so its sandbox (die-with-parent), when this build node goes away:
        // MSBuild calls Cancel on Ctrl-C only, and a SIGTERM, a SIGKILL or a crashed node left the CLI
        // and the tests running, writing into the workspace (ParentWatch.ExitWithParentIfAsked in Sandbox.Core).
        psi.Environment[ExitWithParentVariable] = "1";
        if (!string.IsNullOrEmpty(WorkingDirectory))
            psi.WorkingDirectory = Path.GetFullPath(WorkingDirectory);
        foreach (string variable in EnvironmentVariables)
        {
            int eq = variable.IndexOf('=');
            if (eq <= 0)
                throw new ArgumentException($"EnvironmentVariables: '{variable}' is not NAME=VALUE");
            psi.Environment[variable[..eq]] = variable[(eq + 1)..];
        }
        return psi;
    }

    /// <summary>The CLI's arguments (after the dll, when it runs through dotnet).</summary>
    internal List<string> CommandLine()
    {
        var args = new List<string> { Command, "--events", "json" };
        void Flag(string name, string? value)
        {
            if (!string.IsNullOrWhiteSpace(value))
            {
                args.Add(name);
                args.Add(value.Trim());
            }
        }
        Flag("--timeout", Timeout);
        Flag("--memory", Memory);
        Flag("--cpus", Cpus);
        Flag("--pids-limit", PidsLimit);
        Flag("--network", Network);
        Flag("--image", Image);
        if (Command == "test")
            Flag("--workspace", Workspace);
        foreach (string variable in SandboxEnvironment)
            Flag("--env", variable);
        args.AddRange(ArgumentSplitter.Split(Options));
        args.AddRange(Arguments.Select(a => a.ItemSpec));
        List<string> payload = ArgumentSplitter.Split(PayloadArguments);
        if (payload.Count > 0)
        {
            args.Add("--");
            args.AddRange(payload);
        }
        return args;
    }

    /// <summary>
    /// The package's CLI (this assembly is tasks/net10.0/Sandbox.MSBuild.dll): tools/sandbox/sandbox,
    /// the NativeAOT build, when the package has it, else tools/sandbox/sandbox.dll. What the task
    /// runs when SandboxCliPath is not set.
    /// </summary>
    internal static string DefaultCliPath() =>
        PackagedCliPath(Path.GetDirectoryName(typeof(SandboxExec).Assembly.Location) ?? AppContext.BaseDirectory);

    /// <summary>The CLI of the package whose tasks/net10.0 is <paramref name="taskDirectory"/>.</summary>
    internal static string PackagedCliPath(string taskDirectory)
    {
        string tools = Path.GetFullPath(Path.Combine(taskDirectory, "..", "..", "tools", "sandbox"));
        string nativeAot = Path.Combine(tools, "sandbox");
        return File.Exists(nativeAot) ? nativeAot : Path.Combine(tools, "sandbox.dll");
    }

    /// <summary>The dotnet that runs this build (the SDK sets DOTNET_HOST_PATH for tasks), else the one on PATH.</summary>
    private static string DotnetHost() =>
        Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host : "dotnet";

    /// <summary>Reads <paramref name="stream"/> with a PipeReader and hands each line (without its newline) over as it arrives.</summary>
    internal static async System.Threading.Tasks.Task PumpLinesAsync(Stream stream, LineHandler onLine)
    {
        PipeReader reader = PipeReader.Create(stream, new StreamPipeReaderOptions(bufferSize: 64 * 1024));
        try
        {
            while (true)
            {
                ReadResult result = await reader.ReadAsync().ConfigureAwait(false);
                ReadOnlySequence<byte> buffer = result.Buffer;
                while (buffer.PositionOf((byte)'\n') is SequencePosition newline)
                {
                    Deliver(buffer.Slice(0, newline), onLine);
                    buffer = buffer.Slice(buffer.GetPosition(1, newline));
                }
                if (result.IsCompleted)
                {
                    if (!buffer.IsEmpty)
                        Deliver(buffer, onLine);
                    reader.AdvanceTo(buffer.End);
                    break;
                }
                reader.AdvanceTo(buffer.Start, buffer.End);
            }
        }
        finally
        {
            await reader.CompleteAsync().ConfigureAwait(false);
        }
    }

    internal delegate void LineHandler(ReadOnlySpan<byte> line);

    private static void Deliver(ReadOnlySequence<byte> line, LineHandler onLine)
    {
        if (line.IsSingleSegment)
        {
            onLine(line.FirstSpan);
            return;
        }
        byte[] rented = ArrayPool<byte>.Shared.Rent(checked((int)line.Length));
        try
        {
            line.CopyTo(rented);
            onLine(rented.AsSpan(0, (int)line.Length));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    private static string Quote(string argument) =>
        argument.Length > 0 && argument.All(c => char.IsLetterOrDigit(c) || c is '-' or '_' or '.' or '/' or '=' or ':' or ',' or '+')
            ? argument
            : "'" + argument.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int signal);
}
