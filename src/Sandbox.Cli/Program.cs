using System.Collections.Immutable;
using Sandbox.Cli.CommandLine;

namespace Sandbox.Cli;

internal static class Program
{
    public static int Main(string[] args)
    {
        // Before anything opens a descriptor: a closed stdin, stdout or stderr becomes /dev/null,
        // never a descriptor of ours that the payload or our messages would then be given.
        StandardDescriptors.Claim();
        Runtime.ParentWatch.ExitWithParentIfAsked();
        // The NativeAOT build defers the runtime's finalizer thread (Sandbox.Core's
        // Native/runtime_host_probes.c says why): `run` starts it once its sandbox has run for a
        // second (Dispatch), every other command, the hidden ones too, at once.
        if (args.Length == 0 || args[0] != "run")
            Runtime.FinalizerThread.StartIfDeferred();
        // The runtime's own hidden commands, run when it re-executes this program in a helper sandbox.
        if (HelperCommands.TryRun(args, out int helperExit))
            return helperExit;
        try
        {
            return Dispatch(args);
        }
        catch (SandboxException e)
        {
            // A bad command line found before any renderer exists (an unknown flag). Asked for JSON
            // events (the MSBuild task), it is an error event with its code, as any later failure is.
            if (AsksForJsonEvents(args))
            {
                using var json = new JsonLinesRenderer();
                json.RenderFailure(e);
            }
            else
            {
                StandardDescriptors.TellError($"sandbox: {e.Message}");
            }
            return e.ExitCode;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // The last resort: one line and exit 125, as for any failure of the tool, not the
            // runtime's stack trace and abort (134). Reaching here is a bug.
            StandardDescriptors.TellError($"sandbox: internal error: {e.GetType().Name}: {e.Message} (a bug in sandbox: please report it with the command line)");
            return ExitCodes.SandboxFailed;
        }
    }

    private static int Dispatch(string[] args)
    {
        // `run` and `test` stop parsing their own options at the payload's words (docker's rule), so
        // split first: a -h among the payload's words (`sandbox run df -h`) is the payload's.
        if (args.Length > 0 && args[0] == "run")
        {
            // The warm-start path: `run` is parsed on its own, without building the other commands.
            var run = new RunCommand();
            var (own, command) = run.Split(args[1..], out bool help);
            if (help)
                return CreateRoot().Parse(["run", "--help"]).Invoke();
            ParseResult parse = run.Parse(own);
            if (parse.Errors.Count > 0)
                return parse.Invoke();
            int exitCode = WithRenderer("run", run.EventsFormat, run.Stats, parse, renderer =>
            {
                SandboxSpec spec = FromCommandLine("run", () => run.BuildSpec(parse, command));
                string? kept = null;
                // The teardown child is made while the sandbox starts, when this thread would only
                // wait, not at the end of the run, where its clone would delay the exit.
                int code = ExecuteForResult(spec, renderer, started: e =>
                {
                    kept = (e.Root as ImageRoot)?.KeptChanges;
                    Runtime.ProcessTeardown.HandOff();
                    // A run that ends within a second makes no garbage that needs finalizing.
                    e.WhenRunningFor(TimeSpan.FromSeconds(1), () => Runtime.FinalizerThread.StartIfDeferred());
                }).ExitCode;
                if (kept is not null)
                    renderer.Note($"the root's changes are kept in {kept}");
                return code;
            });
            return exitCode;
        }
        if (args.Length > 0 && args[0] == "test")
        {
            var test = new TestCommand();
            var (own, testArgs) = test.Split(args[1..], out bool help);
            if (help)
                return CreateRoot().Parse(["test", "--help"]).Invoke();
            ParseResult parse = test.Parse(own);
            if (parse.Errors.Count > 0)
                return parse.Invoke();
            return WithRenderer("test", test.EventsFormat, test.Stats, parse, renderer => test.Run(parse, testArgs, renderer));
        }
        // Help, the version, a bad command line (exit 125) or the command's action.
        return CreateRoot().Parse(args).Invoke();
    }

    private static RootCommand CreateRoot() =>
        new("Sandbox: run commands, above all `dotnet test`, in rootless Linux sandboxes.")
        {
            new RunCommand(),
            new TestCommand(),
            new ImageCommand(),
            new CheckCommand(),
        };

    /// <summary>
    /// Builds what the command line asks for; a value it cannot use (<c>--network bogus</c>,
    /// <c>--memory abc</c>) is a command-line error, which ends with the line the parser's own errors
    /// end with (CommandLine/Parser.cs), as docker's do.
    /// </summary>
    internal static T FromCommandLine<T>(string command, Func<T> build)
    {
        try
        {
            return build();
        }
        catch (SandboxException e) when (e.Code == SandboxErrorCode.InvalidSpec)
        {
            throw new SandboxException(e.Code, $"{e.Message}\nSee 'sandbox {command} --help'.", e);
        }
    }

    private static int WithRenderer(string command, Func<ParseResult, string> format, Func<ParseResult, bool> stats, ParseResult parse, Func<IEventRenderer, int> body)
    {
        IEventRenderer renderer;
        try
        {
            renderer = FromCommandLine(command, () => format(parse) == "json" ? (IEventRenderer)new JsonLinesRenderer() : new ConsoleRenderer(stats(parse)));
        }
        catch (SandboxException e)
        {
            StandardDescriptors.TellError($"sandbox: {e.Message}");
            return e.ExitCode;
        }
        using (renderer)
        {
            try
            {
                return body(renderer);
            }
            catch (SandboxException e)
            {
                renderer.RenderFailure(e);
                return e.ExitCode;
            }
            catch (IOException e) when (e.HResult == 32 /* EPIPE, DescriptorWriteStream */)
            {
                // The reader of our output went away (`sandbox run --events json … | head`): the
                // sandbox is ended (the execution's disposal kills it), as a pipeline's writer would end.
                var failure = new SandboxException(SandboxErrorCode.OutputLost, "the reader of the output went away (EPIPE): the command was stopped", e);
                renderer.RenderFailure(failure);
                return failure.ExitCode;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or Linux.LinuxException)
            {
                // A file the run needed (the image store, a --keep directory, a bind source) could not
                // be used: say which, with exit 125 as for any sandbox failure, not a stack trace.
                var failure = new SandboxException(SandboxErrorCode.SetupFailed, WorkingDirectoryGone()
                    ? $"the working directory was removed ({e.Message}): cd to a directory that exists"
                    : $"{e.Message} (check the path and its permissions)", e);
                renderer.RenderFailure(failure);
                return failure.ExitCode;
            }
        }
    }

    private static bool AsksForJsonEvents(string[] args)
    {
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--")
                return false;
            if (args[i] == "--events=json" || (args[i] == "--events" && i + 1 < args.Length && args[i + 1] == "json"))
                return true;
        }
        return false;
    }

    /// <summary>Whether this process's working directory no longer exists (getcwd(2) fails): a relative path then fails with .NET's bare "Unable to find the specified file".</summary>
    private static bool WorkingDirectoryGone()
    {
        try
        {
            return !Directory.Exists(Directory.GetCurrentDirectory());
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return true;
        }
    }

    /// <summary>Runs one sandbox to the end, rendering its events; returns the exit code a CLI should give.</summary>
    public static int Execute(SandboxSpec spec, IEventRenderer renderer, Action<SandboxEvent>? observe = null) =>
        ExecuteForResult(spec, renderer, observe).ExitCode;

    public static (int ExitCode, SandboxResult? Result) ExecuteForResult(SandboxSpec spec, IEventRenderer renderer, Action<SandboxEvent>? observe = null,
        Action<SandboxExecution>? started = null)
    {
        // The console shows the payload's bytes as they are: they go straight from its pipes to ours.
        using SandboxExecution execution = observe is null && renderer.DirectOutput is DirectOutput direct
            ? SandboxRunner.Start(spec, direct)
            : SandboxRunner.Start(spec);
        // Signals to us go to the payload (docker's --sig-proxy): it decides how to end. Forwarded
        // from the first thing once it runs, before `started`: until then a SIGTERM ends this
        // process by default (and the sandbox with it, as its parent's death kills it). SIGHUP,
        // SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGTERM; their actions come back at the run's end.
        execution.ForwardSignals(1, 2, 3, 10, 12, 15);
        started?.Invoke(execution);
        var outcome = Consume(execution, renderer, observe);
        // This process exits soon after: the kernel's teardown of the sandbox's namespaces need
        // not hold up our exit (init reaps PID 1); bubblewrap's parent does not wait for it either.
        execution.LeavePidOneToInit();
        return outcome;
    }

    // Blocking, on the main thread: a run needs no thread pool.
    private static (int, SandboxResult?) Consume(SandboxExecution execution, IEventRenderer renderer, Action<SandboxEvent>? observe)
    {
        int exitCode = ExitCodes.SandboxFailed;
        SandboxResult? result = null;
        foreach (SandboxEvent e in execution.ReadEvents())
        {
            observe?.Invoke(e);
            renderer.Render(e);
            if (e is ExitedEvent exited)
            {
                result = exited.Result;
                exitCode = exited.Result.ExitCode;
            }
        }
        return (exitCode, result);
    }
}
